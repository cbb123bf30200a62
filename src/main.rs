//! The `winston` command line: one binary for every role. Each subcommand
//! only parses its arguments and hands over to the library.
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "winston",
    version,
    about = "Provision and meter AI-agent tenants on Kubernetes"
)]
struct Cli {
    /// Log as JSON lines (for log collectors) instead of human-readable text.
    #[arg(long, global = true, env = "WINSTON_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Apply Winston's control-database migrations (idempotent).
    Migrate {
        /// PostgreSQL connection URL of Winston's own database.
        #[arg(long, env = "WINSTON_DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Run the metered LLM proxy.
    Proxy(winston::proxy::ProxyArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    winston::telemetry::init(cli.log_json);
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Migrate { database_url } => {
            runtime.block_on(winston::ledger::migrate(&database_url))?
        }
        Command::Proxy(args) => runtime.block_on(winston::proxy::run(args))?,
    }
    Ok(())
}
