//! `config print` and `config schema`: the configuration described from `serve`'s own flags, so
//! neither can drift from what `--config` accepts. The schema is generated from the clap
//! definitions rather than with schemars because the flags, not a serde type, are the one
//! definition of every key, its default and its parser.

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{Map, Value, json};

use super::file::{self, SECTIONS};

/// Keys whose values are secrets: shown redacted by `config print`.
const SECRETS: &[&str] = &["quota_store"];

/// The effective configuration (every layer applied, as `matches` hold it) as YAML that
/// `--config` accepts. Keys with no value are listed as comments, so the file shows every knob.
pub fn effective(matches: &ArgMatches) -> String {
    let mut out = String::from(
        "# connect-facade serve's effective configuration: built-in defaults < --config file\n\
         # < CONNECT_FACADE_* variables < flags. Secrets are redacted.\n",
    );
    let mut section = "";
    for (name, long, id) in file::keys() {
        if name != section {
            out.push_str(name);
            out.push_str(":\n");
            section = name;
        }
        let values: Vec<String> = matches
            .get_raw(&id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let values: Vec<String> = if SECRETS.contains(&id.as_str()) {
            values
                .iter()
                .map(|v| crate::store::address::redact(v))
                .collect()
        } else {
            values
        };
        match values.as_slice() {
            [] => out.push_str(&format!("  # {long}:\n")),
            [one] => out.push_str(&format!("  {long}: {}\n", scalar(one))),
            many => {
                out.push_str(&format!("  {long}:\n"));
                for value in many {
                    out.push_str(&format!("    - {}\n", scalar(value)));
                }
            }
        }
    }
    out
}

/// A value as YAML: plain when YAML reads it back as the same text, quoted otherwise.
fn scalar(value: &str) -> String {
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/:+".contains(c))
        && !value.is_empty()
        && !value.ends_with(':');
    if plain {
        value.to_string()
    } else {
        serde_json::to_string(value).expect("a string serializes")
    }
}

/// `serve` as clap completes it before parsing (a boolean flag's `false` default appears then).
fn built(serve: &Command) -> Command {
    let mut serve = serve.clone();
    serve.build();
    serve
}

/// A flag's help, as `--help` shows it in full.
fn help(arg: &Arg) -> String {
    arg.get_long_help()
        .or(arg.get_help())
        .map(|help| help.to_string())
        .unwrap_or_default()
}

/// The JSON Schema (draft 2020-12) of the configuration file: its sections, each key's help,
/// default and type; unknown keys are refused as `--config` refuses them.
pub fn schema(serve: &Command) -> Value {
    let serve = &built(serve);
    let keys = file::keys();
    let mut sections = Map::new();
    for (section, _) in SECTIONS {
        let mut properties = Map::new();
        for (_, long, id) in keys.iter().filter(|(s, _, _)| s == section) {
            let arg = file::flag(serve, id);
            let mut property = Map::new();
            let help = help(arg);
            let env = arg
                .get_env()
                .map(|env| format!(" (flag --{long}, variable {})", env.to_string_lossy()))
                .unwrap_or_default();
            property.insert("description".into(), json!(format!("{help}{env}")));
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let boolean = matches!(arg.get_action(), ArgAction::SetTrue);
            let possible: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|_| !boolean)
                .map(|value| value.get_name().to_string())
                .collect();
            let one = if boolean {
                json!({"type": "boolean"})
            } else if !possible.is_empty() {
                json!({"enum": possible})
            } else {
                json!({"type": ["string", "number"]})
            };
            let repeatable = matches!(arg.get_action(), ArgAction::Append);
            if repeatable {
                property.insert("type".into(), json!("array"));
                property.insert("items".into(), one);
            } else {
                property.extend(one.as_object().expect("an object").clone());
            }
            match defaults.as_slice() {
                [] => {}
                [one] if boolean => {
                    property.insert("default".into(), json!(one == "true"));
                }
                [one] if !repeatable => {
                    property.insert("default".into(), json!(one));
                }
                many => {
                    property.insert("default".into(), json!(many));
                }
            }
            properties.insert(long.clone(), Value::Object(property));
        }
        sections.insert(
            (*section).to_string(),
            json!({"type": "object", "additionalProperties": false, "properties": properties}),
        );
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "connect-facade serve --config",
        "type": "object",
        "additionalProperties": false,
        "properties": sections,
    })
}

/// The configuration reference (docs/CONFIGURATION.md): per section, each key with its flag,
/// variable, default and help, from the same definitions as the schema, so the documented
/// defaults are the ones `config print` shows.
pub fn reference(serve: &Command) -> String {
    let serve = &built(serve);
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated by `connect-facade config schema --markdown` from `serve`'s flags (a test fails \
         when this file is stale). Each key is set in a section of the `--config` file, or by its \
         variable, or by its flag; each layer overrides the one before ([Configuration](operators/configuration.md)). \
         Durations take units (`100ms`, `3s`, `10m`), sizes too (`65536`, `64KiB`, `1MiB`). The \
         JSON Schema is `docs/config.schema.json`.\n",
    );
    let keys = file::keys();
    for (section, _) in SECTIONS {
        let mut in_section = keys.iter().filter(|(s, _, _)| s == section).peekable();
        let heading = in_section
            .peek()
            .and_then(|(_, _, id)| file::flag(serve, id).get_help_heading())
            .unwrap_or(section);
        out.push_str(&format!(
            "\n## `{section}`: {heading}\n\n| key | flag, variable | default | meaning |\n|---|---|---|---|\n"
        ));
        for (_, long, id) in in_section {
            let arg = file::flag(serve, id);
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| format!("`{}`", v.to_string_lossy()))
                .collect();
            let default = if defaults.is_empty() {
                "unset".to_string()
            } else {
                defaults.join(", ")
            };
            let env = arg
                .get_env()
                .map(|env| format!(", `{}`", env.to_string_lossy()))
                .unwrap_or_default();
            let help = help(arg).replace('\n', " ").replace('|', "\\|");
            out.push_str(&format!(
                "| `{long}` | `--{long}`{env} | {default} | {help} |\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::config::{Cli, subcommand_at};

    /// `generated` is what the repository holds at `path`, or the test says how to refresh it.
    fn assert_committed(path: &str, generated: &str, refresh: &str) {
        let committed = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is stale: run `cargo run -- {refresh} > {path}`"
        );
    }

    #[test]
    fn the_committed_schema_is_the_flags_own() {
        let command = Cli::command();
        let schema = schema(subcommand_at(&command, &["serve"]));
        let generated = serde_json::to_string_pretty(&schema).expect("JSON") + "\n";
        assert_committed("docs/config.schema.json", &generated, "config schema");
    }

    #[test]
    fn the_committed_reference_documents_the_flags_own_defaults() {
        let command = Cli::command();
        let generated = reference(subcommand_at(&command, &["serve"]));
        assert_committed(
            "docs/CONFIGURATION.md",
            &generated,
            "config schema --markdown",
        );
    }

    #[test]
    fn values_print_plain_when_yaml_reads_them_back_unchanged() {
        assert_eq!(scalar("0.0.0.0:50051"), "0.0.0.0:50051");
        assert_eq!(scalar("redis://cache:6379/2"), "redis://cache:6379/2");
        assert_eq!(scalar("a b"), "\"a b\"");
        assert_eq!(scalar("*"), "\"*\"");
        assert_eq!(scalar("x:"), "\"x:\"");
    }
}
