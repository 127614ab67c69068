//! Offered load and its outcome: callers files with weights and rates, calls offered at a rate for a
//! time, and what a shared quota let through.

use crate::support::fresh_session;
use connect_facade::proto::{
    CreatePersistentContactAssociationRequest, contact_service_client::ContactServiceClient,
};
use sha2::{Digest, Sha256};
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};
use tonic::{Code, Request, transport::Channel};
use tonic_types::StatusExt;

/// An auth file of callers `(name, weight, max_rate)`, each with the token `token-NAME`.
pub(crate) fn auth_file(test: &str, callers: &[(&str, f64, Option<f64>)]) -> PathBuf {
    let mut text = String::from("callers:\n");
    for (name, weight, max_rate) in callers {
        let hash = hex::encode(Sha256::digest(format!("token-{name}").as_bytes()));
        text.push_str(&format!(
            "  - name: {name}\n    token_sha256: \"{hash}\"\n    instances: [\"*\"]\n    weight: {weight}\n"
        ));
        if let Some(rate) = max_rate {
            text.push_str(&format!("    max_rate: {rate}\n"));
        }
    }
    let path =
        std::env::temp_dir().join(format!("connect-facade-{test}-{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// What one caller's calls came to.
#[derive(Debug)]
pub(crate) struct Offered {
    pub(crate) ok: u32,
    pub(crate) refused: u32,
    /// The successful calls' latencies, in order.
    pub(crate) latencies: Vec<Duration>,
}

impl Offered {
    pub(crate) fn p50(&self) -> Duration {
        self.latencies
            .get(self.latencies.len() / 2)
            .copied()
            .unwrap_or(Duration::MAX)
    }
}

/// [`offer`] on `client`'s connection.
pub(crate) async fn offer_on(
    client: &ContactServiceClient<Channel>,
    name: &'static str,
    every: Duration,
    run: Duration,
) -> Offered {
    let started = Instant::now();
    let mut calls = Vec::new();
    let mut ticks = tokio::time::interval(every);
    while started.elapsed() < run {
        ticks.tick().await;
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            let mut request = as_caller(name, fresh_session());
            request.set_timeout(Duration::from_secs(10));
            let sent = Instant::now();
            let answer = client.create_persistent_contact_association(request).await;
            (answer, sent.elapsed())
        }));
    }
    let mut offered = Offered {
        ok: 0,
        refused: 0,
        latencies: Vec::new(),
    };
    for call in calls {
        match call.await.unwrap() {
            (Ok(_), latency) => {
                offered.ok += 1;
                offered.latencies.push(latency);
            }
            (Err(status), _) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let reason = status
                    .get_error_details()
                    .error_info()
                    .unwrap()
                    .reason
                    .clone();
                assert_eq!(reason, "RATE_LIMITED", "{status:?}");
                offered.refused += 1;
            }
        }
    }
    offered.latencies.sort();
    offered
}

/// Replicas sharing Connect's quota of 2/s (burst 5) through one bucket, for `elapsed` seconds of
/// a `run`: AWS accepted at most quota x time + burst (10% margin), throttled at most 2% of the
/// attempts, and accepted at least `min_share` of the quota.
pub(crate) fn one_quota_was_shared(
    attempts: usize,
    throttled: usize,
    elapsed: f64,
    run: Duration,
    min_share: f64,
) {
    let accepted = attempts - throttled;
    let allowed = ((2.0 * elapsed + 5.0) * 1.1) as usize;
    assert!(
        accepted <= allowed,
        "{accepted} calls accepted by AWS in {elapsed:.1} s (allowed {allowed})"
    );
    assert!(
        throttled * 50 <= attempts,
        "{throttled} of {attempts} attempts throttled (at most 2%)"
    );
    assert!(
        accepted as f64 >= min_share * 2.0 * run.as_secs_f64(),
        "only {accepted} calls accepted in {elapsed:.1} s"
    );
}

pub(crate) fn as_caller(
    name: &str,
    request: CreatePersistentContactAssociationRequest,
) -> Request<CreatePersistentContactAssociationRequest> {
    let mut request = Request::new(request);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer token-{name}").parse().unwrap(),
    );
    request
}
