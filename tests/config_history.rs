//! The configuration history's rows against a real PostgreSQL: one row per
//! new version, none for a repeat, the bound kept in the inserting
//! transaction, racing recorders never duplicating, teardown forgetting,
//! and the two commands (`winston status --history`, `winston workspace
//! diff`) reading it back.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod ledger_support;

use std::collections::BTreeMap;
use std::process::Command;

use ledger_support::fresh_db;
use winston::ledger::Ledger;
use winston::ledger::snapshots::{NewSnapshot, Recorded};

fn files(soul: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("SOUL.md".to_string(), format!("# Soul\n\nline one\n{soul}\nline three\n")),
        ("AGENTS.md".to_string(), "# Operating rules\n".to_string()),
    ])
}

/// Records `files` as version `hash` of instance `uid` (`acme-0` in `ns`).
async fn record(ledger: &Ledger, uid: &str, hash: &str, files: &BTreeMap<String, String>, keep: u32) -> Recorded {
    let s = NewSnapshot {
        instance_uid: uid,
        namespace: "ns",
        instance: "acme-0",
        tenant: "acme",
        ordinal: 0,
        generation: 7,
        workspace_hash: hash,
        files,
    };
    ledger.record_snapshot(&s, keep).await.unwrap()
}

async fn rows(ledger: &Ledger, uid: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT workspace_hash FROM config_snapshots WHERE instance_uid = $1 ORDER BY id")
        .bind(uid)
        .fetch_all(ledger.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_version_is_one_row_and_a_repeat_none() {
    let db = fresh_db().await;
    assert_eq!(record(&db.ledger, "u1", "sha256:a", &files("a"), 20).await, Recorded::Inserted { pruned: 0 });
    for _ in 0..3 {
        assert_eq!(record(&db.ledger, "u1", "sha256:a", &files("a"), 20).await, Recorded::Unchanged);
    }
    assert_eq!(rows(&db.ledger, "u1").await, ["sha256:a"]);
    // A return to an earlier version is a new version, not a repeat.
    record(&db.ledger, "u1", "sha256:b", &files("b"), 20).await;
    record(&db.ledger, "u1", "sha256:a", &files("a"), 20).await;
    assert_eq!(rows(&db.ledger, "u1").await, ["sha256:a", "sha256:b", "sha256:a"]);
    let kept = db.ledger.snapshots("ns", "acme", 0).await.unwrap();
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[1].files, files("b"), "the content comes back byte for byte");
    assert_eq!((kept[0].generation, kept[0].instance.as_str()), (7, "acme-0"));
}

#[tokio::test]
async fn the_bound_holds_and_the_newest_versions_are_the_ones_kept() {
    let db = fresh_db().await;
    let mut pruned = 0;
    for i in 0..7 {
        if let Recorded::Inserted { pruned: p } = record(&db.ledger, "u1", &format!("h{i}"), &files("x"), 3).await {
            pruned += p;
        }
        assert!(rows(&db.ledger, "u1").await.len() <= 3, "after version {i}");
    }
    assert_eq!(pruned, 4);
    assert_eq!(rows(&db.ledger, "u1").await, ["h4", "h5", "h6"]);
    // A bound of 0 is taken as 1: the running version is always kept.
    record(&db.ledger, "u1", "h7", &files("x"), 0).await;
    assert_eq!(rows(&db.ledger, "u1").await, ["h7"]);
    // Another instance's rows are not pruned by this one's bound.
    record(&db.ledger, "u2", "other", &files("x"), 1).await;
    record(&db.ledger, "u1", "h8", &files("x"), 1).await;
    assert_eq!(rows(&db.ledger, "u2").await, ["other"]);
}

/// Passes racing on one version (a retry after a crash between the platform
/// write and the record, a pass overlapping it) write it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_recorders_of_one_version_write_one_row() {
    let db = fresh_db().await;
    for round in 0..5 {
        let hash = format!("race-{round}");
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let (ledger, hash) = (db.ledger.clone(), hash.clone());
                tokio::spawn(async move { record(&ledger, "u1", &hash, &files("r"), 20).await })
            })
            .collect();
        let mut inserted = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Recorded::Inserted { .. }) {
                inserted += 1;
            }
        }
        assert_eq!(inserted, 1, "round {round}");
    }
    assert_eq!(rows(&db.ledger, "u1").await, ["race-0", "race-1", "race-2", "race-3", "race-4"]);
}

#[tokio::test]
async fn forgetting_an_instance_removes_its_rows_only() {
    let db = fresh_db().await;
    record(&db.ledger, "u1", "a", &files("a"), 20).await;
    record(&db.ledger, "u1", "b", &files("b"), 20).await;
    record(&db.ledger, "u2", "c", &files("c"), 20).await;
    assert_eq!(db.ledger.delete_snapshots("u1").await.unwrap(), 2);
    assert_eq!(db.ledger.delete_snapshots("u1").await.unwrap(), 0, "forgetting twice is a no-op");
    assert!(rows(&db.ledger, "u1").await.is_empty());
    assert_eq!(rows(&db.ledger, "u2").await, ["c"]);
}

