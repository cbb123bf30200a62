//! Neon's list endpoints bound `limit` (v2 OpenAPI: `GET /projects` 1..=400,
//! operations 1..=1000) and answer 400 out of bounds; the client asks for
//! pages within them and reads every page, so a marker search never misses
//! a project beyond the first 400.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod providers_common;

use providers_common::*;
use serde_json::{Value, json};
use winston::emulator::{EmulatorConfig, NEON_PATH};

/// `n` Neon projects named `<name> winston:<i>` and `others` unrelated
/// ones, as an emulator state file (listing needs no real database).
fn state_with_projects(name: &str, n: usize, others: usize) -> Value {
    let project = |id: String, name: String, i: usize| {
        json!({"id": id, "name": name, "region_id": "aws-us-east-2", "pg_version": 17,
               "store_passwords": true, "org_id": null, "created_ms": 1_700_000_000_000_i64 + i as i64})
    };
    let mut projects = serde_json::Map::new();
    for i in 0..n {
        let id = format!("page-{i:04}");
        projects.insert(id.clone(), project(id, format!("{name} winston:{i}"), i));
    }
    for i in 0..others {
        let id = format!("other-{i:04}");
        projects.insert(id.clone(), project(id, format!("wn-other{i}"), n + i));
    }
    json!({"neon": {"projects": projects}})
}

async fn env_with_projects(name: &str, n: usize, others: usize) -> (Env, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(&path, state_with_projects(name, n, others).to_string()).unwrap();
    let config = EmulatorConfig {
        state_file: Some(path),
        limits: winston::emulator::limits::PlatformLimits::none(),
        ..EmulatorConfig::default()
    };
    (Env::with_config(config).await, dir)
}

#[tokio::test]
async fn a_search_reads_every_page_of_projects() {
    let (env, _dir) = env_with_projects("wn-paged", 437, 25).await;
    let neon = env.providers().neon;
    let found = neon.find_projects("wn-paged").await.unwrap();
    assert_eq!(found.len(), 437, "projects beyond the first page were missed");
    let mut ids: Vec<_> = found.iter().map(|p| p.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 437, "a project was read twice");
    // 437 matches at 400 a page: two pages and the empty one that ends the list.
    let requests = env.objects_json().await["neon"]["requests"].as_u64().unwrap();
    assert!(requests <= 3, "{requests} list requests for two pages");
}

#[tokio::test]
async fn an_out_of_bounds_limit_is_refused_not_clamped() {
    let (env, _dir) = env_with_projects("wn-bounds", 3, 0).await;
    let status = |q: &'static str| {
        let req = env.raw(reqwest::Method::GET, &format!("{NEON_PATH}/projects{q}"));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("?limit=401").await, 400);
    assert_eq!(status("?limit=0").await, 400);
    assert_eq!(status("?limit=400").await, 200);
    let page = env.get_json(&format!("{NEON_PATH}/projects?limit=2")).await;
    assert_eq!(page["projects"].as_array().unwrap().len(), 2, "a page holds at most `limit` items");
    let cursor = page["pagination"]["cursor"].as_str().unwrap().to_string();
    let rest = env.get_json(&format!("{NEON_PATH}/projects?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["projects"].as_array().unwrap().len(), 1, "the rest is behind the cursor");
    let ops = |l: u32| {
        let req = env.raw(reqwest::Method::GET, &format!("{NEON_PATH}/projects/page-0000/operations?limit={l}"));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ops(1001).await, 400);
    assert_eq!(ops(1000).await, 200);
}
