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
