//! The configuration file through the real binary: layered under the environment and the flags,
//! refused with its file, key and line, printed back as a file it accepts, and served from.

use std::{path::PathBuf, process::Stdio, time::Duration};

use connect_facade::proto::contact_service_client::ContactServiceClient;

use crate::{
    support::{Serving, facade, serving},
    support::{channel, entire_session},
};

fn file(name: &str, yaml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("connect-facade-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The binary's exit status, stdout and stderr.
async fn run(mut command: tokio::process::Command) -> (bool, String, String) {
    command.stdout(Stdio::piped());
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("exits promptly")
        .expect("binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The binary's stdout, once it has exited 0 (its stderr in the failure otherwise).
async fn succeeds(command: tokio::process::Command) -> String {
    let (ok, stdout, stderr) = run(command).await;
    assert!(ok, "{stderr}");
    stdout
}

/// The value `config print` shows for `key` (the first line naming it).
fn printed<'a>(print: &'a str, key: &str) -> &'a str {
    print
        .lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in\n{print}"))
}

const EVERY_SECTION: &str = "\
simulator:
  simulator: true
listening:
  listen: 127.0.0.1:0
  cors-allow-origin: [https://a.example, https://b.example]
  shutdown-grace: 7s
aws:
  region: eu-west-2
  attempt-timeout: 4s
retries:
  max-attempts: 2
  readiness-follows-breaker: true
quota:
  rate-limit: 3
  max-queue-wait: 2s
  quota-key-prefix: team-a
callers:
  auth-file: /etc/connect-facade/callers.yaml
peers:
  max-message-size: 32KiB
  connection-window: 1MiB
telemetry:
  metrics-listen: 127.0.0.1:0
";

#[tokio::test]
async fn every_section_is_read_from_the_file_and_printed_back_as_a_file_it_accepts() {
    let path = file("every-section.yaml", EVERY_SECTION);
    let print = succeeds(facade(&[
        "config",
        "print",
        "--config",
        path.to_str().unwrap(),
    ]))
    .await;
    for (key, value) in [
        ("simulator", "true"),
        ("listen", "127.0.0.1:0"),
        ("shutdown-grace", "7s"),
        ("region", "eu-west-2"),
        ("attempt-timeout", "4s"),
        ("max-attempts", "2"),
        ("readiness-follows-breaker", "true"),
        ("rate-limit", "3"),
        ("max-queue-wait", "2s"),
        ("quota-key-prefix", "team-a"),
        ("auth-file", "/etc/connect-facade/callers.yaml"),
        ("max-message-size", "32KiB"),
        ("connection-window", "1MiB"),
        ("metrics-listen", "127.0.0.1:0"),
        // Untouched keys keep their built-in defaults.
        ("max-in-flight", "64"),
        ("replay-window", "10m"),
    ] {
        assert_eq!(printed(&print, key), value, "{key}");
    }
    assert!(
        print.contains("    - https://a.example\n    - https://b.example\n"),
        "{print}"
    );

    let printed_file = file("printed.yaml", &print);
    let again = succeeds(facade(&[
        "config",
        "print",
        "--config",
        printed_file.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(
        again, print,
        "config print's output read back prints the same"
    );
}

/// The file named by its variable, and a number, a duration, a boolean, a size and a list set by
/// theirs.
fn with_environment(mut command: tokio::process::Command, config: &str) -> tokio::process::Command {
    command.env("CONNECT_FACADE_CONFIG", config);
    for (name, value) in [
        ("CONNECT_FACADE_RATE_LIMIT", "4"),
        ("CONNECT_FACADE_MAX_QUEUE_WAIT", "4s"),
        ("CONNECT_FACADE_READINESS_FOLLOWS_BREAKER", "false"),
        ("CONNECT_FACADE_MAX_MESSAGE_SIZE", "48KiB"),
        ("CONNECT_FACADE_CORS_ALLOW_ORIGIN", "https://env.example"),
    ] {
        command.env(name, value);
    }
    command
}

#[tokio::test]
async fn flags_override_the_environment_which_overrides_the_file() {
    let path = file(
        "precedence.yaml",
        "quota:\n  rate-limit: 3\n  max-queue-wait: 3s\nretries:\n  readiness-follows-breaker: true\n\
         peers:\n  max-message-size: 32KiB\nlistening:\n  cors-allow-origin: [https://file.example]\n",
    );
    let config = path.to_str().unwrap();
    // The file alone.
    let print = succeeds(facade(&["config", "print", "--config", config])).await;
    assert_eq!(printed(&print, "rate-limit"), "3");
    // A later file over an earlier one, key by key.
    let later = file("later.yaml", "quota:\n  max-queue-wait: 2500ms\n");
    let print = succeeds(facade(&[
        "config",
        "print",
        "--config",
        config,
        "--config",
        later.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(printed(&print, "max-queue-wait"), "2500ms");
    assert_eq!(
        printed(&print, "rate-limit"),
        "3",
        "the earlier file's other keys stay"
    );
    // The environment over the file: a number, a duration, a boolean, a size, a list.
    let print = succeeds(with_environment(facade(&["config", "print"]), config)).await;
    assert_eq!(printed(&print, "rate-limit"), "4");
    assert_eq!(printed(&print, "max-queue-wait"), "4s");
    assert_eq!(printed(&print, "readiness-follows-breaker"), "false");
    assert_eq!(printed(&print, "max-message-size"), "48KiB");
    assert_eq!(printed(&print, "cors-allow-origin"), "https://env.example");
    // The flags over both.
    let command = facade(&[
        "config",
        "print",
        "--rate-limit",
        "5",
        "--max-queue-wait",
        "5s",
        "--max-message-size",
        "60KiB",
        "--cors-allow-origin",
        "https://flag.example",
    ]);
    let print = succeeds(with_environment(command, config)).await;
    assert_eq!(printed(&print, "rate-limit"), "5");
    assert_eq!(printed(&print, "max-queue-wait"), "5s");
    assert_eq!(printed(&print, "max-message-size"), "60KiB");
    assert_eq!(printed(&print, "cors-allow-origin"), "https://flag.example");
    assert!(
        !print.contains("env.example") && !print.contains("file.example"),
        "{print}"
    );
}

#[tokio::test]
async fn a_wrong_file_is_refused_with_every_problem_its_key_and_line_and_nothing_serves() {
    let path = file(
        "wrong.yaml",
        "quota:\n  rate-limit: 2\n  quota-store: memcached://cache:11211\n  colour: blue\n\
         retries:\n  default-deadline: 3 parsecs\n",
    );
    let config = path.to_str().unwrap();
    let (ok, _, stderr) = run(facade(&[
        "serve",
        "--simulator",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config,
    ]))
    .await;
    assert!(!ok, "serve refuses the file");
    assert!(
        stderr.contains(&format!("{config}:3:16: `quota.quota-store`"))
            && stderr.contains("redis://"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{config}:4:3: unknown key `quota.colour`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{config}:6:21: `retries.default-deadline`"))
            && stderr.contains("parsecs"),
        "{stderr}"
    );
    let (ok, _, check) = run(facade(&["config", "check", config])).await;
    assert!(!ok, "config check fails");
    assert_eq!(check, stderr, "config check lists the same problems");
}

#[tokio::test]
async fn config_check_validates_the_files_the_configuration_names() {
    // Every section, less the callers file it names, which does not exist here.
    let valid = file(
        "valid.yaml",
        &EVERY_SECTION.replace("  auth-file: /etc/connect-facade/callers.yaml\n", ""),
    );
    let stdout = succeeds(facade(&["config", "check", valid.to_str().unwrap()])).await;
    assert!(stdout.contains("valid"), "{stdout}");

    let naming = file(
        "naming.yaml",
        "aws:\n  routes: /nonexistent/routes.yaml\ncallers:\n  auth-file: /nonexistent/auth.yaml\n\
         listening:\n  tls-cert: /nonexistent/cert.pem\n",
    );
    let (ok, _, stderr) = run(facade(&["config", "check", naming.to_str().unwrap()])).await;
    assert!(!ok);
    for problem in [
        "--tls-cert and --tls-key",
        "/nonexistent/routes.yaml",
        "/nonexistent/auth.yaml",
    ] {
        assert!(stderr.contains(problem), "{problem} in {stderr}");
    }
}

#[tokio::test]
async fn serve_takes_its_configuration_from_the_file() {
    let path = file(
        "serve.yaml",
        "simulator:\n  simulator: true\nlistening:\n  listen: 127.0.0.1:0\n",
    );
    let Serving {
        addr,
        child: _child,
        ..
    } = serving(facade(&["serve", "--config", path.to_str().unwrap()])).await;
    let mut client = ContactServiceClient::new(channel(addr).await);
    let answer = client
        .create_persistent_contact_association(entire_session())
        .await
        .expect("served with the file's simulator");
    assert_eq!(answer.get_ref().continued_from_contact_id, "C3");
}

#[tokio::test]
async fn the_documented_defaults_are_the_ones_config_print_shows() {
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/CONFIGURATION.md"
    ))
    .unwrap();
    let print = succeeds(facade(&["config", "print"])).await;
    let mut checked = 0;
    for row in reference.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let key = cells[0].trim_start_matches("| ").trim_matches('`');
        let documented = cells[2];
        if documented == "unset" {
            assert!(
                print.contains(&format!("  # {key}:\n")),
                "{key} is documented unset:\n{print}"
            );
        } else {
            assert_eq!(
                format!("`{}`", printed(&print, key)),
                documented,
                "{key}'s documented default"
            );
        }
        checked += 1;
    }
    assert!(checked > 50, "{checked} keys documented");
}
