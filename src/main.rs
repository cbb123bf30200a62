//! The `winston` command line: one binary for every role. Each subcommand
//! only parses its arguments and hands over to the library.
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    Controller(Box<winston::controller::ControllerArgs>),
    /// Apply Winston's control-database migrations (idempotent).
    Migrate {
        /// PostgreSQL connection URL of Winston's own database.
        #[arg(long, env = "WINSTON_DATABASE_URL", hide_env_values = true)]
        database_url: winston::ledger::DatabaseUrl,
    },
    /// Receive Stripe webhooks: a paid checkout becomes a Tenant.
    Intake(Box<winston::intake::IntakeArgs>),
    /// Run the metered LLM proxy.
    Proxy(winston::proxy::ProxyArgs),
    /// Serve local emulators of Railway, Neon, Vercel, Supabase, Resend and
    /// the LLM upstreams on one loopback port (prints their base URLs).
    Emulator(winston::emulator::EmulatorArgs),
    /// Show tenants, their provisioning steps, URLs and credits (`-w` to follow).
    Status(winston::status::StatusArgs),
    /// Run the reference agent runtime (what a tenant's service runs).
    Agent(Box<winston::agent::AgentArgs>),
    /// Export or prune the transcripts the agents pushed.
    Transcripts(winston::proxy::transcripts::TranscriptsArgs),
    /// Approve a Tenant declared with `spec.approved: false` (records who and when).
    Approve(winston::approve::ApproveArgs),
    /// Run a throwaway local PostgreSQL until stopped (used by `make demo`).
    DevPostgres(winston::devenv::DevPostgresArgs),
    /// Analyse a website through the proxy and print the proposed profile as JSON.
    Analyze(winston::analyzer::cli::AnalyzeArgs),
    /// Compare the workspace versions kept for a tenant's instance (`diff`).
    Workspace(winston::history::WorkspaceArgs),
}

fn main() -> anyhow::Result<()> {
    // Installed as `kubectl-winston`, the binary is the kubectl plugin `kubectl winston`.
    let cli = match winston::status::plugin_bin_name(std::env::args_os().next().as_deref()) {
        Some(name) => Cli::from_arg_matches(&Cli::command().bin_name(name).get_matches()).unwrap_or_else(|e| e.exit()),
        None => Cli::parse(),
    };
    winston::telemetry::init(cli.log_json);
    match cli.command {
        Command::Crds { out_dir: None } => print!("{}", winston::api::crds_yaml()?),
        Command::Crds { out_dir: Some(dir) } => winston::api::write_crds(&dir)?,
        Command::Controller(args) => runtime()?.block_on(winston::controller::run(*args))?,
        Command::Migrate { database_url } => runtime()?.block_on(winston::ledger::migrate(database_url.expose()))?,
        Command::Intake(args) => runtime()?.block_on(winston::intake::run(*args))?,
        Command::Proxy(args) => runtime()?.block_on(winston::proxy::run(args))?,
        Command::Emulator(args) => runtime()?.block_on(winston::emulator::run(args))?,
        Command::Status(args) => runtime()?.block_on(winston::status::run(args))?,
        Command::Agent(args) => runtime()?.block_on(winston::agent::run(*args))?,
        Command::Transcripts(args) => runtime()?.block_on(winston::proxy::transcripts::run(args))?,
        Command::Approve(args) => runtime()?.block_on(winston::approve::run(args))?,
        Command::DevPostgres(args) => runtime()?.block_on(winston::devenv::dev_postgres(args))?,
        Command::Analyze(args) => runtime()?.block_on(winston::analyzer::cli::run(args))?,
        Command::Workspace(args) => runtime()?.block_on(winston::history::run(args))?,
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}
