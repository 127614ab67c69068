//! Fault injection: rules that make the simulator misbehave the way AWS and networks do, so the facade's
//! error mapping and (later) retries can be proven end to end. A rule applies to one instance or to all,
//! always or for the first `times` matching requests.

use std::str::FromStr;

use serde::Deserialize;

/// One fault rule.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Fault {
    /// Only requests for this instance; all instances when absent.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Only the first `times` matching requests; every one when absent.
    #[serde(default)]
    pub times: Option<u32>,
    #[serde(flatten)]
    pub effect: FaultEffect,
}

/// What a fault does to a request.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultEffect {
    /// Answer this AWS error code (with its modelled HTTP status unless `status` is given).
    Error {
        code: String,
        #[serde(default)]
        status: Option<u16>,
        #[serde(default)]
        message: Option<String>,
    },
    /// Wait this long before handling the request.
    Latency { millis: u64 },
    /// Answer HTTP 200 with a body that is not JSON.
    Unparseable,
    /// Close the connection without answering, before doing anything.
    DropConnection,
    /// Apply the association, then close the connection without answering (the reply is lost).
    DropAfterApply,
}

/// What the rules decided for one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    pub latency_millis: u64,
    /// The first terminal effect (anything but latency), if any.
    pub outcome: Option<FaultEffect>,
}

/// The active rules with how many uses each has left.
#[derive(Clone, Debug, Default)]
pub struct FaultSet {
    rules: Vec<(Fault, Option<u32>)>,
}

impl FaultSet {
    pub fn new(faults: impl IntoIterator<Item = Fault>) -> Self {
        let mut set = Self::default();
        for fault in faults {
            set.add(fault);
        }
        set
    }

    pub fn add(&mut self, fault: Fault) {
        let remaining = fault.times;
        self.rules.push((fault, remaining));
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Applies the rules to a request for `instance_id`, using up one of each matching rule's uses.
    pub fn judge(&mut self, instance_id: &str) -> Verdict {
        let mut verdict = Verdict::default();
        for (fault, remaining) in &mut self.rules {
            if fault
                .instance_id
                .as_deref()
                .is_some_and(|id| id != instance_id)
            {
                continue;
            }
            match remaining {
                Some(0) => continue,
                Some(left) => *left -= 1,
                None => {}
            }
            match &fault.effect {
                FaultEffect::Latency { millis } => verdict.latency_millis += millis,
                other if verdict.outcome.is_none() => verdict.outcome = Some(other.clone()),
                _ => {}
            }
        }
        verdict
    }
}

/// Parses the `--fault` flag: comma-separated `key=value` pairs with the fixture file's keys, such as
/// `kind=error,code=ThrottlingException,times=2` or `kind=latency,millis=300,instance_id=X`.
impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut object = serde_json::Map::new();
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            let value = match key {
                "times" | "millis" | "status" => value
                    .parse::<u64>()
                    .map(serde_json::Value::from)
                    .map_err(|_| format!("{key} must be a whole number, got `{value}`"))?,
                _ => serde_json::Value::from(value),
            };
            object.insert(key.to_owned(), value);
        }
        serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|err| format!("invalid fault `{text}`: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(times: Option<u32>) -> Fault {
        Fault {
            instance_id: None,
            times,
            effect: FaultEffect::Error {
                code: "ThrottlingException".into(),
                status: None,
                message: None,
            },
        }
    }

    #[test]
    fn a_limited_rule_stops_after_its_uses() {
        let mut set = FaultSet::new([throttle(Some(2))]);
        assert!(set.judge("i").outcome.is_some());
        assert!(set.judge("i").outcome.is_some());
        assert_eq!(set.judge("i"), Verdict::default());
    }

    #[test]
    fn rules_for_another_instance_do_not_apply_or_use_up() {
        let mut rule = throttle(Some(1));
        rule.instance_id = Some("other".into());
        let mut set = FaultSet::new([rule]);
        assert_eq!(set.judge("i"), Verdict::default());
        assert!(set.judge("other").outcome.is_some());
    }

    #[test]
    fn latency_adds_up_and_combines_with_an_outcome() {
        let latency = |millis| Fault {
            instance_id: None,
            times: None,
            effect: FaultEffect::Latency { millis },
        };
        let mut set = FaultSet::new([latency(100), throttle(None), latency(50)]);
        let verdict = set.judge("i");
        assert_eq!(verdict.latency_millis, 150);
        assert!(matches!(verdict.outcome, Some(FaultEffect::Error { .. })));
    }

    #[test]
    fn the_flag_syntax_reads_like_the_fixture_file() {
        let fault: Fault = "kind=error,code=ThrottlingException,times=2,instance_id=abc"
            .parse()
            .unwrap();
        assert_eq!(
            fault,
            Fault {
                times: Some(2),
                instance_id: Some("abc".into()),
                ..throttle(None)
            }
        );
        assert_eq!(
            "kind=drop_after_apply".parse::<Fault>().unwrap().effect,
            FaultEffect::DropAfterApply
        );
        assert!("kind=latency,millis=soon".parse::<Fault>().is_err());
        assert!("kind=explode".parse::<Fault>().is_err());
    }
}
