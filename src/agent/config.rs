//! What the runtime is started with: the variables of the runtime contract
//! (`docs/runtime-contract.md`) as command-line options with their
//! environment names, and the one type that keeps secrets out of `Debug`.
use std::net::SocketAddr;
use std::path::PathBuf;

/// A secret value from the environment (tenant key, gateway token, database
/// URL). `Debug` never shows it; [`Secret::expose`] is the only way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for use on the wire. Never log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(v: String) -> Self {
        Self(v)
    }
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Self(v.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Command-line options of `winston agent`; each has the environment
/// variable the runtime contract names.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Port to listen on (all interfaces) unless `--listen` is given.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Exact address to listen on (the emulator binds its runtimes to 127.0.0.1).
    #[arg(long, env = "WINSTON_AGENT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The tenant's own PostgreSQL database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// The tenant's key for Winston's proxy.
    #[arg(long, env = "WINSTON_API_KEY", hide_env_values = true)]
    pub api_key: Secret,
    /// Base URL of Winston's proxy (LLM calls and transcript pushes).
    #[arg(long, env = "WINSTON_PROXY_URL")]
    pub proxy_url: String,
    /// Token every caller of `/api/*` and `/status` must present.
    #[arg(long, env = "GATEWAY_TOKEN", hide_env_values = true)]
    pub gateway_token: Secret,
    /// The workspace bundle: base64 of a JSON object `{path: content}`.
    #[arg(long, env = "WINSTON_WORKSPACE", hide_env_values = true)]
    pub workspace: Option<String>,
    /// Content hash of the bundle (reported by `/health`).
    #[arg(long, env = "WINSTON_WORKSPACE_HASH")]
    pub workspace_hash: Option<String>,
    /// The instance name (reported by `/health`).
    #[arg(long, env = "WINSTON_INSTANCE", default_value = "agent")]
    pub instance: String,
    /// Model id to ask the proxy for (a key of the proxy's catalog).
    #[arg(long, env = "WINSTON_AGENT_MODEL", default_value = "claude-sonnet-4-5")]
    pub model: String,
    /// Output cap of one reply, in tokens.
    #[arg(long, env = "WINSTON_AGENT_MAX_TOKENS", default_value_t = 1024)]
    pub max_tokens: u32,
    /// Earlier messages of a conversation sent with each turn.
    #[arg(long, env = "WINSTON_AGENT_HISTORY", default_value_t = 20)]
    pub history: i64,
    /// Largest accepted request body in bytes (413 above).
    #[arg(long, env = "WINSTON_AGENT_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// Directory of the transcript spool (events wait here until the proxy
    /// acknowledged them; keep it on a volume to survive restarts).
    #[arg(long, env = "WINSTON_AGENT_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// How often spooled transcript events are pushed, in milliseconds.
    #[arg(long, env = "WINSTON_AGENT_PUSH_MILLIS", default_value_t = 2000)]
    pub push_millis: u64,
    /// Events per pushed batch (the proxy accepts at most 1,000).
    #[arg(long, env = "WINSTON_AGENT_BATCH_LINES", default_value_t = 500)]
    pub batch_lines: usize,
    /// Exit when this process is no longer our parent (set by the emulator,
    /// so its runtimes never outlive it).
    #[arg(long, env = "WINSTON_AGENT_PARENT_PID")]
    pub parent_pid: Option<u32>,
}

impl AgentArgs {
    /// The address to listen on.
    #[must_use]
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], self.port)))
    }

    /// The spool directory: the configured one, or one per instance under
    /// the system's temporary directory.
    #[must_use]
    pub fn spool_path(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("winston-agent-{}", self.instance)))
    }

    /// Options for a runtime built in code (tests, benchmarks): production
    /// defaults for everything the contract does not name.
    #[must_use]
    pub fn new(database_url: &str, api_key: &str, proxy_url: &str, gateway_token: &str) -> Self {
        Self {
            port: 8080,
            listen: None,
            database_url: database_url.into(),
            api_key: api_key.into(),
            proxy_url: proxy_url.to_string(),
            gateway_token: gateway_token.into(),
            workspace: None,
            workspace_hash: None,
            instance: "agent".into(),
            model: "claude-sonnet-4-5".into(),
            max_tokens: 1024,
            history: 20,
            body_limit: 64 * 1024,
            spool_dir: None,
            push_millis: 2000,
            batch_lines: 500,
            parent_pid: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let a = AgentArgs::new("postgres://u:pw-123@db/x", "wsk_secret", "http://proxy", "wgt_token");
        let shown = format!("{a:?}");
        for s in ["pw-123", "wsk_secret", "wgt_token"] {
            assert!(!shown.contains(s), "{s} in {shown}");
        }
    }
}
