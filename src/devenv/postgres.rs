//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory,
//! `pg_ctl start` on a free 127.0.0.1 port, trust authentication, stopped
//! and removed on drop.
//!
//! The server binaries are looked up in `$WINSTON_PG_BINDIR`, then
//! `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`, then
//! `PATH`. PostgreSQL refuses to run as root, so when this process is root the
//! server runs as the `postgres` system user (via `runuser`).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Errors starting or stopping the throwaway cluster.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("failed to find the PostgreSQL server binaries (initdb, pg_ctl); set WINSTON_PG_BINDIR")]
    NotFound,
    #[error("failed to {action}: {detail}")]
    Command { action: &'static str, detail: String },
    #[error("failed to prepare the data directory: {0}")]
    Io(#[from] std::io::Error),
}

/// A running PostgreSQL cluster that is stopped and deleted when dropped.
#[derive(Debug)]
pub struct TempPostgres {
    bindir: PathBuf,
    root: PathBuf,
    port: u16,
    as_postgres_user: bool,
    keep: bool,
}

impl TempPostgres {
    /// Creates and starts a new cluster under a fresh temporary directory.
    ///
    /// # Errors
    /// Fails when the binaries are missing or `initdb`/`pg_ctl` fail; the
    /// message carries their output.
    pub fn start() -> Result<Self, PgError> {
        let root = std::env::temp_dir().join(format!("winston-pg-{}", uuid::Uuid::new_v4().simple()));
        Self::start_in(&root)
    }

    /// Creates and starts a new cluster in `root` (created if missing).
    ///
    /// # Errors
    /// As [`TempPostgres::start`].
    pub fn start_in(root: &Path) -> Result<Self, PgError> {
        let bindir = find_bindir().ok_or(PgError::NotFound)?;
        std::fs::create_dir_all(root)?;
        let as_postgres_user = super::running_as_root();
        if as_postgres_user {
            run(
                Command::new("chown").arg("-R").arg("postgres:postgres").arg(root),
                "hand the data directory to the postgres user",
            )?;
        }
        let port = super::free_port()?;
        let pg = Self { bindir, root: root.to_path_buf(), port, as_postgres_user, keep: false };
        run(
            pg.command("initdb")
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
                .arg(pg.data_dir()),
            "initialise the cluster (initdb)",
        )?;
        // Tests trade crash safety of the throwaway cluster for speed;
        // benchmarks (`WINSTON_PG_DURABLE=1`, set by `make bench`) measure
        // with production's settings: every commit waits for its WAL flush.
        let durable = std::env::var("WINSTON_PG_DURABLE").is_ok_and(|v| v == "1");
        let (fsync, full_page_writes) = if durable { ("on", "on") } else { ("off", "off") };
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync={fsync} -c synchronous_commit=on -c full_page_writes={full_page_writes} -c max_connections=300",
            pg.root.display()
        );
        run(
            pg.command("pg_ctl")
                .arg("-D")
                .arg(pg.data_dir())
                .arg("-l")
                .arg(pg.root.join("postgres.log"))
                .args(["-o", &opts, "-w", "-t", "120", "start"]),
            "start the cluster (pg_ctl start)",
        )?;
        Ok(pg)
    }

    /// The TCP port the server listens on (127.0.0.1).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id of the postmaster (its backends are its children).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.root.join("data/postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }

    /// A connection URL for the `postgres` superuser and the given database.
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database (ignores nothing: fails when it already exists).
    ///
    /// # Errors
    /// Fails when `createdb` fails.
    pub fn create_database(&self, name: &str) -> Result<(), PgError> {
        run(
            self.command("createdb").args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", name]),
            "create a database",
        )
    }

    /// Keep the directory and server after drop (for debugging a failure).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The server log, for dumping on test failure.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let bin = self.bindir.join(program);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn run(cmd: &mut Command, action: &'static str) -> Result<(), PgError> {
    let out = cmd.output().map_err(|e| PgError::Command { action, detail: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PgError::Command {
            action,
            detail: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        })
    }
}

fn find_bindir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("WINSTON_PG_BINDIR").map(PathBuf::from) {
        return has(&d).then_some(d);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has(&d) {
            return Some(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let d = e.path().join("bin");
            has(&d).then_some((v, d))
        })
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| has(d)))
}

/// A PostgreSQL shared by the whole process (one per test binary), for
/// statics that are never dropped: a watchdog shell stops the server
/// (SIGQUIT, immediate shutdown) and removes its directory once this
/// process is gone.
///
/// # Errors
/// As [`TempPostgres::start_in`], or when the watchdog cannot start.
pub fn start_for_process() -> Result<TempPostgres, PgError> {
    let root = std::env::temp_dir().join(format!("winston-pg-{}", uuid::Uuid::new_v4().simple()));
    let pg = TempPostgres::start_in(&root)?;
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill -QUIT $(head -1 {root}/data/postmaster.pid) 2>/dev/null; sleep 1; rm -rf {root}",
        pid = std::process::id(),
        root = root.display()
    );
    // The watchdog outlives this process by design; nobody waits for it.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| PgError::Command { action: "start the postgres watchdog", detail: e.to_string() })?;
    Ok(pg)
}
