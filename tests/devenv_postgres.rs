//! The throwaway PostgreSQL used by tests, benchmarks and the demo starts,
//! accepts connections and cleans up after itself.
use winston::devenv::postgres::TempPostgres;

#[tokio::test]
async fn throwaway_postgres_accepts_connections_and_is_removed_on_drop() {
    let pg = TempPostgres::start().expect("start postgres");
    pg.create_database("winston_test").expect("createdb");
    let pool = sqlx::PgPool::connect(&pg.url("winston_test"))
        .await
        .expect("connect");
    let (v,): (String,) = sqlx::query_as("SHOW server_version")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert!(
        v.split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|m| m >= 14),
        "{v}"
    );
    pool.close().await;
    let port = pg.port();
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening after drop"
    );
}
