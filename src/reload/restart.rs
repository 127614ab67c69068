//! The settings a reload cannot apply: what was bound, dialled or built once at startup (the
//! listeners, the AWS client's base, the quota store, the HTTP stack's limits). A reload that finds
//! one changed keeps its value in force, says so, and applies the rest.

use crate::config::ServeConfig;

/// Sets every restart-only setting of `new` back to its value `in_force`, and names those that
/// differed (by their flag, without `--`).
pub(super) fn keep_in_force(in_force: &ServeConfig, new: &mut ServeConfig) -> Vec<&'static str> {
    let mut pending = Vec::new();
    macro_rules! restart_only {
        ($($name:literal => $group:ident . $field:ident),+ $(,)?) => {$(
            if new.$group.$field != in_force.$group.$field {
                pending.push($name);
                new.$group.$field = in_force.$group.$field.clone();
            }
        )+};
    }
    restart_only!(
        "listen" => listening.listen,
        "cors-allow-origin" => listening.cors_allow_origins,
        "shutdown-grace" => listening.shutdown_grace,
        "reload-interval" => listening.reload_interval,
        "region" => aws.region,
        "endpoint-url" => aws.endpoint_url,
        "connect-timeout" => aws.connect_timeout,
        "attempt-timeout" => aws.attempt_timeout,
        "readiness-follows-breaker" => retries.readiness_follows_breaker,
        "quota-store" => quota.quota_store,
        "quota-key-prefix" => quota.quota_key_prefix,
        "quota-store-timeout" => quota.quota_store_timeout,
        "quota-fallback-rate" => quota.quota_fallback_rate,
        "replay-window" => quota.replay_window,
        "replay-capacity" => quota.replay_capacity,
        "max-open-requests" => peers.max_open_requests,
        "max-message-size" => peers.max_message_size,
        "max-buffered-requests" => peers.max_buffered_requests,
        "metrics-listen" => telemetry.metrics_listen,
        "admin-listen" => telemetry.admin_listen,
        "admin-token-file" => telemetry.admin_token_file,
        "simulator" => simulator.enabled,
        "simulator-fixtures" => simulator.fixtures,
    );
    // Files that were given stay reloadable under another path; turning one on or off does not.
    let listening = (&in_force.listening, &mut new.listening);
    if listening.0.tls_cert.is_some() != listening.1.tls_cert.is_some() {
        pending.push("tls-cert");
        listening.1.tls_cert = listening.0.tls_cert.clone();
        listening.1.tls_key = listening.0.tls_key.clone();
        listening.1.tls_client_ca = listening.0.tls_client_ca.clone();
    }
    if in_force.aws.routes.is_some() != new.aws.routes.is_some() {
        pending.push("routes");
        new.aws.routes = in_force.aws.routes.clone();
    }
    if in_force.callers.auth_file.is_some() != new.callers.auth_file.is_some() {
        pending.push("auth-file");
        new.callers.auth_file = in_force.callers.auth_file.clone();
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_only_setting_keeps_its_value_and_the_rest_applies() {
        let in_force = ServeConfig::from_args(["--rate-limit", "2"]).unwrap();
        let mut new = ServeConfig::from_args([
            "--rate-limit",
            "5",
            "--listen",
            "127.0.0.1:1",
            "--auth-file",
            "/callers.yaml",
        ])
        .unwrap();
        assert_eq!(keep_in_force(&in_force, &mut new), ["listen", "auth-file"]);
        assert_eq!(new.listening.listen, in_force.listening.listen);
        assert_eq!(new.callers.auth_file, None);
        assert_eq!(new.quota.rate_limit, 5.0, "live");
        assert!(keep_in_force(&in_force, &mut new).is_empty());
    }
}
