//! Logging setup shared by every subcommand: `RUST_LOG`-style filtering
//! (default `info`), human-readable or JSON lines on stderr.
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber and the process-wide TLS provider.
/// Safe to call more than once (later calls are ignored).
pub fn init(json: bool) {
    install_crypto_provider();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Makes `ring` the process-wide rustls provider (kube, reqwest and sqlx all
/// use rustls). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
