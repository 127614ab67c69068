use std::process::ExitCode;

use clap::FromArgMatches;
use connect_facade::{
    admin, app,
    config::{self, Cli, Command, ConfigCommand, LoadError, PreflightOutput, describe},
    preflight, telemetry,
};

// The AWS SDK allocates heavily on every call (signing, the orchestrator's config bag, headers):
// with glibc's allocator, malloc and free were a quarter of the facade's instructions per call
// (docs/BENCHMARKS.md). mimalloc's thread-local free lists make them a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`, by its place in `mi_option_t` (mimalloc.h, v3, as built by
/// the locked libmimalloc-sys, whose Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc gives freed memory back to the OS only once its purge delay (1 s) has passed *and* the
/// heap is used again, so after a burst of connections an idle facade kept up to 3x its idle RSS for
/// as long as it stayed idle. Purging at once brought it back within a second, with no measurable
/// cost per call (docs/CONNECTIONS.md). `MIMALLOC_PURGE_DELAY`, when set, still decides.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option, which mimalloc reads atomically; no pointer is involved.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    let args: Vec<_> = std::env::args_os().collect();
    let (command, matches) = match config::load_matches(&args) {
        Ok(loaded) => loaded,
        Err(LoadError::Clap(err)) => err.exit(),
        Err(LoadError::File(err)) if preflight_output(&args).is_some() => {
            // `check` answers with its report even when a file is refused: its first line.
            let report = preflight::Report::refused_configuration(&err.to_string());
            match preflight_output(&args) {
                Some(PreflightOutput::Json) => println!("{}", report.to_json()),
                _ => print!("{}", report.to_text()),
            }
            return ExitCode::FAILURE;
        }
        Err(LoadError::File(err)) => {
            eprintln!("connect-facade: the configuration file is refused:\n{err}");
            return ExitCode::FAILURE;
        }
    };
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    if let Command::Serve(config) = &mut cli.command {
        // A reload reads the command line again, with the files it names.
        config.command_line = std::env::args_os().collect();
    }
    if let Command::Config(config_command) = &cli.command {
        return run_config_command(config_command, &command, &matches);
    }
    let runtime = match app::runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("connect-facade: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Check(args) = cli.command {
        return runtime.block_on(preflight(*args, cli.log_format, &matches));
    }
    if let Command::Status(args) = cli.command {
        return runtime.block_on(status(args));
    }
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

/// `check --output`, when the command line is `check`'s (read without the files it names).
fn preflight_output(args: &[std::ffi::OsString]) -> Option<PreflightOutput> {
    use clap::CommandFactory;
    let matches = Cli::command().try_get_matches_from(args).ok()?;
    let (name, check) = matches.subcommand()?;
    if name != "check" {
        return None;
    }
    check.get_one::<PreflightOutput>("output").copied()
}

/// `status`: the replica's state on stdout, once or refreshed; exit 1 when it is not serving.
async fn status(args: config::StatusArgs) -> ExitCode {
    use admin::terminal::{Look, look};
    let token = match &args.token_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(token) => Some(token.trim().to_owned()),
            Err(error) => {
                eprintln!("connect-facade: cannot read {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let timeout = args.interval.max(std::time::Duration::from_secs(2));
    loop {
        let seen = look(&args.url, token.as_deref(), timeout).await;
        if args.watch {
            // Clear the screen and go home, as `watch` does.
            print!("\x1b[2J\x1b[H");
        }
        let code = match seen {
            Look::Serving(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Look::Draining(text) => {
                print!("{text}");
                ExitCode::FAILURE
            }
            Look::Unreachable(why) => {
                eprintln!("connect-facade: no status: {why}");
                ExitCode::FAILURE
            }
        };
        if !args.watch {
            return code;
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return code,
        }
    }
}

/// `check`: the report on stdout, exit 1 when a check of severity error failed.
async fn preflight(
    args: config::PreflightArgs,
    log_format: telemetry::LogFormat,
    matches: &clap::ArgMatches,
) -> ExitCode {
    let telemetry = telemetry::init(log_format);
    let files = config::config_files(matches).map_or_else(Vec::new, |(_, files)| files);
    let options = preflight::Options {
        instances: args.instances,
        step_timeout: args.step_timeout,
    };
    let report = preflight::run(&args.serve, &files, &options).await;
    match args.output {
        PreflightOutput::Text => print!("{}", report.to_text()),
        PreflightOutput::Json => println!("{}", report.to_json()),
    }
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `config check`, `print` and `schema`: no runtime, no telemetry, an answer on stdout.
fn run_config_command(
    config_command: &ConfigCommand,
    command: &clap::Command,
    matches: &clap::ArgMatches,
) -> ExitCode {
    match config_command {
        ConfigCommand::Check(args) => {
            let problems = app::check(&args.serve);
            if problems.is_empty() {
                match config::config_files(matches) {
                    Some((_, files)) => {
                        for file in files {
                            println!("{}: valid", file.display());
                        }
                    }
                    None => {
                        println!("the configuration is valid (no file: the environment and flags)")
                    }
                }
                ExitCode::SUCCESS
            } else {
                for problem in problems {
                    eprintln!("connect-facade: {problem}");
                }
                ExitCode::FAILURE
            }
        }
        ConfigCommand::Print(_) => {
            let at = config::matches_at(matches, &["config", "print"]).expect("config print");
            print!("{}", describe::effective(at));
            ExitCode::SUCCESS
        }
        ConfigCommand::Schema(args) => {
            let serve = config::subcommand_at(command, &["serve"]);
            if args.markdown {
                print!("{}", describe::reference(serve));
            } else {
                let schema = serde_json::to_string_pretty(&describe::schema(serve)).expect("JSON");
                println!("{schema}");
            }
            ExitCode::SUCCESS
        }
    }
}
