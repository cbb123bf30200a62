//! `target/bench/summary.json`: one flat JSON object of figures (one key
//! per measure, its unit in the key name, e.g. `proxy_added_p99_ms_at_1000rps`)
//! that every bench of `make bench` merges its own keys into, so that two
//! runs can be compared by a script (`jq`, `diff`). A bench overwrites only
//! the keys it measured; a key it could not measure is written as `null`
//! with a `<key>_note` saying why.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::{Map, Value};

/// Where the summary lives (under cargo's target directory).
pub fn path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    target.join("bench").join("summary.json")
}

/// Merges `figures` into the summary file (creating it), keeping the keys
/// other benches wrote, and records when and on how many CPUs.
pub fn record(figures: &[(&str, Option<f64>)]) {
    record_notes(figures, &[]);
}

/// As [`record`], with a note per key that could not be measured.
pub fn record_notes(figures: &[(&str, Option<f64>)], notes: &[(&str, &str)]) {
    let path = path();
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("target/bench");
    let mut all: Map<String, Value> =
        std::fs::read(&path).ok().and_then(|raw| serde_json::from_slice(&raw).ok()).unwrap_or_default();
    for (key, value) in figures {
        all.insert((*key).to_string(), value.map_or(Value::Null, Value::from));
        // A note belongs to the run that wrote it: a figure measured again
        // loses the note an earlier run left.
        all.remove(&format!("{key}_note"));
    }
    for (key, note) in notes {
        all.insert(format!("{key}_note"), Value::from(*note));
    }
    all.insert("cpus".into(), Value::from(std::thread::available_parallelism().map_or(0, std::num::NonZero::get)));
    all.insert("written_at".into(), Value::from(chrono::Utc::now().to_rfc3339()));
    let text = serde_json::to_string_pretty(&Value::Object(all)).expect("json");
    std::fs::write(&path, text + "\n").expect("write target/bench/summary.json");
    println!("figures merged into {}", path.display());
}
