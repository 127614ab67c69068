//! The real binary as a child process: started as an operator would, waited for until it serves,
//! signalled and stopped; a replica of a fleet started the same way.

use crate::support::eventually;
use connect_facade::simulator::Simulator;
use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The binary with an environment that has no AWS configuration at all.
pub(crate) fn facade(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_connect-facade"));
    command.args(args);
    without_aws(command)
}

/// The binary as [`facade`] starts it, under `ulimit -n limit` (soft and hard).
pub(crate) fn facade_with_open_files(limit: u32, args: &[&str]) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_connect-facade"))
        .args(args);
    without_aws(command)
}

fn without_aws(mut command: Command) -> Command {
    command
        .env_clear()
        .env("HOME", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A running facade process, with every log line it wrote so far.
pub(crate) struct Serving {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) logs: Arc<Mutex<Vec<String>>>,
}

impl Serving {
    /// The first logged event whose ErrorInfo `reason` field is `reason`, waited for (at most 5 s):
    /// a call's line is written as it ends, and read from the pipe a moment later.
    pub(crate) async fn line_with_reason(&self, reason: &str) -> serde_json::Value {
        let find = || {
            self.logs.lock().unwrap().iter().find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                (event["fields"]["reason"] == reason).then_some(event)
            })
        };
        eventually(&format!("a {reason} line"), Duration::from_secs(5), || {
            std::future::ready(find().is_some())
        })
        .await;
        find().expect("found above")
    }
}

/// Starts `serve` and waits for it to log (in JSON, as it does when stderr is not a terminal) the
/// address it bound.
pub(crate) async fn serving(mut command: Command) -> Serving {
    let mut child = command.spawn().expect("binary starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("readable stderr") {
            logs.lock().unwrap().push(line.clone());
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                panic!("not a JSON log line: {line}")
            };
            if event["fields"]["message"] == "connect-facade serving gRPC" {
                let addr = event["fields"]["addr"].as_str().expect("addr field");
                return addr.parse().expect("a socket address");
            }
        }
        panic!("the facade exited before serving")
    })
    .await
    .expect("the facade serves within 20 s");
    // Keep collecting stderr so the child never blocks on a full pipe.
    let collected = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            collected.lock().unwrap().push(line);
        }
    });
    Serving { child, addr, logs }
}

/// Writes demo fixtures plus `faults` (YAML list items) to a fresh file for `--simulator-fixtures`.
pub(crate) fn fixtures_with_faults(faults: &str) -> std::path::PathBuf {
    let demo = include_str!("../../../fixtures/demo.yaml");
    let path = std::env::temp_dir().join(format!(
        "connect-facade-fixtures-{}-{}.yaml",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&path, format!("{demo}\nfaults:\n{faults}")).unwrap();
    path
}

/// Waits (at most 5 s) for the process to exit, and checks it exited 0.
pub(crate) async fn exits_zero(child: &mut Child) {
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the process exits within 5 s")
        .expect("its status is readable");
    assert!(status.success(), "{status:?}");
}

pub(crate) fn sigterm(child: &Child) {
    send_signal(child, "-TERM");
}

/// Sends `signal` (as `kill` names it) to the running `child`.
pub(crate) fn send_signal(child: &Child, signal: &str) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// The command of a facade process whose quota store is `url`.
pub(crate) fn replica_command(
    simulator: &Simulator,
    url: &str,
    extra: &[&str],
) -> tokio::process::Command {
    let endpoint = simulator.endpoint_url();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--region",
        "us-east-1",
        "--endpoint-url",
        &endpoint,
        "--quota-store",
        url,
    ];
    if !extra.contains(&"--rate-limit") {
        args.extend_from_slice(&["--rate-limit", "2"]);
    }
    args.extend_from_slice(extra);
    let mut command = facade(&args);
    command
        .env("AWS_ACCESS_KEY_ID", "AKIDREPLICA")
        .env("AWS_SECRET_ACCESS_KEY", "replica-secret");
    command
}
