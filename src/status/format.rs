//! Small pure formatters of `winston status`: durations, ages, credit
//! amounts, progress bars and optional ANSI colour.
use chrono::{DateTime, TimeDelta, Utc};
use unicode_width::UnicodeWidthStr;

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `1h02m`, `3d04h`.
#[must_use]
pub fn duration(d: TimeDelta) -> String {
    let ms = d.num_milliseconds().max(0);
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", s, (ms % 1000) / 100),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How long ago `since` was, like `kubectl get`'s AGE column: `45s`, `12m`, `3h`, `5d`.
#[must_use]
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7_200 => format!("{}m", s / 60),
        7_200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// An integer amount with thousands separators: `2,500,000`.
#[must_use]
pub fn credits(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A bar of `width` cells, `done` of `total` filled: `■■■□□□□□`.
#[must_use]
pub fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done.min(total) * width + total / 2).checked_div(total).unwrap_or(0);
    format!("{}{}", "■".repeat(filled), "□".repeat(width - filled))
}

/// Display width of `s` in terminal cells: two for a wide character (CJK,
/// most emoji), none for a combining mark, one for the rest. Ambiguous-width
/// characters (the bar's `■`, `·`) count one, as in a non-CJK locale.
#[must_use]
pub fn width(s: &str) -> usize {
    s.width()
}

/// `s` padded with spaces to `w` cells.
#[must_use]
pub fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(width(s))))
}

/// Colours of the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Busy,
    Bad,
    Quiet,
    Strong,
}

/// Applies ANSI colour when enabled (a terminal without `NO_COLOR`).
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// `s` in `tone`.
    #[must_use]
    pub fn paint(self, tone: Tone, s: &str) -> String {
        let code = match tone {
            Tone::Plain => return s.to_string(),
            Tone::Good => "32",
            Tone::Busy => "33",
            Tone::Bad => "31",
            Tone::Quiet => "2",
            Tone::Strong => "1",
        };
        if self.color { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally_at_every_scale() {
        let cases = [
            (0, "0ms"),
            (850, "850ms"),
            (12_345, "12.3s"),
            (59_999, "59.9s"),
            (245_000, "4m05s"),
            (3_720_000, "1h02m"),
            (273_600_000, "3d04h"),
            (-5, "0ms"),
        ];
        for (ms, want) in cases {
            assert_eq!(duration(TimeDelta::milliseconds(ms)), want, "{ms} ms");
        }
    }

    #[test]
    fn ages_match_kubectl_style() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().with_timezone(&Utc);
        for (secs, want) in [(45, "45s"), (600, "10m"), (3 * 3600, "3h"), (5 * 86_400, "5d"), (-3, "0s")] {
            assert_eq!(age(now - TimeDelta::seconds(secs), now), want);
        }
    }

    #[test]
    fn credits_get_thousands_separators() {
        for (n, want) in [(0, "0"), (999, "999"), (1000, "1,000"), (2_500_000, "2,500,000"), (-12_345, "-12,345")] {
            assert_eq!(credits(n), want);
        }
    }

    #[test]
    fn bars_fill_in_proportion_and_never_overflow() {
        assert_eq!(bar(0, 8, 8), "□□□□□□□□");
        assert_eq!(bar(5, 8, 8), "■■■■■□□□");
        assert_eq!(bar(9, 8, 8), "■■■■■■■■");
        assert_eq!(bar(1, 3, 6), "■■□□□□");
        assert_eq!(bar(0, 0, 4), "□□□□");
    }

    #[test]
    fn colour_only_when_enabled() {
        assert_eq!(Style { color: false }.paint(Tone::Bad, "x"), "x");
        assert_eq!(Style { color: true }.paint(Tone::Bad, "x"), "\x1b[31mx\x1b[0m");
        assert_eq!(Style { color: true }.paint(Tone::Plain, "x"), "x");
        assert_eq!(pad("■□", 4), "■□  ");
    }

    #[test]
    fn wide_characters_take_two_cells() {
        // Counting chars gives 4 for 山田商店 and 1 for 🦷, and pads 東京 with four spaces.
        assert_eq!(width("山田商店"), 8);
        assert_eq!(width("🦷"), 2);
        assert_eq!(width("e\u{301}"), 1, "a combining accent takes no cell");
        assert_eq!(width("✓ ● · – ■□"), 10);
        assert_eq!(pad("東京", 6), "東京  ");
        assert_eq!(pad("🦷 care", 8), "🦷 care ");
    }
}
