//! Shared fixtures for the ledger and proxy tests: one throwaway PostgreSQL
//! shared by the tests of a binary that run at the same time (it stops when
//! the last of them drops it), and a fresh migrated database per test.
#![allow(dead_code, clippy::unwrap_used)]
use std::sync::{Arc, Mutex, Weak};

use winston::devenv::postgres::TempPostgres;
use winston::ledger::Ledger;

static SHARED: Mutex<Weak<TempPostgres>> = Mutex::new(Weak::new());

/// A running cluster, shared with concurrently running tests.
pub fn shared_postgres() -> Arc<TempPostgres> {
    let mut slot = SHARED.lock().unwrap();
    if let Some(pg) = slot.upgrade() {
        return pg;
    }
    let pg = Arc::new(TempPostgres::start().expect("start throwaway postgres"));
    *slot = Arc::downgrade(&pg);
    pg
}

/// A migrated database of its own for one test. Keep the returned
/// `Arc<TempPostgres>` alive for as long as the test uses the database.
pub struct TestDb {
    pub pg: Arc<TempPostgres>,
    pub url: String,
    pub ledger: Ledger,
}

pub async fn fresh_db() -> TestDb {
    winston::telemetry::install_crypto_provider();
    let pg = shared_postgres();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    pg.create_database(&name).expect("create database");
    let url = pg.url(&name);
    winston::ledger::migrate(&url).await.expect("migrate");
    let ledger = Ledger::connect(&url, 20).await.expect("connect");
    TestDb { pg, url, ledger }
}
