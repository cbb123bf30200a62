//! What the history commands print, from the kept versions alone: the
//! list (`winston status --history`), the choice of two versions and their
//! unified diff (`winston workspace diff`). Pure: no IO, unit-tested.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use similar::TextDiff;

use crate::ledger::snapshots::Snapshot;

/// Hex digits of a hash shown (and the least a hash-prefix selector needs).
pub const SHORT_HASH: usize = 12;
/// The shortest hash prefix accepted as a selector: shorter digit strings
/// are indexes.
pub const MIN_PREFIX: usize = 6;
/// Changed paths named in a list row before the rest is counted.
const NAMED_CHANGES: usize = 3;

/// How one file differs between two versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Added,
    Removed,
    Modified,
}

impl Change {
    fn sign(self) -> char {
        match self {
            Self::Added => '+',
            Self::Removed => '-',
            Self::Modified => '~',
        }
    }
}

/// The files that differ from `old` to `new`, by path.
#[must_use]
pub fn changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<(String, Change)> {
    let mut out: Vec<(String, Change)> = new
        .iter()
        .filter_map(|(path, content)| match old.get(path) {
            None => Some((path.clone(), Change::Added)),
            Some(before) if before != content => Some((path.clone(), Change::Modified)),
            Some(_) => None,
        })
        .collect();
    out.extend(old.keys().filter(|p| !new.contains_key(*p)).map(|p| (p.clone(), Change::Removed)));
    out.sort();
    out
}

/// The hash without its `sha256:` prefix, cut to [`SHORT_HASH`] digits.
#[must_use]
pub fn short(hash: &str) -> &str {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    &hex[..SHORT_HASH.min(hex.len())]
}

/// The list of `versions` (oldest first), numbered from 1, each with the
/// files changed since the one before it.
#[must_use]
pub fn list(title: &str, versions: &[Snapshot]) -> String {
    let mut out = format!("Configuration history of {title}: {} version(s) kept, oldest first\n", versions.len());
    let _ = writeln!(out, "{:>3}  {:>10}  {:<20}  {:<SHORT_HASH$}  CHANGES", "#", "GENERATION", "RECORDED", "HASH");
    for (i, v) in versions.iter().enumerate() {
        let what = match i.checked_sub(1).and_then(|p| versions.get(p)) {
            None => format!("{} files (oldest kept)", v.files.len()),
            Some(prev) => summary(&changes(&prev.files, &v.files)),
        };
        let _ = writeln!(
            out,
            "{:>3}  {:>10}  {:<20}  {:<SHORT_HASH$}  {what}",
            i + 1,
            v.generation,
            v.recorded_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            short(&v.workspace_hash),
        );
    }
    out
}

fn summary(changes: &[(String, Change)]) -> String {
    if changes.is_empty() {
        // Same files, a different hash: cannot happen with one hash function;
        // said rather than hidden should it ever.
        return "no file changed".into();
    }
    let mut named: Vec<String> = changes.iter().take(NAMED_CHANGES).map(|(p, c)| format!("{}{p}", c.sign())).collect();
    if changes.len() > NAMED_CHANGES {
        named.push(format!("and {} more", changes.len() - NAMED_CHANGES));
    }
    named.join(", ")
}

/// Why a selector picks no version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("failed to compare versions: only {0} version(s) kept")]
    TooFew(usize),
    #[error(
        "failed to find version {selector:?}: give an index from 1 to {kept} or a hash prefix of at least {MIN_PREFIX} hex digits"
    )]
    NoSuch { selector: String, kept: usize },
    #[error("failed to choose version {0:?}: the prefix matches different hashes, give more digits")]
    Ambiguous(String),
}

/// The positions (in `versions`, oldest first) of the two versions to
/// compare: `from` and `to` as indexes (1 = oldest kept) or hash prefixes;
/// by default the last two, and `to` defaults to the newest.
///
/// # Errors
/// Fewer than two versions when both are defaulted, or a selector that
/// matches none (or several different hashes).
pub fn pick(versions: &[Snapshot], from: Option<&str>, to: Option<&str>) -> Result<(usize, usize), SelectError> {
    let n = versions.len();
    let to = match to {
        Some(s) => select(versions, s)?,
        None => n.checked_sub(1).ok_or(SelectError::TooFew(n))?,
    };
    let from = match from {
        Some(s) => select(versions, s)?,
        None if n >= 2 => n - 2,
        None => return Err(SelectError::TooFew(n)),
    };
    Ok((from, to))
}

