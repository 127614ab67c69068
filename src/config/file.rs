//! The configuration file (`--config`, YAML): one section per `serve --help` heading, one key per
//! flag, spelled as the flag. The file is read with its positions (marked-yaml), and each value is
//! checked by its flag's own parser, so a wrong value is refused with the file, the key's path and
//! its line, in the words the flag would use.
//!
//! The layering itself is clap's: the file's values become the flags' defaults, so the environment
//! (`CONNECT_FACADE_*`) and the command line override them as they override the built-in defaults,
//! with no merging written here (see [`super::load_matches`]).

use std::{fmt, path::Path};

use clap::{Arg, ArgAction, Args, Command};
use marked_yaml::{Node, Span};

use super::{
    AwsFlags, CallerFlags, ListeningFlags, PeerLimits, QuotaFlags, RetryFlags, SimulatorFlags,
    TelemetryFlags,
};

/// Adds a group's flags to a command (clap's `Args::augment_args`).
pub type Group = fn(Command) -> Command;

/// The file's sections, named as `ServeConfig`'s groups, in `--help`'s order: each holds its
/// group's flags.
pub const SECTIONS: &[(&str, Group)] = &[
    ("simulator", SimulatorFlags::augment_args),
    ("listening", ListeningFlags::augment_args),
    ("aws", AwsFlags::augment_args),
    ("retries", RetryFlags::augment_args),
    ("quota", QuotaFlags::augment_args),
    ("callers", CallerFlags::augment_args),
    ("peers", PeerLimits::augment_args),
    ("telemetry", TelemetryFlags::augment_args),
];

/// One key of the file: the flag it sets (by clap id) and its values as the flag would take them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub id: String,
    pub values: Vec<String>,
}

/// Everything wrong with a file, each problem with where it is; the file is refused as a whole.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileErrors(pub Vec<String>);

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, problem) in self.0.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileErrors {}

/// The section and flag of every key the file may hold: `(section, long flag, clap id)`.
pub fn keys() -> Vec<(&'static str, String, String)> {
    let mut keys = Vec::new();
    for (section, augment) in SECTIONS {
        let group = augment(Command::new(*section));
        for arg in group.get_arguments() {
            if let Some(long) = arg.get_long() {
                keys.push((*section, long.to_string(), arg.get_id().to_string()));
            }
        }
    }
    keys
}

/// The flag of `serve` a key sets, by its clap id.
pub fn flag<'a>(serve: &'a Command, id: &str) -> &'a Arg {
    serve
        .get_arguments()
        .find(|arg| arg.get_id().as_str() == id)
        .expect("every key is one of serve's flags")
}

/// Reads `path` and checks every key against `serve` (the command whose flags it sets): the
/// settings in the file's order, or every problem found.
pub fn read(path: &Path, serve: &Command) -> Result<Vec<Setting>, FileErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| FileErrors(vec![format!("{}: cannot read: {err}", path.display())]))?;
    parse(&path.display().to_string(), &text, serve)
}

