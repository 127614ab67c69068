//! `connect-facade check`: the whole chain `serve` depends on, checked before the first call, each
//! check one line with ✓ or ✗, its time, and on failure what to change and where the book explains
//! it. The book's "Preflight check" chapter lists every check and its reasoning.
//!
//! It reads the same configuration `serve` would (files, environment, flags) and builds the same
//! parts from it, then asks each the question a first call would, with no side effect an operator
//! would notice: AWS is asked who the facade is and, per route, whether its identity may call the
//! operation (with contact ids that cannot exist: [`crate::upstream::Probe`]); Redis runs each
//! script once on keys of its own that expire. Every network step is bounded by `--step-timeout`.
//!
//! linkerd's `linkerd check` is the model: ordered checks, one line each, a fix and a link per
//! failure, and JSON for machines.

mod aws;
mod durability;
mod issuers;
mod local;
mod report;
mod store;

use std::{future::Future, path::PathBuf, time::Duration};

use tokio::time::Instant;

pub use report::{Line, Report, Severity};

use crate::{auth::Callers, config::ServeConfig};

/// What `check` was asked beyond `serve`'s configuration.
#[derive(Clone, Debug)]
pub struct Options {
    /// Instances to probe beyond those the routes and the callers name.
    pub instances: Vec<String>,
    /// The longest any one network step may take.
    pub step_timeout: Duration,
}

/// What a check found.
pub(crate) enum Verdict {
    Pass(String),
    /// A problem that does not stop `serve`: reported, but `check` still succeeds.
    Warn {
        message: String,
        fix: String,
    },
    Fail {
        message: String,
        fix: String,
    },
}

impl Verdict {
    fn fail(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Fail {
            message: message.into(),
            fix: fix.into(),
        }
    }

    fn warn(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Warn {
            message: message.into(),
            fix: fix.into(),
        }
    }

    #[cfg(test)]
    fn passed(&self) -> bool {
        matches!(self, Self::Pass(_))
    }
}

/// The book's chapter on the checks, which each line's link points into.
const CHAPTER: &str = "docs/operators/check.md";

/// The fix of a configuration that does not load.
const CONFIGURATION_FIX: &str = "correct each problem named (file, line and key); the other checks \
                                 need a valid configuration and did not run";

/// The lines found so far.
pub(crate) struct Checks {
    lines: Vec<Line>,
    /// The longest any one network step may take.
    step_timeout: Duration,
}

impl Checks {
    /// Runs one check and records its line; answers whether it passed (warnings included).
    async fn run(
        &mut self,
        name: impl Into<String>,
        anchor: &'static str,
        check: impl Future<Output = Verdict>,
    ) -> bool {
        let started = Instant::now();
        let verdict = check.await;
        let seconds = started.elapsed().as_secs_f64();
        let ok = !matches!(verdict, Verdict::Fail { .. });
        let (severity, message, fix) = match verdict {
            Verdict::Pass(message) => (Severity::Error, message, None),
            Verdict::Warn { message, fix } => (Severity::Warning, message, Some(fix)),
            Verdict::Fail { message, fix } => (Severity::Error, message, Some(fix)),
        };
        let passed = ok && severity == Severity::Error;
        self.lines.push(Line {
            name: name.into(),
            ok: passed,
            severity,
            message,
            fix,
            link: format!("{CHAPTER}#{anchor}"),
            seconds,
        });
        ok
    }
}

/// `step` within `timeout`; past it, a failure saying what did not answer.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    what: &str,
    step: impl Future<Output = T>,
) -> Result<T, Verdict> {
    tokio::time::timeout(timeout, step).await.map_err(|_| {
        Verdict::fail(
            format!("{what} did not answer within {timeout:?}"),
            format!(
                "check that {what} is reachable from here (network policy, proxy, endpoint); \
                 raise --step-timeout if it is only slow"
            ),
        )
    })
}

/// Runs every check against `config`, in the order a call meets the parts.
pub async fn run(config: &ServeConfig, files: &[PathBuf], options: &Options) -> Report {
    let mut checks = Checks {
        lines: Vec::new(),
        step_timeout: options.step_timeout,
    };
    let valid = checks
        .run(
            "configuration",
            "configuration",
            local::configuration(config, files),
        )
        .await;
    if valid {
        // The auth file, read once for every line that needs it (it loaded: the configuration line passed).
        let callers = config
            .callers
            .auth_file
            .as_deref()
            .map(Callers::from_path)
            .transpose();
        let callers = callers.as_ref().ok().and_then(Option::as_ref);
        let routes = aws::check(&mut checks, config, (options, callers)).await;
        store::check(&mut checks, config).await;
        checks
            .run(
                "tls",
                "tls",
                local::tls_expiry(config, std::time::SystemTime::now()),
            )
            .await;
        checks
            .run(
                "callers",
                "callers",
                local::callers(config, callers, routes.as_deref()),
            )
            .await;
        for (issuer, verdict) in issuers::fetch_each(callers, checks.step_timeout).await {
            checks
                .run(format!("issuer keys {issuer}"), "issuer-keys", async {
                    verdict
                })
                .await;
        }
    }
    Report {
        checks: checks.lines,
    }
}