fn select(versions: &[Snapshot], selector: &str) -> Result<usize, SelectError> {
    let no_such = || SelectError::NoSuch { selector: selector.to_string(), kept: versions.len() };
    let s = selector.trim();
    let is_index = !s.is_empty() && s.len() < MIN_PREFIX && s.bytes().all(|b| b.is_ascii_digit());
    if is_index {
        let i: usize = s.parse().map_err(|_| no_such())?;
        return i.checked_sub(1).filter(|&i| i < versions.len()).ok_or_else(no_such);
    }
    let prefix = s.strip_prefix("sha256:").unwrap_or(s).to_ascii_lowercase();
    if prefix.len() < MIN_PREFIX || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(no_such());
    }
    let hits: Vec<usize> = (0..versions.len())
        .filter(|&i| {
            versions[i]
                .workspace_hash
                .strip_prefix("sha256:")
                .unwrap_or(&versions[i].workspace_hash)
                .starts_with(&prefix)
        })
        .collect();
    // A version returned to (A, B, A) matches twice with one hash: the newest is meant.
    match hits.as_slice() {
        [] => Err(no_such()),
        [.., last] if hits.iter().all(|&i| versions[i].workspace_hash == versions[*last].workspace_hash) => Ok(*last),
        _ => Err(SelectError::Ambiguous(selector.to_string())),
    }
}

