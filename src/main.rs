use std::process::ExitCode;

use clap::Parser;
use connect_facade::{app, config::Cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.log_format);
    let outcome = app::run(cli.command).await;
    // The span exporter's last batch goes out before exit; shutting it down blocks.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("connect-facade: {err}");
            ExitCode::FAILURE
        }
    }
}
