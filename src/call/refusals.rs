//! Requests refused before they became a call (on their headers at admission, or a body the
//! Connect edge cannot read) are counted and logged as failed calls are: the same gRPC series, the
//! same `rpc finished` line with the peer's address, within the same log budget. One value, shared
//! by the edge and the call service.

use std::{net::SocketAddr, sync::Arc};

use super::{CallRecord, attempts_metadata, call_log, metrics::RpcMetrics, recent::RecentRefusals};
use crate::{
    auth,
    error::CallError,
    proto::RPC_METHOD,
    status::{ErrorAnswer, FailedCall},
};

#[derive(Clone, Debug)]
pub(crate) struct Refusals {
    metrics: Arc<RpcMetrics>,
    lines: Arc<call_log::FailedCallLines>,
    recent: Arc<RecentRefusals>,
}

impl Refusals {
    pub fn new(metrics: Arc<RpcMetrics>) -> Self {
        Self {
            lines: Arc::new(call_log::FailedCallLines::new(
                call_log::FAILED_CALL_LINES_PER_SECOND,
                metrics.clone(),
            )),
            metrics,
            recent: Arc::default(),
        }
    }

    /// The last refused or failed calls, the edge's refusals included.
    pub fn recent(&self) -> &Arc<RecentRefusals> {
        &self.recent
    }

    /// The calls' metrics, for the edge's own series (calls by protocol, refusals on headers).
    pub fn metrics(&self) -> &RpcMetrics {
        &self.metrics
    }

    /// Writes the count of failed-call lines left out since the last report (at shutdown).
    pub fn flush_log(&self) {
        self.lines.flush();
    }

    /// The failed-call lines' budget, which calls and refusals share.
    pub(super) fn lines(&self) -> &call_log::FailedCallLines {
        &self.lines
    }

    /// A request refused before it became a call, counted and logged (sampled) as a failed call.
    pub fn refuse(&self, error: CallError, extensions: &http::Extensions) -> ErrorAnswer {
        self.refuse_because(error, None, extensions)
    }

    /// [`Self::refuse`], with the precise `cause` in the log line (never in the answer: a caller
    /// refused UNAUTHENTICATED learns nothing of which check its token failed).
    pub fn refuse_because(
        &self,
        error: CallError,
        cause: Option<&'static str>,
        extensions: &http::Extensions,
    ) -> ErrorAnswer {
        let reason = error.reason();
        let answer = ErrorAnswer::from(FailedCall {
            error,
            instance_id: String::new(),
            client_token: None,
            metadata: attempts_metadata(0),
        });
        self.record(&answer, reason, cause, auth::peer_address(extensions));
        answer
    }

    /// Counts and logs (sampled, with the peer) an answer the edge wrote itself: a request whose
    /// body did not arrive by its deadline.
    pub fn record(
        &self,
        answer: &ErrorAnswer,
        reason: &'static str,
        cause: Option<&'static str>,
        peer: Option<SocketAddr>,
    ) {
        self.metrics.rpc_started().answered(answer.code);
        self.recent.record(answer.code, reason, None, "");
        if self.lines.admit(peer.map(|peer| peer.ip())) {
            let span = tracing::info_span!(
                "rpc",
                method = RPC_METHOD,
                peer = peer.map(tracing::field::display),
                cause,
            );
            let record = CallRecord {
                reason: Some(reason),
                ..CallRecord::default()
            };
            span.in_scope(|| call_log::write(answer.code, &record, 0.0));
        }
    }
}
