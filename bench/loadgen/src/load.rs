//! Applying the load: closed loop (N workers, each calling again when answered) or open loop (calls
//! sent on a fixed schedule whatever the latency, the only honest way to state latency at a rate).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{task::JoinSet, time::Instant};

use crate::{
    RunArgs, TargetKind,
    pacer::{Pacer, Pacing},
    report::{Report, Setup, Stats, own_cpu_seconds},
    target::{CallShape, Target},
};

/// Calls answered so far, for the progress line.
#[derive(Default)]
struct Progress {
    calls: AtomicU64,
    errors: AtomicU64,
}

impl Progress {
    fn count(&self, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Open-loop bookkeeping.
#[derive(Default)]
struct Schedule {
    dropped: u64,
    max_lag: Duration,
    total_lag: Duration,
    sends: u32,
    /// What paced the sends (None in closed loop).
    pacing: Option<&'static str>,
}

pub async fn run(args: RunArgs) -> Result<(), String> {
    let (mode, concurrency, rate) = match (args.concurrency, args.rate) {
        (Some(concurrency), None) if concurrency > 0 => ("closed", Some(concurrency), None),
        (None, Some(rate)) if rate > 0.0 && rate.is_finite() => ("open", None, Some(rate)),
        _ => return Err("give either --concurrency N (> 0) or --rate R (> 0)".into()),
    };
    let connections = args
        .connections
        .unwrap_or_else(|| concurrency.unwrap_or(8).min(8))
        .max(1);
    let target = match args.target {
        TargetKind::Grpc => {
            let ca = match &args.ca {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|err| format!("cannot read {}: {err}", path.display()))?,
                ),
                None => None,
            };
            Target::grpc(
                &args.url,
                connections,
                CallShape::from_args(&args)?,
                ca.as_deref(),
            )
            .await?
        }
        TargetKind::Sdk => Target::sdk(&args.url).await,
        TargetKind::ConnectJson => Target::connect(&args.url, connections, false)?,
        TargetKind::ConnectProto => Target::connect(&args.url, connections, true)?,
    };
    let setup = Setup {
        label: args.label.clone(),
        target: match args.target {
            TargetKind::Grpc => "grpc",
            TargetKind::Sdk => "sdk",
            TargetKind::ConnectJson => "connect-json",
            TargetKind::ConnectProto => "connect-proto",
        },
        url: args.url.clone(),
        mode,
        concurrency,
        rate,
        connections: if args.target != TargetKind::Sdk {
            connections
        } else {
            0
        },
    };

    if !args.warmup.is_zero() {
        drive(
            &target,
            &args,
            args.warmup,
            None,
            &Arc::new(Progress::default()),
        )
        .await;
    }
    let progress = Arc::new(Progress::default());
    let printer = (!args.quiet).then(|| tokio::spawn(print_progress(progress.clone())));
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let (stats, schedule) = drive(&target, &args, args.duration, args.calls, &progress).await;
    let elapsed = started.elapsed();
    let cpu_seconds = own_cpu_seconds() - cpu_before;
    if let Some(printer) = printer {
        printer.abort();
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!();
        }
    }

    let report = Report {
        setup,
        stats,
        elapsed,
        dropped: schedule.dropped,
        max_schedule_lag: schedule.max_lag,
        mean_schedule_lag: schedule
            .total_lag
            .checked_div(schedule.sends)
            .unwrap_or_default(),
        pacing: schedule.pacing,
        cpu_seconds,
    };
    println!("{}", report.summary());
    if let Some(path) = &args.json {
        let text =
            serde_json::to_string_pretty(&report.to_json()).map_err(|err| err.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    }
    Ok(())
}

async fn drive(
    target: &Target,
    args: &RunArgs,
    duration: Duration,
    calls: Option<u64>,
    progress: &Arc<Progress>,
) -> (Stats, Schedule) {
    match (args.concurrency, args.rate) {
        (Some(concurrency), _) => (
            closed_loop(target, concurrency, duration, calls, progress).await,
            Schedule::default(),
        ),
        (_, Some(rate)) => {
            open_loop(
                target,
                rate,
                args.pacing,
                args.max_in_flight,
                duration,
                progress,
            )
            .await
        }
        _ => (Stats::default(), Schedule::default()),
    }
}

async fn closed_loop(
    target: &Target,
    concurrency: usize,
    duration: Duration,
    calls: Option<u64>,
    progress: &Arc<Progress>,
) -> Stats {
    // With a call count, the count ends the run, not the clock.
    let end = Instant::now()
        + if calls.is_some() {
            Duration::from_secs(86_400)
        } else {
            duration
        };
    let remaining = Arc::new(AtomicU64::new(calls.unwrap_or(u64::MAX)));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let target = target.clone();
        let progress = progress.clone();
        let remaining = remaining.clone();
        workers.spawn(async move {
            let mut stats = Stats::default();
            let take = || {
                remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok()
            };
            while Instant::now() < end && take() {
                let sent = Instant::now();
                let outcome = target.call().await;
                progress.count(outcome.is_err());
                let latency = sent.elapsed();
                stats.record(latency, latency, outcome);
            }
            stats
        });
    }
    let mut total = Stats::default();
    while let Some(stats) = workers.join_next().await {
        total.merge(stats.expect("a worker does not panic"));
    }
    total
}

async fn open_loop(
    target: &Target,
    rate: f64,
    pacing: Pacing,
    max_in_flight: usize,
    duration: Duration,
    progress: &Arc<Progress>,
) -> (Stats, Schedule) {
    let mut pacer = Pacer::new(pacing);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end = start + duration;
    let mut stats = Stats::default();
    let mut schedule = Schedule::default();
    let mut in_flight = JoinSet::new();
    let record =
        |stats: &mut Stats, joined: Result<(Duration, Duration, crate::target::Outcome), _>| {
            let (from_due, from_send, outcome) = joined.expect("a call task does not panic");
            progress.count(outcome.is_err());
            stats.record(from_due, from_send, outcome);
        };
    for sequence in 0u32.. {
        let due = start + interval * sequence;
        if due >= end {
            break;
        }
        pacer.until(due).await;
        // How late sends left is reported on its own, and counted in the latency (timed from `due`).
        let lag = Instant::now() - due;
        schedule.max_lag = schedule.max_lag.max(lag);
        schedule.total_lag += lag;
        schedule.sends += 1;
        while let Some(joined) = in_flight.try_join_next() {
            record(&mut stats, joined);
        }
        if in_flight.len() >= max_in_flight {
            schedule.dropped += 1;
            continue;
        }
        let target = target.clone();
        in_flight.spawn(async move {
            let sent = Instant::now();
            let outcome = target.call().await;
            let done = Instant::now();
            (done - due, done - sent, outcome)
        });
    }
    while let Some(joined) = in_flight.join_next().await {
        record(&mut stats, joined);
    }
    schedule.pacing = Some(pacer.name());
    (stats, schedule)
}

async fn print_progress(progress: Arc<Progress>) {
    let started = Instant::now();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = 0;
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        ticker.tick().await;
        let calls = progress.calls.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        let line = format!(
            "[{:>4.0} s] {calls} calls, {}/s, {errors} errors",
            started.elapsed().as_secs_f64(),
            calls - last
        );
        // One line rewritten in place on a terminal; one line per second in a log file.
        if terminal {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
        last = calls;
    }
}
