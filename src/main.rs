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
    /// Serve local emulators of Railway, Neon, Vercel, Supabase and Resend on one loopback port.
    Emulator(winston::emulator::EmulatorArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    winston::telemetry::init(cli.log_json);
    match cli.command {
        Command::Emulator(args) => Ok(winston::emulator::main(args)?),
    }
}
