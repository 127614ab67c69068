use std::process::ExitCode;

use clap::Parser;
use connect_facade::{app, config::Cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match app::run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("connect-facade: {err}");
            ExitCode::FAILURE
        }
    }
}
