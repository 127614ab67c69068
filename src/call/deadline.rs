//! The call's deadline: the caller's own timeout, read by its protocol's adapter from the
//! `grpc-timeout` request header (or Connect's `Connect-Timeout-Ms`), capped by `--default-deadline`,
//! and counted from the call's arrival.
//!
//! tonic enforces `grpc-timeout` itself, but answers CANCELLED ("Timeout expired"), which callers read
//! as their own cancellation, and it gives handlers no deadline value (its parser is crate-private). So
//! the header is parsed here and the handler enforces the deadline, answering DEADLINE_EXCEEDED a
//! little before tonic's own timer, and the caller's, would fire.
//!
//! The budget runs from the call's arrival, stamped by [`stamp_arrival`] in the same synchronous
//! `call` that starts tonic's timer: a handler first polled late on a busy runtime (tonic's timer
//! already running) would otherwise set its deadline after tonic's and lose the race.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// When the call reached the server's service stack (a request extension).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrival(Instant);

/// Stamps a request with its [`Arrival`]; the server runs it as a `MapRequestLayer`.
pub fn stamp_arrival<B>(mut request: http::Request<B>) -> http::Request<B> {
    request.extensions_mut().insert(Arrival(Instant::now()));
    request
}

/// When this call's deadline falls: its arrival (now, for a request that was never stamped) plus
/// its budget.
pub(crate) fn deadline(extensions: &http::Extensions, budget: Duration) -> Instant {
    extensions
        .get::<Arrival>()
        .map_or_else(Instant::now, |arrival| arrival.0)
        + budget
}

/// How much earlier than the caller's deadline the facade answers, so its DEADLINE_EXCEEDED wins the
/// race against tonic's CANCELLED here and reaches the caller before the caller's own timer fires
/// (gRPC clients, tonic's among them, end the call locally at the deadline): 20 ms covers the way
/// back on a busy machine, and at most a tenth of very short deadlines is given up.
const ANSWER_MARGIN: Duration = Duration::from_millis(20);

/// The caller's `grpc-timeout`, if it sent one that parses (one that does not is no timeout: the
/// default applies).
pub(crate) fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// The time a call may take: the caller's own timeout (less a small margin), never more than
/// `default` (`--default-deadline`, also the deadline of a caller that set none or sent one that
/// cannot be parsed): a caller cannot hold a stream, and its buffers, longer than the operator allows.
pub(crate) fn budget(timeout: Option<Duration>, default: Duration) -> Duration {
    match timeout {
        Some(timeout) => timeout
            .saturating_sub(ANSWER_MARGIN.min(timeout / 10))
            .min(default),
        None => default,
    }
}

/// Parses `Connect-Timeout-Ms`: 1 to 10 digits of milliseconds.
pub fn parse_connect_timeout(value: &str) -> Option<Duration> {
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().map(Duration::from_millis)
}

/// Parses the gRPC wire format: 1 to 8 ASCII digits and a unit (H, M, S, m, u, n).
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_runs_from_the_stamped_arrival() {
        let stamped = stamp_arrival(http::Request::new(()));
        let arrived = Instant::now();
        tokio::time::advance(Duration::from_millis(40)).await;
        let budget = Duration::from_millis(100);
        assert_eq!(deadline(stamped.extensions(), budget), arrived + budget);
        assert_eq!(
            deadline(&http::Extensions::new(), budget),
            Instant::now() + budget,
            "an unstamped request's budget starts now"
        );
    }

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_grpc_timeout("496620u"),
            Some(Duration::from_micros(496_620))
        );
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "S",
            "123",
            "123456789S",
            "12x",
            "-1S",
            "1.5S",
            "١S",
            "1é",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_budget_answers_just_before_the_callers_deadline() {
        let call_budget = |metadata: &MetadataMap, default| budget(grpc_timeout(metadata), default);
        let mut metadata = MetadataMap::new();
        let default = Duration::from_secs(10);
        assert_eq!(call_budget(&metadata, default), default);
        metadata.insert("grpc-timeout", "500m".parse().unwrap());
        assert_eq!(call_budget(&metadata, default), Duration::from_millis(480));
        metadata.insert("grpc-timeout", "10m".parse().unwrap());
        assert_eq!(call_budget(&metadata, default), Duration::from_millis(9));
        metadata.insert("grpc-timeout", "junk".parse().unwrap());
        assert_eq!(call_budget(&metadata, default), default);
        metadata.insert("grpc-timeout", "1H".parse().unwrap());
        assert_eq!(
            call_budget(&metadata, default),
            default,
            "capped by the default"
        );
    }
}
