//! What a run measured: an HDR histogram of latencies, outcomes by code, the process's own CPU and
//! memory; printed as a summary and written as JSON.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::target::Outcome;

/// Latencies (µs, 3 significant digits, up to 60 s) and outcomes.
pub struct Stats {
    /// From when each call was due: in open loop a send the generator made late still counts its
    /// lateness, as a caller sending on schedule would see it (no coordinated omission: a stall of
    /// the generator's own core cannot hide from the figures). In closed loop, from the send.
    histogram: Histogram<u64>,
    /// From the actual send.
    from_send: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            from_send: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Stats {
    /// One call: its latency from when it was due and from when it was sent.
    pub fn record(&mut self, from_due: Duration, from_send: Duration, outcome: Outcome) {
        self.histogram.saturating_record(micros(from_due).max(1));
        self.from_send.saturating_record(micros(from_send).max(1));
        match outcome {
            Ok(()) => self.ok += 1,
            Err(code) => *self.errors.entry(code).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: Stats) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with the same bounds");
        self.from_send
            .add(&other.from_send)
            .expect("histograms with the same bounds");
        self.ok += other.ok;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
    }

    pub fn calls(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
}

/// How the load was applied.
pub struct Setup {
    pub label: String,
    pub target: &'static str,
    pub url: String,
    pub mode: &'static str,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub connections: usize,
}

impl Setup {
    /// What latencies are timed from: in open loop each call's due time (see [`Stats`]).
    fn latency_timed_from(&self) -> &'static str {
        if self.mode == "open" { "due" } else { "send" }
    }
}

/// Whole microseconds, saturating (a histogram or JSON value cannot hold more).
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// This process's CPU time (user + system) so far, from /proc (Linux's USER_HZ is 100).
pub fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at field 3.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

/// This process's peak resident memory (VmHWM), KiB.
pub fn own_peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmHWM:")
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

pub struct Report {
    pub setup: Setup,
    pub stats: Stats,
    pub elapsed: Duration,
    pub dropped: u64,
    pub max_schedule_lag: Duration,
    pub mean_schedule_lag: Duration,
    pub pacing: Option<&'static str>,
    pub cpu_seconds: f64,
}

impl Report {
    pub fn throughput(&self) -> f64 {
        self.stats.calls() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&self, quantile: f64) -> u64 {
        self.stats.histogram.value_at_quantile(quantile)
    }

    fn percentiles(histogram: &Histogram<u64>) -> serde_json::Value {
        json!({
            "p50": histogram.value_at_quantile(0.5),
            "p90": histogram.value_at_quantile(0.9),
            "p99": histogram.value_at_quantile(0.99),
            "p999": histogram.value_at_quantile(0.999),
            "max": histogram.max(),
            "mean": histogram.mean(),
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        let calls = self.stats.calls();
        json!({
            "label": self.setup.label,
            "target": self.setup.target,
            "url": self.setup.url,
            "mode": self.setup.mode,
            "concurrency": self.setup.concurrency,
            "rate": self.setup.rate,
            "connections": self.setup.connections,
            "duration_s": self.elapsed.as_secs_f64(),
            "calls": calls,
            "ok": self.stats.ok,
            "errors": self.stats.errors,
            "dropped": self.dropped,
            "throughput_per_s": self.throughput(),
            "latency_timed_from": self.setup.latency_timed_from(),
            "latency_us": Self::percentiles(&self.stats.histogram),
            "latency_from_send_us": Self::percentiles(&self.stats.from_send),
            "pacing": self.pacing,
            "max_schedule_lag_us": micros(self.max_schedule_lag),
            "mean_schedule_lag_us": micros(self.mean_schedule_lag),
            "loadgen": {
                "cpu_s": self.cpu_seconds,
                "cpu_ms_per_1000_calls": if calls == 0 { 0.0 } else { self.cpu_seconds * 1e6 / calls as f64 },
                "peak_rss_kib": own_peak_rss_kib(),
            },
        })
    }

    pub fn summary(&self) -> String {
        let errors = if self.stats.errors.is_empty() {
            "none".to_owned()
        } else {
            self.stats
                .errors
                .iter()
                .map(|(code, count)| format!("{code}={count}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let load = match (self.setup.concurrency, self.setup.rate) {
            (Some(concurrency), _) => format!("closed loop, concurrency {concurrency}"),
            (_, Some(rate)) => format!(
                "open loop, {rate}/s paced by {}",
                self.pacing.unwrap_or("nothing")
            ),
            _ => String::new(),
        };
        format!(
            "{label} {target} {url}: {load}, {connections} connection(s), {secs:.1} s\n  \
             calls {calls} ({tput:.0}/s)  ok {ok}  errors: {errors}  dropped {dropped}\n  \
             latency µs{timed}  p50 {p50}  p90 {p90}  p99 {p99}  p99.9 {p999}  max {max}\n  \
             loadgen CPU {cpu:.2} s",
            label = self.setup.label,
            timed = if self.setup.latency_timed_from() == "due" {
                " (from due times)"
            } else {
                ""
            },
            target = self.setup.target,
            url = self.setup.url,
            connections = self.setup.connections,
            secs = self.elapsed.as_secs_f64(),
            calls = self.stats.calls(),
            tput = self.throughput(),
            ok = self.stats.ok,
            dropped = self.dropped,
            p50 = self.percentile(0.5),
            p90 = self.percentile(0.9),
            p99 = self.percentile(0.99),
            p999 = self.percentile(0.999),
            max = self.stats.histogram.max(),
            cpu = self.cpu_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_outcomes_and_merge() {
        let mut a = Stats::default();
        let us = Duration::from_micros;
        a.record(us(100), us(90), Ok(()));
        a.record(us(300), us(300), Err("Unavailable".into()));
        let mut b = Stats::default();
        b.record(us(200), us(150), Ok(()));
        b.record(Duration::ZERO, Duration::ZERO, Err("Unavailable".into()));
        a.merge(b);
        assert_eq!(a.calls(), 4);
        assert_eq!(a.ok, 2);
        assert_eq!(a.errors["Unavailable"], 2);
        assert_eq!(a.histogram.len(), 4);
        assert!((199..=201).contains(&a.histogram.value_at_quantile(0.75)));
        assert!((149..=151).contains(&a.from_send.value_at_quantile(0.75)));
    }

    #[test]
    fn own_process_figures_are_read() {
        // Spins until the kernel has charged some CPU time (10 ms ticks; a loaded machine may
        // give this thread little of the wall time).
        let spin = std::time::Instant::now();
        while own_cpu_seconds() == 0.0 {
            assert!(
                spin.elapsed() < Duration::from_secs(10),
                "no CPU time counted"
            );
        }
        assert!(own_peak_rss_kib() > 0);
    }
}
