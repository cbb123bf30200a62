//! The `winston` command line: one binary for every role. Each subcommand
//! only parses its arguments and hands over to the library.
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "winston", version, about = "Provision and meter AI-agent tenants on Kubernetes")]
struct Cli {
    /// Log as JSON lines (for log collectors) instead of human-readable text.
    #[arg(long, global = true, env = "WINSTON_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD).
    Crds {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Run the controller: reconcile Tenants, their instances and ledgers.
    Controller(winston::controller::ControllerArgs),
    /// Apply Winston's control-database migrations (idempotent).
    Migrate {
        /// PostgreSQL connection URL of Winston's own database.
        #[arg(long, env = "WINSTON_DATABASE_URL", hide_env_values = true)]
        database_url: winston::ledger::DatabaseUrl,
    },
    /// Run the metered LLM proxy.
    Proxy(winston::proxy::ProxyArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    winston::telemetry::init(cli.log_json);
    match cli.command {
        Command::Crds { out_dir: None } => print!("{}", winston::api::crds_yaml()?),
        Command::Crds { out_dir: Some(dir) } => winston::api::write_crds(&dir)?,
        Command::Controller(args) => runtime()?.block_on(winston::controller::run(args))?,
        Command::Migrate { database_url } => runtime()?.block_on(winston::ledger::migrate(database_url.expose()))?,
        Command::Proxy(args) => runtime()?.block_on(winston::proxy::run(args))?,
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}
