//! The call's deadline: the caller's own timeout (`grpc-timeout`, or Connect's `Connect-Timeout-Ms`),
//! capped by `--default-deadline`, counted from the call's arrival. The admission step stamps it
//! once, as the request arrives, as a [`Deadline`] request extension; the expiry layer, the
//! adapters and the call service all read that one value.
//!
//! tonic enforces `grpc-timeout` itself, but answers CANCELLED ("Timeout expired"), which callers read
//! as their own cancellation, and it gives handlers no deadline value (its parser is crate-private). So
//! the header is parsed here and the call enforces the deadline, answering DEADLINE_EXCEEDED a
//! little before tonic's own timer, and the caller's, would fire. The arrival is read in the same
//! synchronous `call` that starts tonic's timer: a handler first polled late on a busy runtime would
//! otherwise set its deadline after tonic's and lose the race.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// The timeout a caller asked for in its protocol's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallerTimeout {
    /// No header: the default deadline applies.
    Unset,
    Asked(Duration),
    /// A header that does not parse: the Connect protocol refuses it; for gRPC it is no timeout.
    Malformed,
}

impl CallerTimeout {
    /// The header's value as `parse` reads it.
    pub fn read(value: Option<&http::HeaderValue>, parse: fn(&str) -> Option<Duration>) -> Self {
        match value {
            None => Self::Unset,
            Some(value) => value
                .to_str()
                .ok()
                .and_then(parse)
                .map_or(Self::Malformed, Self::Asked),
        }
    }
}

/// When a call must be answered, stamped once on arrival (a request extension).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    pub at: Instant,
    /// The time the call was given from its arrival.
    pub budget: Duration,
    pub asked: CallerTimeout,
}

impl Deadline {
    /// The deadline of a call arriving at `arrival` with `asked`, under `default`.
    pub fn new(arrival: Instant, asked: CallerTimeout, default: Duration) -> Self {
        let timeout = match asked {
            CallerTimeout::Asked(timeout) => Some(timeout),
            CallerTimeout::Unset | CallerTimeout::Malformed => None,
        };
        let budget = budget(timeout, default);
        Self {
            at: arrival + budget,
            budget,
            asked,
        }
    }

    /// The deadline the admission step stamped on a request, or (for one it never saw) the
    /// default's, from now.
    pub fn of(extensions: &http::Extensions, default: Duration) -> Self {
        extensions
            .get::<Deadline>()
            .copied()
            .unwrap_or_else(|| Deadline::new(Instant::now(), CallerTimeout::Unset, default))
    }
}

/// How much earlier than the caller's deadline the facade answers, so its DEADLINE_EXCEEDED wins the
/// race against tonic's CANCELLED here and reaches the caller before the caller's own timer fires
/// (gRPC clients, tonic's among them, end the call locally at the deadline): 20 ms covers the way
/// back on a busy machine, and at most a tenth of very short deadlines is given up.
const ANSWER_MARGIN: Duration = Duration::from_millis(20);

/// The time a call may take: the caller's own timeout (less a small margin), never more than
/// `default` (`--default-deadline`, also the deadline of a caller that set none or sent one that
/// cannot be parsed): a caller cannot hold a stream, and its buffers, longer than the operator allows.
fn budget(timeout: Option<Duration>, default: Duration) -> Duration {
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
    async fn the_deadline_runs_from_the_arrival() {
        let arrived = Instant::now();
        tokio::time::advance(Duration::from_millis(40)).await;
        let budget = Duration::from_millis(100);
        let deadline = Deadline::new(arrived, CallerTimeout::Unset, budget);
        assert_eq!(deadline.at, arrived + budget);
        let mut extensions = http::Extensions::new();
        extensions.insert(deadline);
        assert_eq!(Deadline::of(&extensions, budget).at, arrived + budget);
        assert_eq!(
            Deadline::of(&http::Extensions::new(), budget).at,
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
        let default = Duration::from_secs(10);
        let call_budget = |header: Option<&str>| {
            let value = header.map(|value| http::HeaderValue::from_str(value).unwrap());
            let asked = CallerTimeout::read(value.as_ref(), parse_grpc_timeout);
            Deadline::new(Instant::now(), asked, default).budget
        };
        assert_eq!(call_budget(None), default);
        assert_eq!(call_budget(Some("500m")), Duration::from_millis(480));
        assert_eq!(call_budget(Some("10m")), Duration::from_millis(9));
        assert_eq!(call_budget(Some("junk")), default);
        assert_eq!(call_budget(Some("1H")), default, "capped by the default");
    }
}

/// `--default-deadline`, shared by the edge and the call service and changed by a reload: a call
/// keeps the deadline it was stamped with on arrival.
#[derive(Clone, Debug)]
pub struct DefaultDeadline(Arc<AtomicU64>);

impl DefaultDeadline {
    pub fn new(deadline: Duration) -> Self {
        Self(Arc::new(AtomicU64::new(micros(deadline))))
    }

    /// The deadline of a call that asks for none, now.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, deadline: Duration) {
        self.0.store(micros(deadline), Ordering::Relaxed);
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
