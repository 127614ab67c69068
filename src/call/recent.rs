//! The last refused or failed calls, for the admin API's answer to "why were the last calls
//! refused": when, by whom, why (the ErrorInfo reason) and with which code, on which instance. No
//! request data beyond the instance id, quoted within the log's bound.

use std::{collections::VecDeque, time::SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tonic::Code;

use crate::{api::error_writer::code_name, clip};

/// How many are kept.
pub const KEPT: usize = 50;

/// One refused or failed call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecentRefusal {
    /// RFC 3339, to the millisecond.
    pub at: String,
    /// The caller's name; `null` without an auth file or before it was known.
    pub caller: Option<String>,
    /// The ErrorInfo reason (`RATE_LIMITED`, `CALLER_UNKNOWN`…).
    pub reason: &'static str,
    /// The gRPC code, as the Connect protocol spells it (`resource_exhausted`…).
    pub code: &'static str,
    /// Empty when the request was refused before its body was read.
    pub instance_id: String,
}

/// The last [`KEPT`], oldest first.
#[derive(Debug, Default)]
pub struct RecentRefusals(Mutex<VecDeque<RecentRefusal>>);

impl RecentRefusals {
    pub(crate) fn record(
        &self,
        code: Code,
        reason: &'static str,
        caller: Option<&str>,
        instance_id: &str,
    ) {
        let refusal = RecentRefusal {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            caller: caller.map(str::to_owned),
            reason,
            code: code_name(code),
            instance_id: clip::Logged(instance_id).to_string(),
        };
        let mut kept = self.0.lock();
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(refusal);
    }

    /// The ones kept, newest first.
    pub fn newest_first(&self) -> Vec<RecentRefusal> {
        self.0.lock().iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_fifty_are_kept_newest_first_with_the_instance_clipped() {
        let recent = RecentRefusals::default();
        for n in 0..60 {
            recent.record(
                Code::ResourceExhausted,
                "RATE_LIMITED",
                Some("billing"),
                &format!("i-{n}"),
            );
        }
        recent.record(
            Code::Unauthenticated,
            "CALLER_UNKNOWN",
            None,
            &"x".repeat(1000),
        );
        let kept = recent.newest_first();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].code, "unauthenticated");
        assert!(kept[0].instance_id.len() < 200, "{}", kept[0].instance_id);
        assert_eq!(kept[1].instance_id, "i-59");
        assert_eq!(kept[KEPT - 1].instance_id, "i-11");
    }
}