/// [`read`] on text already read; `name` is how problems name the file.
pub fn parse(name: &str, text: &str, serve: &Command) -> Result<Vec<Setting>, FileErrors> {
    let at = |span: &Span| match span.start() {
        Some(marker) => format!("{name}:{}:{}", marker.line(), marker.column()),
        None => name.to_string(),
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let root = marked_yaml::parse_yaml(0, text)
        .map_err(|err| FileErrors(vec![format!("{name}: not YAML this file can hold: {err}")]))?;
    let Some(root) = root.as_mapping() else {
        return Err(FileErrors(vec![format!(
            "{}: the file must be a mapping of sections ({})",
            at(root.span()),
            section_names()
        )]));
    };
    let keys = keys();
    let mut settings = Vec::new();
    let mut problems = Vec::new();
    for (section, body) in root.iter() {
        let section_name = section.as_str();
        if !SECTIONS.iter().any(|(name, _)| *name == section_name) {
            problems.push(format!(
                "{}: unknown section `{section_name}` (sections: {})",
                at(section.span()),
                section_names()
            ));
            continue;
        }
        // A section whose keys are all commented out (as `config print` writes them) is empty.
        if body
            .as_scalar()
            .is_some_and(|s| s.as_str().is_empty() || s.as_str() == "~")
        {
            continue;
        }
        let Some(body) = body.as_mapping() else {
            problems.push(format!(
                "{}: `{section_name}` must be a mapping of its flags to their values",
                at(body.span())
            ));
            continue;
        };
        for (key, value) in body.iter() {
            let path = format!("{section_name}.{}", key.as_str());
            let Some((_, _, id)) = keys
                .iter()
                .find(|(s, long, _)| *s == section_name && long == key.as_str())
            else {
                let known: Vec<&str> = keys
                    .iter()
                    .filter(|(s, _, _)| *s == section_name)
                    .map(|(_, long, _)| long.as_str())
                    .collect();
                problems.push(format!(
                    "{}: unknown key `{path}` (`{section_name}` holds: {})",
                    at(key.span()),
                    known.join(", ")
                ));
                continue;
            };
            match setting(id, value, serve) {
                Ok(setting) => settings.push(setting),
                Err(problem) => problems.push(format!("{}: `{path}`: {problem}", at(value.span()))),
            }
        }
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(FileErrors(problems))
    }
}

fn section_names() -> String {
    SECTIONS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One key's value checked by its flag's parser: a scalar, or a list for a repeatable flag.
fn setting(id: &str, value: &Node, serve: &Command) -> Result<Setting, String> {
    let arg = flag(serve, id);
    let long = arg.get_long().expect("file keys are long flags");
    let repeatable = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
        || matches!(arg.get_action(), ArgAction::Append);
    let values: Vec<String> = match value {
        Node::Scalar(scalar) => vec![scalar.as_str().to_string()],
        Node::Sequence(items) if repeatable => items
            .iter()
            .map(|item| {
                item.as_scalar()
                    .map(|s| s.as_str().to_string())
                    .ok_or_else(|| "each item must be a single value".to_string())
            })
            .collect::<Result<_, _>>()?,
        Node::Sequence(_) => return Err("takes one value, not a list".into()),
        Node::Mapping(_) => return Err("takes a value, not a mapping".into()),
    };
    // The value goes through the flag's own parser on a command holding that flag alone (clap
    // keeps a parser's direct use to itself), so it is refused in the words the flag would use.
    let alone = Arg::new("value")
        .long(long.to_string())
        .value_name(arg.get_id().as_str().to_uppercase())
        .action(ArgAction::Set)
        .value_parser(arg.get_value_parser().clone());
    let check = Command::new("connect-facade")
        .no_binary_name(true)
        .arg(alone);
    for text in &values {
        if text.is_empty() || text == "~" || text == "null" {
            return Err("has no value (remove the key for the default)".into());
        }
        check
            .clone()
            .try_get_matches_from([format!("--{long}={text}")])
            .map_err(|err| clap_message(&err))?;
    }
    Ok(Setting {
        id: id.to_string(),
        values,
    })
}

/// clap's own sentence for a refused value, without its `error:` prefix and usage hint.
fn clap_message(err: &clap::Error) -> String {
    let rendered = err.to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::config::{Cli, subcommand_at};

    fn parse_file(text: &str) -> Result<Vec<Setting>, FileErrors> {
        let command = Cli::command();
        parse("f.yaml", text, subcommand_at(&command, &["serve"]))
    }

    #[test]
    fn keys_are_flags_under_their_heading_and_every_serve_flag_has_one() {
        let command = Cli::command();
        let serve = subcommand_at(&command, &["serve"]);
        let keys = keys();
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version" | "log-format" | "config") {
                continue;
            }
            assert!(
                keys.iter().any(|(_, key, _)| key == long),
                "--{long} has no key"
            );
        }
        assert!(keys.len() > 50, "{}", keys.len());
    }

    #[test]
    fn values_keep_their_flags_and_lists_stay_lists() {
        let settings = parse_file(
            "quota:\n  rate-limit: 3\nlistening:\n  cors-allow-origin:\n    - https://a\n    - https://b\n",
        )
        .unwrap();
        assert_eq!(
            settings,
            [
                Setting {
                    id: "rate_limit".into(),
                    values: vec!["3".into()]
                },
                Setting {
                    id: "cors_allow_origins".into(),
                    values: vec!["https://a".into(), "https://b".into()]
                },
            ]
        );
    }

    #[test]
    fn every_problem_is_named_with_its_line_and_key() {
        let errors = parse_file(
            "quota:\n  rate-limit: -1\n  colour: blue\npeers:\n  max-message-size: lots\n  idle-timeout:\n",
        )
        .unwrap_err();
        let [rate, colour, size, empty] = errors.0.as_slice() else {
            panic!("{errors}")
        };
        assert!(
            rate.starts_with("f.yaml:2:15: `quota.rate-limit`: invalid value '-1'"),
            "{rate}"
        );
        assert!(
            colour.starts_with("f.yaml:3:3: unknown key `quota.colour`"),
            "{colour}"
        );
        assert!(
            size.starts_with("f.yaml:5:21: `peers.max-message-size`"),
            "{size}"
        );
        assert!(size.contains("not a size in bytes"), "{size}");
        assert!(
            empty.contains("`peers.idle-timeout`: has no value"),
            "{empty}"
        );
    }

    #[test]
    fn a_file_that_is_not_sections_is_refused_whole() {
        assert!(
            parse_file("- a\n- b\n")
                .unwrap_err()
                .to_string()
                .starts_with("f.yaml")
        );
        assert!(
            parse_file("quota: 3\n")
                .unwrap_err()
                .to_string()
                .contains("must be a mapping")
        );
        assert!(parse_file("quota: [\n").is_err());
        assert_eq!(parse_file("").unwrap(), []);
        assert_eq!(parse_file("callers:\n").unwrap(), []);
    }
}
