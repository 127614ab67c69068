use std::process::ExitCode;

use clap::Parser;
use connect_facade::{app, config::Cli, telemetry};

// The AWS SDK allocates heavily on every call (signing, the orchestrator's config bag, headers):
// with glibc's allocator, malloc and free were a quarter of the facade's instructions per call
// (docs/BENCHMARKS.md). mimalloc's thread-local free lists make them a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match app::runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("connect-facade: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let telemetry = telemetry::init(cli.log_format);
        let outcome = app::run(cli.command).await;
        // The span exporter's last batch goes out before exit; shutting it down blocks.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        outcome
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("connect-facade: {err}");
            ExitCode::FAILURE
        }
    }
}
