//! Throwaway local infrastructure for tests, benchmarks and `make demo`:
//! a PostgreSQL cluster in a temporary directory and helpers to find free
//! loopback ports. Nothing here is used by the controller or proxy in
//! production.
pub mod postgres;

use std::net::TcpListener;

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Errors
/// Fails when no ephemeral port can be bound.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// True when this process runs as root (uid 0), read from `/proc/self/status`.
#[must_use]
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `winston dev-postgres`: a throwaway PostgreSQL for `make demo`, kept
/// until SIGTERM/Ctrl-C, then stopped and removed.
#[derive(Clone, Debug, clap::Args)]
pub struct DevPostgresArgs {
    /// Directory for the cluster (created; removed on exit). Default: a new
    /// directory under the system temp dir, which the `postgres` user can
    /// reach even when the checkout sits in a private (0700) directory.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Databases to create besides `postgres`.
    #[arg(long = "database")]
    pub databases: Vec<String>,
}

/// Starts the cluster, prints `POSTGRES_URL=<url of database postgres>` and
/// waits for a stop signal.
///
/// # Errors
/// When the cluster cannot start or a database cannot be created.
pub async fn dev_postgres(args: DevPostgresArgs) -> anyhow::Result<()> {
    let pg = match &args.dir {
        Some(dir) => postgres::TempPostgres::start_in(dir)?,
        None => postgres::TempPostgres::start()?,
    };
    for db in &args.databases {
        pg.create_database(db)?;
    }
    println!("POSTGRES_URL={}", pg.url("postgres"));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    drop(pg);
    Ok(())
}
