//! Loading the command line with the configuration files under it: defaults < files <
//! `CONNECT_FACADE_*` < flags, the files' values becoming the flags' defaults.

use std::{ffi::OsString, path::PathBuf};

use clap::{ArgMatches, CommandFactory};

use super::{Cli, file};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A flag or variable clap refused (or `--help`, `--version`): clap prints and exits.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The configuration file's problems, each with its file, line and key.
    #[error(transparent)]
    File(#[from] file::FileErrors),
}

/// The command line as given, with the configuration files' values (when `--config` or `config
/// check FILE…` names them) layered between the built-in defaults and the environment: defaults <
/// files < `CONNECT_FACADE_*` < flags. The files' values become the flags' defaults, so clap
/// applies the precedence and each value goes through its flag's own parser. Returns the final
/// command (with those defaults) and what it parsed.
pub fn load_matches(args: &[OsString]) -> Result<(clap::Command, ArgMatches), LoadError> {
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(args)?;
    let Some((path, files)) = config_files(&matches) else {
        return Ok((command, matches));
    };
    let serve = subcommand_at(&command, &path);
    let mut settings: Vec<file::Setting> = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match file::read(file, serve) {
            // A later file overrides an earlier one's keys: a base file, then an environment's.
            Ok(read) => {
                for setting in read {
                    settings.retain(|earlier| earlier.id != setting.id);
                    settings.push(setting);
                }
            }
            Err(file::FileErrors(found)) => problems.extend(found),
        }
    }
    if !problems.is_empty() {
        return Err(file::FileErrors(problems).into());
    }
    let command = with_defaults(command, &path, &settings);
    let matches = command.clone().try_get_matches_from(args)?;
    Ok((command, matches))
}

/// The subcommand holding `serve`'s flags, by its path of names, and the files it names (none:
/// `None`).
pub fn config_files(matches: &ArgMatches) -> Option<(Vec<&'static str>, Vec<PathBuf>)> {
    let files = |m: &ArgMatches, id: &str| -> Vec<PathBuf> {
        m.get_many::<PathBuf>(id)
            .map(|files| files.cloned().collect())
            .unwrap_or_default()
    };
    let (path, files) = match matches.subcommand()? {
        ("serve", m) => (vec!["serve"], files(m, "config")),
        ("check", m) => (vec!["check"], files(m, "config")),
        ("config", m) => match m.subcommand()? {
            ("check", m) => {
                let given = files(m, "files");
                let files = if given.is_empty() {
                    files(m, "config")
                } else {
                    given
                };
                (vec!["config", "check"], files)
            }
            ("print", m) => (vec!["config", "print"], files(m, "config")),
            _ => return None,
        },
        _ => return None,
    };
    (!files.is_empty()).then_some((path, files))
}

/// The subcommand at `path` (its names from the top), whose flags a file sets.
pub fn subcommand_at<'a>(command: &'a clap::Command, path: &[&str]) -> &'a clap::Command {
    path.iter().fold(command, |command, name| {
        command
            .find_subcommand(name)
            .expect("the path names existing subcommands")
    })
}

/// The matches of the subcommand at `path`.
pub fn matches_at<'a>(matches: &'a ArgMatches, path: &[&str]) -> Option<&'a ArgMatches> {
    path.iter()
        .try_fold(matches, |matches, name| matches.subcommand_matches(name))
}

fn with_defaults(
    command: clap::Command,
    path: &[&str],
    settings: &[file::Setting],
) -> clap::Command {
    match path.split_first() {
        Some((name, rest)) => {
            command.mut_subcommand(name, |sub| with_defaults(sub, rest, settings))
        }
        None => settings.iter().fold(command, |command, setting| {
            command.mut_arg(setting.id.as_str(), |arg| {
                arg.default_values(setting.values.iter().cloned())
            })
        }),
    }
}
