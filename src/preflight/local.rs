//! The checks that read files only: the configuration, the TLS certificate's expiry, and the
//! callers' instances against the routes.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use super::Verdict;
use crate::{
    app, auth::Callers, config::ServeConfig, metrics::MetricsRegistry, routes::spec::RouteSpec,
    serving::tls::TlsMetrics,
};

/// Under this, the certificate's expiry is a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// What `config check` checks: every file parses and the flags agree.
pub(super) async fn configuration(config: &ServeConfig, files: &[PathBuf]) -> Verdict {
    let problems = app::check(config);
    if !problems.is_empty() {
        return Verdict::fail(problems.join("; "), super::CONFIGURATION_FIX);
    }
    Verdict::Pass(if files.is_empty() {
        "valid (no file: the environment and flags)".to_owned()
    } else {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        format!("valid: {}", names.join(", "))
    })
}

/// Whether the served certificate is valid for a while yet.
pub(super) async fn tls_expiry(config: &ServeConfig, now: SystemTime) -> Verdict {
    let tls = match app::tls(config, TlsMetrics::register(&mut MetricsRegistry::new())) {
        Ok(Some(tls)) => tls,
        Ok(None) => {
            return Verdict::Pass(
                "off: plain HTTP/2 (--tls-cert and --tls-key turn TLS on)".to_owned(),
            );
        }
        Err(error) => return Verdict::fail(error.to_string(), "fix the TLS files named"),
    };
    let cert = config
        .listening
        .tls_cert
        .as_ref()
        .map_or_else(String::new, |c| c.display().to_string());
    let Some(expiry) = tls.certificate_expiry() else {
        return Verdict::warn(
            format!("the expiry of {cert} could not be read"),
            "check that its first PEM block is the server's own certificate",
        );
    };
    let until = humantime::format_rfc3339_seconds(expiry);
    let renew = "renew it: the facade takes the new files without a restart (on SIGHUP, or \
                 when the files change)";
    match expiry.duration_since(now) {
        Err(_) => Verdict::fail(format!("{cert} expired at {until}"), renew),
        Ok(left) if left < EXPIRY_WARNING => Verdict::warn(
            format!(
                "{cert} expires at {until}, in {} days",
                left.as_secs() / 86_400
            ),
            renew,
        ),
        Ok(left) => Verdict::Pass(format!(
            "{cert} valid until {until} ({} days)",
            left.as_secs() / 86_400
        )),
    }
}

/// Every instance a caller names is served by a route (`routes`: `None` when they could not be
/// read, which an earlier line reported).
pub(super) async fn callers(
    config: &ServeConfig,
    callers: Option<&Callers>,
    routes: Option<&[RouteSpec]>,
) -> Verdict {
    let Some(path) = &config.callers.auth_file else {
        return Verdict::Pass(
            "no --auth-file: every caller is anonymous and may call any instance".to_owned(),
        );
    };
    // The configuration line loaded it; it could only fail here if it changed since.
    let Some(callers) = callers else {
        return Verdict::fail(
            format!("{} could not be read again", path.display()),
            "fix the auth file",
        );
    };
    let count = callers.instances().count();
    let Some(routes) = routes else {
        return Verdict::warn(
            format!("{count} callers; their instances could not be matched to routes"),
            "fix the region or routes line above",
        );
    };
    let unrouted: Vec<String> = callers
        .instances()
        .flat_map(|(caller, instances)| {
            instances
                .iter()
                .filter(|id| *id != "*" && crate::routes::spec::route_for(routes, id).is_none())
                .map(move |id| {
                    format!("caller {caller} names instance {id}, which no route serves")
                })
        })
        .collect();
    if unrouted.is_empty() {
        Verdict::Pass(format!(
            "{count} callers in {}, names unique, every instance routed",
            path.display()
        ))
    } else {
        Verdict::fail(
            unrouted.join("; "),
            format!(
                "add the instance to a route's instances (or add a `*` route) in {}, or remove \
                 it from the caller in {}",
                config
                    .aws
                    .routes
                    .as_ref()
                    .map_or_else(|| "the routes file".to_owned(), |p| p.display().to_string()),
                path.display()
            ),
        )
    }
}