/// An instance re-created under the same name (whose predecessor's rows
/// were not forgotten) shows its own history only.
#[tokio::test]
async fn a_recreated_instance_lists_its_own_versions() {
    let db = fresh_db().await;
    record(&db.ledger, "old", "a", &files("a"), 20).await;
    record(&db.ledger, "old", "b", &files("b"), 20).await;
    record(&db.ledger, "new", "c", &files("c"), 20).await;
    let kept = db.ledger.snapshots("ns", "acme", 0).await.unwrap();
    assert_eq!(kept.iter().map(|s| s.workspace_hash.as_str()).collect::<Vec<_>>(), ["c"]);
    assert!(db.ledger.snapshots("ns", "acme", 1).await.unwrap().is_empty());
    assert!(db.ledger.snapshots("other", "acme", 0).await.unwrap().is_empty());
}

/// Control characters a customer typed (NUL included, which jsonb refuses)
/// are kept and come back unchanged.
#[tokio::test]
async fn any_text_is_kept_exactly() {
    let db = fresh_db().await;
    let odd = files("nul \u{0} bell \u{7} line\u{2028}sep \"quoted\" \\ ```");
    record(&db.ledger, "u1", "odd", &odd, 20).await;
    assert_eq!(db.ledger.snapshots("ns", "acme", 0).await.unwrap()[0].files, odd);
}

fn winston(args: &[&str], url: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_winston"))
        .args(args)
        .env("WINSTON_DATABASE_URL", url)
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test]
async fn the_commands_list_the_versions_and_diff_two() {
    let db = fresh_db().await;
    record(&db.ledger, "u1", "sha256:1111111111111111", &files("first soul"), 20).await;
    let mut second = files("second soul");
    second.insert("skills/faq/SKILL.md".into(), "---\nname: faq\n---\n".into());
    record(&db.ledger, "u1", "sha256:2222222222222222", &second, 20).await;
    let mut third = second.clone();
    third.remove("AGENTS.md");
    record(&db.ledger, "u1", "sha256:3333333333333333", &third, 20).await;

    let (ok, out, err) = winston(&["status", "acme", "-n", "ns", "--history"], &db.url);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Configuration history of ns/acme-0: 3 version(s) kept"), "{out}");
    assert!(lines[2].contains("111111111111") && lines[2].ends_with("2 files (oldest kept)"), "{out}");
    assert!(lines[3].contains("222222222222") && lines[3].ends_with("~SOUL.md, +skills/faq/SKILL.md"), "{out}");
    assert!(lines[4].ends_with("-AGENTS.md"), "{out}");

    // Default: the last two.
    let (ok, out, err) = winston(&["workspace", "diff", "acme", "-n", "ns"], &db.url);
    assert!(ok, "{err}");
    assert!(out.contains("--- a/AGENTS.md\n+++ /dev/null\n@@ -1 +0,0 @@\n-# Operating rules\n"), "{out}");
    assert!(!out.contains("SOUL.md"), "{out}");
    // By index and by hash prefix: the changed line, with its context.
    for (from, to) in [("1", "2"), ("111111", "sha256:222222")] {
        let (ok, out, err) = winston(&["workspace", "diff", "acme", "-n", "ns", from, to], &db.url);
        assert!(ok, "{err}");
        assert!(out.contains(" line one\n-first soul\n+second soul\n line three\n"), "{out}");
        assert!(out.contains("+++ b/skills/faq/SKILL.md"), "{out}");
    }

    // Clear errors: an unknown selector, an unknown tenant, no database.
    let (ok, _, err) = winston(&["workspace", "diff", "acme", "-n", "ns", "9"], &db.url);
    assert!(!ok && err.contains("give an index from 1 to 3"), "{err}");
    let (ok, _, err) = winston(&["status", "ghost", "-n", "ns", "--history"], &db.url);
    assert!(!ok && err.contains("failed to find a kept workspace version of instance ghost-0"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_winston"))
        .args(["workspace", "diff", "acme", "-n", "ns"])
        .env_remove("WINSTON_DATABASE_URL")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("WINSTON_DATABASE_URL (or --database-url) is required"));
    // The password of the URL never shows in an error.
    let bad = "postgres://winston:hunter2-secret@127.0.0.1:1/x";
    let (ok, out, err) = winston(&["status", "acme", "-n", "ns", "--history"], bad);
    assert!(!ok && !err.contains("hunter2") && !out.contains("hunter2"), "{err}");
}