/// A unified diff (3 lines of context) of every file that differs from
/// `versions[from]` to `versions[to]`, headed by the two versions.
#[must_use]
pub fn diff(versions: &[Snapshot], from: usize, to: usize) -> String {
    let (a, b) = (&versions[from], &versions[to]);
    let label = |i: usize, v: &Snapshot| {
        format!("version {} (generation {}, {})", i + 1, v.generation, short(&v.workspace_hash))
    };
    let mut out = format!("# {} -> {}\n", label(from, a), label(to, b));
    let changed = changes(&a.files, &b.files);
    if changed.is_empty() {
        out.push_str("# no file differs\n");
    }
    for (path, change) in changed {
        let old = a.files.get(&path).map_or("", String::as_str);
        let new = b.files.get(&path).map_or("", String::as_str);
        let (old_name, new_name) = match change {
            Change::Added => ("/dev/null".to_string(), format!("b/{path}")),
            Change::Removed => (format!("a/{path}"), "/dev/null".to_string()),
            Change::Modified => (format!("a/{path}"), format!("b/{path}")),
        };
        let text = TextDiff::from_lines(old, new);
        let _ = write!(out, "{}", text.unified_diff().context_radius(3).header(&old_name, &new_name));
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn version(id: i64, hash: &str, files: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            id,
            instance_uid: "uid-1".into(),
            instance: "acme-0".into(),
            generation: id,
            workspace_hash: format!("sha256:{hash}"),
            recorded_at: chrono::Utc.with_ymd_and_hms(2026, 12, 2, 17, 0, id as u32).unwrap(),
            files: files.iter().map(|(p, c)| ((*p).to_string(), (*c).to_string())).collect(),
        }
    }

    fn three() -> Vec<Snapshot> {
        vec![
            version(1, "aaaaaa0000000000", &[("SOUL.md", "one\ntwo\n"), ("USER.md", "u\n")]),
            version(
                2,
                "bbbbbb0000000000",
                &[("SOUL.md", "one\nTWO\n"), ("USER.md", "u\n"), ("skills/x/SKILL.md", "x\n")],
            ),
            version(3, "aaaaaa1111111111", &[("SOUL.md", "one\nTWO\n"), ("skills/x/SKILL.md", "x\n")]),
        ]
    }

    #[test]
    fn changes_name_added_removed_and_modified_files_only() {
        let v = three();
        assert_eq!(
            changes(&v[0].files, &v[1].files),
            [("SOUL.md".to_string(), Change::Modified), ("skills/x/SKILL.md".to_string(), Change::Added)]
        );
        assert_eq!(changes(&v[1].files, &v[2].files), [("USER.md".to_string(), Change::Removed)]);
        assert!(changes(&v[2].files, &v[2].files).is_empty());
    }

    #[test]
    fn the_list_numbers_versions_and_says_what_changed() {
        let out = list("acme-0", &three());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[2].contains("  1  ") && lines[2].contains("2 files (oldest kept)"), "{out}");
        assert!(lines[3].contains("bbbbbb000000") && lines[3].ends_with("~SOUL.md, +skills/x/SKILL.md"), "{out}");
        assert!(lines[4].ends_with("-USER.md"), "{out}");
        assert!(lines[4].contains("2026-12-02 17:00:03Z"), "{out}");
    }

    #[test]
    fn many_changes_are_counted_beyond_the_first_three() {
        let paths = ["a", "b", "c", "d", "e"];
        let old = version(1, "000000", &[]);
        let new = version(2, "111111", &paths.map(|p| (p, "x")));
        let out = list("t", &[old, new]);
        assert!(out.lines().last().unwrap().ends_with("+a, +b, +c, and 2 more"), "{out}");
    }

    #[test]
    fn versions_are_picked_by_default_index_or_hash_prefix() {
        let v = three();
        assert_eq!(pick(&v, None, None), Ok((1, 2)));
        assert_eq!(pick(&v, Some("1"), None), Ok((0, 2)));
        assert_eq!(pick(&v, Some("3"), Some("1")), Ok((2, 0)));
        assert_eq!(pick(&v, Some("bbbbbb"), None), Ok((1, 2)));
        assert_eq!(pick(&v, Some("sha256:BBBBBB0"), Some("2")), Ok((1, 1)));
        assert_eq!(pick(&v, Some("aaaaaa1"), Some("aaaaaa0")), Ok((2, 0)));
    }

    #[test]
    fn selectors_that_match_nothing_or_several_hashes_are_refused() {
        let v = three();
        for bad in ["0", "4", "", "-1", "bbb", "zzzzzz", "cccccc", "1.5"] {
            assert!(matches!(pick(&v, Some(bad), None), Err(SelectError::NoSuch { .. })), "{bad:?}");
        }
        assert_eq!(pick(&v, Some("aaaaa"), None), Err(SelectError::NoSuch { selector: "aaaaa".into(), kept: 3 }));
        assert_eq!(pick(&v, Some("aaaaaa"), None), Err(SelectError::Ambiguous("aaaaaa".into())));
        assert_eq!(pick(&v[..1], None, None), Err(SelectError::TooFew(1)));
        assert_eq!(pick(&[], None, None), Err(SelectError::TooFew(0)));
    }

    #[test]
    fn a_hash_kept_twice_selects_its_newest_version() {
        let v = vec![version(1, "abcdef01", &[]), version(2, "12345678", &[]), version(3, "abcdef01", &[])];
        assert_eq!(pick(&v, Some("abcdef"), Some("1")), Ok((2, 0)));
    }

    #[test]
    fn the_diff_shows_the_changed_lines_of_each_changed_file() {
        let v = three();
        let out = diff(&v, 0, 2);
        assert!(
            out.starts_with("# version 1 (generation 1, aaaaaa000000) -> version 3 (generation 3, aaaaaa111111)\n")
        );
        assert!(out.contains("--- a/SOUL.md\n+++ b/SOUL.md\n@@ -1,2 +1,2 @@\n one\n-two\n+TWO\n"), "{out}");
        assert!(out.contains("--- /dev/null\n+++ b/skills/x/SKILL.md\n@@ -0,0 +1 @@\n+x\n"), "{out}");
        assert!(out.contains("--- a/USER.md\n+++ /dev/null\n@@ -1 +0,0 @@\n-u\n"), "{out}");
        assert_eq!(
            diff(&v, 1, 1),
            "# version 2 (generation 2, bbbbbb000000) -> version 2 (generation 2, bbbbbb000000)\n# no file differs\n"
        );
    }
}
