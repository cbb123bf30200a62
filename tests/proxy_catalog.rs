//! The model catalog as an operator writes it: the example in
//! `docs/proxy.md` loads and means what the guide says, and key files are
//! read from disk and never printed.
#![allow(clippy::unwrap_used)]

use winston::proxy::Catalog;
use winston::proxy::pricing::Tokens;

/// The catalog example of the operator guide, without its key files.
fn documented_example() -> String {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/proxy.md")).unwrap();
    let section = guide.split("## The model catalog").nth(1).unwrap();
    let yaml = section.split("```yaml\n").nth(1).unwrap().split("```").next().unwrap();
    yaml.lines().filter(|l| !l.trim_start().starts_with("api_key_file:")).map(|l| format!("{l}\n")).collect()
}

#[test]
fn the_documented_catalog_loads_with_its_prices() {
    let catalog = Catalog::parse(&documented_example()).unwrap();
    let sonnet = &catalog.models["claude-sonnet-4-5"];
    let p = &sonnet.prices;
    assert_eq!((p.input, p.output, p.cache_write, p.cache_read), (5000, 5000, 6250, 500));
    let (name, tool) = sonnet.server_tool_for("web_search_20250305").unwrap();
    assert_eq!((name, tool.credits_per_use, tool.max_uses), ("web_search", 50_000, 5));
    assert!(sonnet.tool_types.contains("bash_20250124") && sonnet.betas.contains("prompt-caching-2024-07-31"));
    // 1,000 cache reads, 100 output tokens and 2 searches, as the guide's formula says.
    let used = Tokens {
        input: 10,
        output: 100,
        cache_write: 0,
        cache_read: 1000,
        server_tool_uses: [("web_search".to_string(), 2)].into(),
    };
    assert_eq!(p.cost(&used), (10 * 5000 + 100 * 5000 + 1000 * 500) / 1000 + 100_000);
    assert_eq!(catalog.models["claude-opus-4-1"].image_tokens, Some(4784));
    let kimi = &catalog.models["kimi-k2.6"];
    assert_eq!(kimi.prices.cost(&Tokens { input: 7, output: 3, ..Tokens::default() }), 10);
    assert_eq!(kimi.endpoint(), "https://api.moonshot.ai/v1/chat/completions");
}

#[test]
fn key_files_are_read_trimmed_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-secret-123\n").unwrap();
    let yaml = dir.path().join("models.yaml");
    std::fs::write(
        &yaml,
        format!(
            "models:\n  m:\n    kind: anthropic\n    base_url: http://u/\n    api_key_file: {}\n    multiplier: 2\n",
            key.display()
        ),
    )
    .unwrap();
    let catalog = Catalog::load(&yaml).unwrap();
    let m = &catalog.models["m"];
    assert_eq!(m.key.as_ref().unwrap().expose(), "sk-secret-123");
    assert!(!format!("{catalog:?}").contains("sk-secret"));

    std::fs::remove_file(&key).unwrap();
    let err = Catalog::load(&yaml).unwrap_err().to_string();
    assert!(err.contains("failed to read") && err.contains("key"), "{err}");
}
