#!/usr/bin/env python3
"""Measures replicas sharing one AWS quota and writes docs/SCALING.md (run through scripts/scaling.sh).

Everything is real: facade processes, a simulator process enforcing Connect's quota (2 requests/s,
burst 5), redis-server processes of the script's own (never the machine's 6379), and loadgen sending
an open-loop load spread over the replicas as a Kubernetes Service would.

1. Quota use: 1 to 4 replicas, at 3x the quota (6 calls/s), with the store local (each replica at the
   flags' default 2/s, and at deploy/'s base ConfigMap's 1/s, the quota divided by its 2 replicas,
   whatever the HPA makes of them) and on Redis. For each: the AWS calls that
   succeeded as a share of the quota, the throttled share of attempts, and the callers' p50/p99.
2. What Redis costs: one replica per store at an unlimited rate, the local store against a
   standalone Redis, a Redis Cluster and a Sentinel group, in interleaved rounds: added p50 latency
   at concurrency 1, CPU per call at concurrency 16.
3. Redis failing under 3x the quota: killed (2 and 4 replicas), hung (SIGSTOP), and a failover on
   Sentinel and on a cluster: calls answered, the slowest answer, the quota used and the attempts
   throttled while Redis is away, and how long until the replicas are back on Redis.
4. Callers sharing the quota (an auth file): a caller offering 10x the quota beside one offering 0.25x,
   with and without its own auth identity (one caller: arrival order), and two saturating callers
   at weights 3:1: successful calls per caller.
5. Fair shares across replicas: callers pinned to replicas sharing one Redis (weights 3:1 over 2
   replicas, 3:1:1 over 3, quiet callers beside a flood), successes, p50 and Redis round trips; and
   what the shares cost a call.
6. Replay and coalescing: a client whose deadline (300 ms) is shorter than AWS's answer (400 ms)
   retries every call once (its token, or none); quota slots spent and calls answered, replay on and off.
7. What the replay cache costs per call: a caller's own token (unique per call, a lookup that misses
   and an answer kept), a repeated token (replayed), and no token (the cache skipped), in memory and
   with Redis; and the facade's RSS after 1,000,000 distinct tokens through the in-memory cache.

The AWS side is read from the facades' own metrics (connect_facade_upstream_attempts_total by
outcome), summed over replicas; the callers' side from loadgen's JSON.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import report
from local_server import ROOT, Processes, auth_file, free_port, redis_cli, scrape, series_sum, wait_port

REPLAY_CAPACITIES = [20_000, 100_000]  # the default, and a larger bound
QUOTA_RATE = 2.0
QUOTA_BURST = 5
OFFERED = 3 * QUOTA_RATE  # calls/s: 3x the quota
SERVICE = "mymaster"  # the sentinels' name for the master
QUOTA_KEY = "connect-facade:{us-east-1}:account"  # the account's bucket (src/quota/shared.rs)
MAX_QUEUE_WAIT_S, STORE_TIMEOUT_S = 3.0, 0.1  # the flags' defaults
# A call's bound while Redis fails: its wait for slots, the store's one timeout, AWS's own time.
ANSWER_BOUND_S = MAX_QUEUE_WAIT_S + STORE_TIMEOUT_S + 0.3


class Bench:
    def __init__(self, args, processes):
        self.bin = args.bin
        self.p = processes
        self.cpus = os.cpu_count() or 1
        # Facades on CPU 0, everything else on the last CPU (the same CPU on a 1-CPU machine).
        self.app_cpu = 0
        self.load_cpu = self.cpus - 1

    def simulator(self, quota=True, faults=()):
        flags = ["--fixtures", "fixtures/bench.yaml"]
        if quota:
            flags += ["--quota-rate", str(QUOTA_RATE), "--quota-burst", str(QUOTA_BURST)]
        for fault in faults:
            flags += ["--fault", fault]
        return self.p.simulator(f"{self.bin}/connect-facade", flags, cpu=self.load_cpu)

    def redis(self, port=None):
        return self.p.redis(port, cpu=self.load_cpu)

    def facade(self, simulator_url, flags):
        port, metrics = free_port(), free_port()
        env = {"AWS_ACCESS_KEY_ID": "AKIDSCALING", "AWS_SECRET_ACCESS_KEY": "scaling-secret",
               "AWS_EC2_METADATA_DISABLED": "true", "RUST_LOG": "info"}
        argv = [f"{self.bin}/connect-facade", "serve", "--listen", f"127.0.0.1:{port}",
                "--metrics-listen", f"127.0.0.1:{metrics}", "--region", "us-east-1",
                "--endpoint-url", simulator_url, "--log-format", "json"] + flags
        process = self.p.start(f"facade-{port}", argv, cpu=self.app_cpu, env=env)
        wait_port(port)
        wait_port(metrics)
        return {"process": process, "url": f"http://127.0.0.1:{port}", "metrics": metrics}

    def loadgen(self, urls, extra, label):
        out = os.path.join(self.p.work, f"{label}.json")
        argv = [f"{self.bin}/loadgen", "run", "--url", ",".join(urls), "--warmup", "0s",
                "--json", out, "--quiet", "--label", label] + extra
        return self.p.start(f"loadgen-{label}", argv, cpu=self.load_cpu), out


def attempts(replicas):
    """AWS attempts over every replica: (succeeded, throttled, all)."""
    ok = throttled = every = 0.0
    for replica in replicas:
        text = scrape(replica["metrics"])
        ok += series_sum(text, "connect_facade_upstream_attempts_total", 'outcome="ok"')
        throttled += series_sum(text, "connect_facade_upstream_attempts_total", 'outcome="Throttling"')
        every += series_sum(text, "connect_facade_upstream_attempts_total")
    return ok, throttled, every


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quota_use(bench, replicas, store, duration):
    """One run of the quota table; returns its row."""
    simulator, sim_url = bench.simulator()
    redis = None
    if store == "redis":
        redis, redis_port = bench.redis()
        flags = ["--quota-store", f"redis://127.0.0.1:{redis_port}", "--rate-limit", str(QUOTA_RATE)]
        rate = QUOTA_RATE
    elif store == "local":
        flags, rate = ["--rate-limit", str(QUOTA_RATE)], QUOTA_RATE
    else:  # deploy/'s base ConfigMap: the quota divided by hand for 2 replicas
        rate = 1.0
        flags = ["--rate-limit", "1", "--rate-burst", "2"]
    facades = [bench.facade(sim_url, flags) for _ in range(replicas)]
    load, out = bench.loadgen([f["url"] for f in facades],
                              ["--rate", f"{OFFERED:g}", "--duration", f"{duration}s",
                               "--connections", str(replicas)], f"quota-{store}-{replicas}")
    load.wait()
    ok, throttled, every = attempts(facades)
    report = json.load(open(out))
    for process in [f["process"] for f in facades] + [simulator] + ([redis] if redis else []):
        bench.p.stop(process)
    return {
        "replicas": replicas, "store": store, "rate_per_replica": rate,
        "duration_s": report["duration_s"], "calls": report["calls"], "ok_calls": report["ok"],
        "errors": report["errors"], "aws_ok": ok, "aws_throttled": throttled, "aws_attempts": every,
        "quota_share": ok / (QUOTA_RATE * report["duration_s"]),
        "throttled_share": throttled / every if every else 0.0,
        "p50_ms": report["latency_us"]["p50"] / 1000, "p99_ms": report["latency_us"]["p99"] / 1000,
    }


def redis_cost(bench, rounds, duration):
    """The local store against each Redis topology at an unlimited rate, interleaved rounds; medians
    per store. redis-server's CPU is every node's (the cluster's three masters, the sentinel group's
    master, replica and sentinels)."""
    simulator, sim_url = bench.simulator(quota=False)
    redis, redis_port = bench.redis()
    cluster = bench.p.redis_cluster(3, 0, cpu=bench.load_cpu)
    master, replica, sentinels = bench.p.redis_sentinels(SERVICE, cpu=bench.load_cpu)
    unlimited = ["--rate-limit", "1000000", "--rate-burst", "1000000"]
    seeds = ",".join(f"127.0.0.1:{port}" for _, port in cluster)
    watchers = ",".join(f"127.0.0.1:{port}" for _, port in sentinels)
    stores = {"local": unlimited,
              "redis": unlimited + ["--quota-store", f"redis://127.0.0.1:{redis_port}"],
              "cluster": unlimited + ["--quota-store", f"redis+cluster://{seeds}"],
              "sentinel": unlimited + ["--quota-store", f"redis+sentinel://{watchers}/{SERVICE}"]}
    servers = {"local": [], "redis": [redis], "cluster": [p for p, _ in cluster],
               "sentinel": [p for p, _ in [master, replica] + sentinels]}
    facades = {name: bench.facade(sim_url, flags) for name, flags in stores.items()}
    samples = {name: {"p50_us": [], "cpu_us_per_call": [], "redis_cpu_us_per_call": [],
                      "calls_per_s": []} for name in stores}
    for round_ in range(rounds):
        order = list(stores) if round_ % 2 == 0 else list(reversed(stores))
        for name in order:
            facade = facades[name]
            load, out = bench.loadgen([facade["url"]], ["--concurrency", "1", "--duration", f"{duration}s"],
                                      f"cost-{name}-c1-{round_}")
            load.wait()
            samples[name]["p50_us"].append(json.load(open(out))["latency_us"]["p50"])
            before = cpu_seconds(facade["process"].pid)
            redis_before = sum(cpu_seconds(p.pid) for p in servers[name])
            load, out = bench.loadgen([facade["url"]], ["--concurrency", "16", "--duration", f"{duration}s"],
                                      f"cost-{name}-c16-{round_}")
            load.wait()
            report = json.load(open(out))
            calls = max(report["calls"], 1)
            samples[name]["cpu_us_per_call"].append(
                (cpu_seconds(facade["process"].pid) - before) * 1e6 / calls)
            samples[name]["redis_cpu_us_per_call"].append(
                (sum(cpu_seconds(p.pid) for p in servers[name]) - redis_before) * 1e6 / calls)
            samples[name]["calls_per_s"].append(report["throughput_per_s"])
    for process in [f["process"] for f in facades.values()] + [simulator] + sum(servers.values(), []):
        bench.p.stop(process)
    return {name: {key: statistics.median(values) for key, values in s.items()} | {"rounds": s}
            for name, s in samples.items()}


FAILURES = [  # (case, replicas, topology): 3x the quota offered, the fault in the middle third
    ("killed", 2, "redis"),
    ("killed", 4, "redis"),
    ("hung", 2, "redis"),
    ("failover", 2, "sentinel"),
    ("failover", 2, "cluster"),
]


def stores_up(facades):
    return all(series_sum(scrape(f["metrics"]), "connect_facade_quota_store_up") == 1.0 for f in facades)


def cluster_master(nodes, dead=()):
    """The port of the live node that serves QUOTA_KEY's slot itself (the others redirect), if any."""
    for _, port in nodes:
        if port not in dead and redis_cli(port, "EXISTS", QUOTA_KEY).strip() in ("0", "1"):
            return port
    return None


def failure(bench, case, replicas, topology, phase):
    """Replicas on Redis at 3x the quota for three phases of `phase` seconds: Redis up; the fault
    (killed: SIGKILL; hung: SIGSTOP, so connections are accepted and never answered; failover: the
    master SIGKILLed, a replica promoted); recovered (killed: started again, empty; hung: SIGCONT;
    failover: the promoted master)."""
    simulator, sim_url = bench.simulator()
    if topology == "redis":
        redis, port = bench.redis()
        nodes, url = [(redis, port)], f"redis://127.0.0.1:{port}"
    elif topology == "sentinel":
        master, replica, sentinels = bench.p.redis_sentinels(SERVICE, cpu=bench.load_cpu)
        nodes = [master, replica] + sentinels
        url = f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for _, p in sentinels)}/{SERVICE}"
    else:
        nodes = bench.p.redis_cluster(3, 1, cpu=bench.load_cpu)
        url = f"redis+cluster://{','.join(f'127.0.0.1:{p}' for _, p in nodes[:3])}"
    flags = ["--quota-store", url, "--rate-limit", str(QUOTA_RATE)]
    facades = [bench.facade(sim_url, flags) for _ in range(replicas)]
    label = f"failure-{case}-{topology}-{replicas}"
    load, out = bench.loadgen([f["url"] for f in facades],
                              ["--rate", f"{OFFERED:g}", "--duration", f"{3 * phase}s",
                               "--connections", str(replicas), "--deadline", "5s"], label)
    started = time.time()
    marks = [attempts(facades)]

    def until(moment):
        time.sleep(max(0.0, started + moment - time.time()))

    until(phase)
    marks.append(attempts(facades))
    fault_at = time.time()
    victim, victim_port = nodes[0]
    if topology == "cluster":
        victim_port = cluster_master(nodes)
        victim = next(p for p, port in nodes if port == victim_port)
    if case == "hung":
        victim.send_signal(19)  # SIGSTOP
    else:
        victim.kill()
    back_from = None
    if case == "failover":
        def promoted():
            if topology == "sentinel":
                answer = redis_cli(nodes[2][1], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE).split()
                return len(answer) == 2 and answer[1] != str(victim_port)
            return cluster_master(nodes, dead=(victim_port,)) is not None
        while not promoted() and time.time() < started + 3 * phase:
            time.sleep(0.05)
        back_from = time.time() if promoted() else None
    else:
        until(2 * phase)
        if case == "hung":
            victim.send_signal(18)  # SIGCONT
        else:
            bench.redis(victim_port)
        back_from = time.time()
    back_after = None
    while back_from is not None and time.time() < started + 3 * phase:
        if stores_up(facades):
            back_after = time.time() - back_from
            break
        time.sleep(0.05)
    back_at = time.time()
    marks.append(attempts(facades))
    load.wait()
    marks.append(attempts(facades))
    report = json.load(open(out))
    store_errors = sum(series_sum(scrape(f["metrics"]), "connect_facade_quota_store_errors_total")
                       for f in facades)
    bench.p.stop_all()  # the facades, the simulator, every Redis (the restarted one included)
    away = [b - a for a, b in zip(marks[1], marks[2])]
    after = [b - a for a, b in zip(marks[2], marks[3])]
    away_s = back_at - fault_at
    unanswered = sum(report["errors"].get(code, 0) for code in ("DeadlineExceeded", "Cancelled", "Unknown"))
    return {"case": case, "replicas": replicas, "topology": topology, "phase_s": phase,
            "calls": report["calls"], "ok_calls": report["ok"], "errors": report["errors"],
            "unanswered": unanswered, "slowest_s": report["latency_us"]["max"] / 1e6,
            "away_s": away_s, "away_quota_share": away[0] / (QUOTA_RATE * away_s),
            "away_throttled": away[1], "away_attempts": away[2],
            "away_throttled_share": away[1] / away[2] if away[2] else 0.0,
            "after_throttled": after[1], "after_attempts": after[2],
            "back_after_s": back_after, "store_errors": store_errors,
            "phases": [{"aws_ok": b[0] - a[0], "aws_throttled": b[1] - a[1], "aws_attempts": b[2] - a[2]}
                       for a, b in zip(marks, marks[1:])]}


def failures(bench, phase):
    rows = []
    for case, replicas, topology in FAILURES:
        row = failure(bench, case, replicas, topology, phase)
        print(f"failure: {json.dumps(row)}", flush=True)
        rows.append(row)
    return rows


FLEET_CASES = [  # (case, {caller: (weight, replica, offered x quota)}, replicas, auth file)
    ("2 replicas, weights 3:1, each caller on its own replica",
     {"heavy": (3, 0, 5), "light": (1, 1, 5)}, 2, True),
    ("3 replicas, weights 3:1:1, each caller on its own replica",
     {"heavy": (3, 0, 5), "light": (1, 1, 5), "other": (1, 2, 5)}, 3, True),
    ("2 replicas, a flood (10x) and quiet callers (0.25x) on its replica and on the other",
     {"flood": (1, 0, 10), "quiet-here": (1, 0, 0.25), "quiet-there": (1, 1, 0.25)}, 2, True),
    ("2 replicas, two floods (5x) and no auth file (one caller: no shares, as before)",
     {"a": (1, 0, 5), "b": (1, 1, 5)}, 2, False),
]


def store_round_trips(facades):
    return sum(series_sum(scrape(f["metrics"]), "connect_facade_quota_store_round_trip_seconds_count")
               for f in facades)


def fleet_sharing(bench, duration):
    """Callers pinned to replicas sharing one Redis: per-caller successes, p50 and Redis round trips."""
    runs = []
    for title, callers, replicas, with_auth in FLEET_CASES:
        simulator, sim_url = bench.simulator()
        redis, redis_port = bench.redis()
        flags = ["--quota-store", f"redis://127.0.0.1:{redis_port}"]
        if with_auth:
            flags += ["--auth-file", auth_file(bench.p.work, {n: (w, None) for n, (w, _, _) in callers.items()})]
        facades = [bench.facade(sim_url, flags) for _ in range(replicas)]
        trips_before = store_round_trips(facades)
        loads = []
        for name, (weight, replica, times) in callers.items():
            extra = ["--rate", f"{times * QUOTA_RATE:g}", "--duration", f"{duration}s", "--deadline", "10s"]
            if with_auth:
                extra += ["--bearer", f"token-{name}"]
            loads.append((name, weight, replica, times)
                         + bench.loadgen([facades[replica]["url"]], extra, f"fleet-{name}-{len(runs)}"))
        row = {"case": title, "callers": []}
        for name, weight, replica, times, load, out in loads:
            load.wait()
            report = json.load(open(out))
            row["callers"].append({"name": name, "weight": weight, "replica": replica,
                                   "offered_per_s": times * QUOTA_RATE, "calls": report["calls"],
                                   "ok": report["ok"], "p50_ms": report["latency_us"]["p50"] / 1000})
        ok, throttled, every = attempts(facades)
        row.update(aws_ok=ok, aws_throttled=throttled, aws_attempts=every, duration_s=duration,
                   round_trips=store_round_trips(facades) - trips_before,
                   calls=sum(c["calls"] for c in row["callers"]))
        for process in [f["process"] for f in facades] + [simulator, redis]:
            bench.p.stop(process)
        runs.append(row)
        print(f"fleet: {json.dumps(row)}", flush=True)
    return runs


def fleet_cost(bench, rounds, duration):
    """What fleet-wide shares cost a call: one replica at an unlimited rate, with and without an auth
    file (one caller), on the local store and on Redis, interleaved rounds. The local store has no
    shares, so (redis with - redis without) - (local with - local without) is the shares' own cost."""
    simulator, sim_url = bench.simulator(quota=False)
    redis, redis_port = bench.redis()
    unlimited = ["--rate-limit", "1000000", "--rate-burst", "1000000"]
    auth = ["--auth-file", auth_file(bench.p.work, {"client": (1, None)})]
    shared = ["--quota-store", f"redis://127.0.0.1:{redis_port}"]
    configs = {"local": unlimited, "local+auth": unlimited + auth, "redis": unlimited + shared,
               "redis+auth": unlimited + shared + auth}
    facades = {name: bench.facade(sim_url, flags) for name, flags in configs.items()}
    samples = {name: {"p50_us": [], "cpu_us_per_call": [], "round_trips_per_call": []} for name in configs}
    for round_ in range(rounds):
        order = list(configs) if round_ % 2 == 0 else list(reversed(configs))
        for name in order:
            facade = facades[name]
            bearer = ["--bearer", "token-client"] if "auth" in name else []
            load, out = bench.loadgen([facade["url"]], ["--concurrency", "1", "--duration", f"{duration}s"]
                                      + bearer, f"fleet-cost-{name}-c1-{round_}")
            load.wait()
            samples[name]["p50_us"].append(json.load(open(out))["latency_us"]["p50"])
            before, trips = cpu_seconds(facade["process"].pid), store_round_trips([facade])
            load, out = bench.loadgen([facade["url"]], ["--concurrency", "16", "--duration", f"{duration}s"]
                                      + bearer, f"fleet-cost-{name}-c16-{round_}")
            load.wait()
            calls = max(json.load(open(out))["calls"], 1)
            samples[name]["cpu_us_per_call"].append((cpu_seconds(facade["process"].pid) - before) * 1e6 / calls)
            samples[name]["round_trips_per_call"].append((store_round_trips([facade]) - trips) / calls)
    for process in [f["process"] for f in facades.values()] + [simulator, redis]:
        bench.p.stop(process)
    cost = {name: {key: statistics.median(values) for key, values in s.items()} for name, s in samples.items()}
    print(f"fleet cost: {json.dumps(cost)}", flush=True)
    return cost


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sharing(bench, duration):
    """Two callers on one facade at the default limits: per-caller successes."""
    runs = []
    cases = [
        ("flood 10x and quiet 0.25x, one caller (no auth file: arrival order)", None,
         [("flood", 10 * QUOTA_RATE), ("quiet", QUOTA_RATE / 4)]),
        ("flood 10x and quiet 0.25x, two callers (weights 1:1)", {"flood": (1, None), "quiet": (1, None)},
         [("flood", 10 * QUOTA_RATE), ("quiet", QUOTA_RATE / 4)]),
        ("heavy and light both at 5x, weights 3:1", {"heavy": (3, None), "light": (1, None)},
         [("heavy", 5 * QUOTA_RATE), ("light", 5 * QUOTA_RATE)]),
    ]
    for title, callers, offers in cases:
        simulator, sim_url = bench.simulator()
        flags = ["--auth-file", auth_file(bench.p.work, callers)] if callers else []
        facade = bench.facade(sim_url, flags)
        loads = []
        for name, rate in offers:
            extra = ["--rate", f"{rate:g}", "--duration", f"{duration}s", "--deadline", "10s"]
            if callers:
                extra += ["--bearer", f"token-{name}"]
            loads.append((name, rate) + bench.loadgen([facade["url"]], extra, f"sharing-{name}-{len(runs)}"))
        row = {"case": title, "callers": []}
        for name, rate, load, out in loads:
            load.wait()
            report = json.load(open(out))
            row["callers"].append({"name": name, "offered_per_s": rate, "calls": report["calls"],
                                   "ok": report["ok"], "errors": report["errors"]})
        ok, throttled, _ = attempts([facade])
        row["aws_ok"], row["aws_throttled"], row["duration_s"] = ok, throttled, duration
        for process in (facade["process"], simulator):
            bench.p.stop(process)
        runs.append(row)
        print(f"sharing: {json.dumps(row)}", flush=True)
    return runs


def replay_savings(bench, duration):
    """A client that retries every call once after its deadline, AWS slower than that deadline."""
    rows = []
    for replay, tokens in (("10m", "unique"), ("10m", "none"), ("0s", "unique")):
        simulator, sim_url = bench.simulator(faults=["kind=latency,millis=400"])
        flags = ["--auth-file", auth_file(bench.p.work, {"client": (1, None)}), "--replay-window", replay]
        facade = bench.facade(sim_url, flags)
        load, out = bench.loadgen([facade["url"]], ["--rate", "1", "--duration", f"{duration}s",
                                                    "--tokens", tokens, "--deadline", "300ms",
                                                    "--retry-after-timeout", "--bearer", "token-client"],
                                  f"replay-{replay}-{tokens}")
        load.wait()
        time.sleep(1)  # the AWS calls whose callers left finish
        report = json.load(open(out))
        text = scrape(facade["metrics"])
        slots = series_sum(text, "connect_facade_caller_quota_slots_total")
        row = {"replay": replay != "0s", "tokens": tokens, "calls": report["calls"], "ok": report["ok"],
               "errors": report["errors"], "slots": slots,
               "aws_ok": series_sum(text, "connect_facade_upstream_attempts_total", 'outcome="ok"'),
               "replays": series_sum(text, "connect_facade_replays_total"),
               "coalesced": series_sum(text, "connect_facade_coalesced_calls_total")}
        for process in (facade["process"], simulator):
            bench.p.stop(process)
        rows.append(row)
        print(f"replay: {json.dumps(row)}", flush=True)
    return rows


def lookup_cost(bench, rounds, duration, million):
    """The replay cache's cost per call, and RSS after `million` distinct tokens."""
    simulator, sim_url = bench.simulator(quota=False)
    redis, redis_port = bench.redis()
    unlimited = ["--rate-limit", "1000000", "--rate-burst", "1000000"]
    facades = {"memory": bench.facade(sim_url, unlimited),
               "redis": bench.facade(sim_url, unlimited + ["--quota-store", f"redis://127.0.0.1:{redis_port}"])}
    cases = [("memory", "none"), ("memory", "unique"), ("memory", "repeat"), ("redis", "unique"),
             ("redis", "repeat")]
    samples = {f"{store}/{tokens}": {"p50_us": [], "cpu_us_per_call": []} for store, tokens in cases}
    for round_ in range(rounds):
        order = cases if round_ % 2 == 0 else list(reversed(cases))
        for store, tokens in order:
            facade, key = facades[store], f"{store}/{tokens}"
            load, out = bench.loadgen([facade["url"]], ["--concurrency", "1", "--duration", f"{duration}s",
                                                        "--tokens", tokens], f"lookup-{store}-{tokens}-c1-{round_}")
            load.wait()
            samples[key]["p50_us"].append(json.load(open(out))["latency_us"]["p50"])
            before = cpu_seconds(facade["process"].pid)
            load, out = bench.loadgen([facade["url"]], ["--concurrency", "16", "--duration", f"{duration}s",
                                                        "--tokens", tokens], f"lookup-{store}-{tokens}-c16-{round_}")
            load.wait()
            calls = max(json.load(open(out))["calls"], 1)
            samples[key]["cpu_us_per_call"].append((cpu_seconds(facade["process"].pid) - before) * 1e6 / calls)
    for process in [f["process"] for f in facades.values()] + [redis]:
        bench.p.stop(process)
    cost = {key: {m: statistics.median(v) for m, v in s.items()} for key, s in samples.items()}

    memory = []
    for capacity in REPLAY_CAPACITIES:
        facade = bench.facade(sim_url, unlimited + ["--replay-capacity", str(capacity)])
        load, _ = bench.loadgen([facade["url"]], ["--concurrency", "1", "--duration", "1s"], "tokens-warm")
        load.wait()
        idle = rss_kib(facade["process"].pid)
        load, out = bench.loadgen([facade["url"]], ["--concurrency", "64", "--calls", str(million),
                                                    "--duration", "3600s", "--tokens", "unique"],
                                  f"tokens-{capacity}")
        peak = idle
        while load.poll() is None:
            peak = max(peak, rss_kib(facade["process"].pid))
            time.sleep(0.2)
        report = json.load(open(out))
        entries = series_sum(scrape(facade["metrics"]), "connect_facade_replay_cache_entries")
        memory.append({"capacity": capacity, "tokens": report["calls"], "ok": report["ok"],
                       "idle_mib": idle / 1024, "peak_mib": peak / 1024,
                       "after_mib": rss_kib(facade["process"].pid) / 1024, "entries": entries})
        bench.p.stop(facade["process"])
    bench.p.stop(simulator)
    print(f"lookup: {json.dumps(cost)} memory: {json.dumps(memory)}", flush=True)
    return {"cost": cost, "memory": memory}


SECTIONS = ["quota", "cost", "failures", "sharing", "fleet", "replay", "lookup"]


def ratio(a, b):
    return a / max(b, 1)


def sharing_figures(results):
    """The figures of the sections on callers sharing one replica, replay and its cost."""
    runs, savings, lookup = results["sharing"], results["replay"], results["lookup"]
    by_case = {run["case"]: {c["name"]: c for c in run["callers"]} for run in runs}
    fair = next((c for case, c in by_case.items() if "two callers" in case), None)
    weighted = next((c for case, c in by_case.items() if "3:1" in case), None)
    for r in savings:
        r.setdefault("tokens", "unique")
        r["slots_per_call"] = ratio(r["slots"], r["calls"])
    tokenless = next((r for r in savings if r["replay"] and r["tokens"] == "none"), None)
    memory = lookup["memory"] if isinstance(lookup["memory"], list) else [lookup["memory"]]
    return {
        "runs": runs, "replay": savings, "lookup_cost": lookup["cost"],
        "lookup_memory": [{"capacity": 100_000, **m} for m in memory],
        "fair": fair and {**fair["quiet"], "share": ratio(fair["quiet"]["ok"], fair["quiet"]["calls"])},
        "weighted_ratio": weighted and ratio(weighted["heavy"]["ok"], weighted["light"]["ok"]),
        "with_replay": next((r for r in savings if r["replay"] and r["tokens"] == "unique"), None),
        "without_replay": next((r for r in savings if not r["replay"]), None),
        "tokenless": tokenless and {**tokenless, "share": ratio(tokenless["ok"], tokenless["calls"])},
    }


def fleet_figures(fleet):
    """The figures of the section on fair shares across replicas."""
    runs, cost = fleet["runs"], fleet["cost"]
    targets = []
    for run in runs:
        callers = {c["name"]: c for c in run["callers"]}
        others = [name for name in callers if name != "heavy"]
        ratios = [ratio(callers["heavy"]["ok"], callers[name]["ok"]) for name in others] if "heavy" in callers else []
        targets.append({
            "case": run["case"], "others": others, "ratios": ratios,
            "ratios_hold": all(2.4 <= r <= 3.6 for r in ratios),
            "quiet": [{**callers[name], "name": name, "share": ratio(callers[name]["ok"], callers[name]["calls"])}
                      for name in ("quiet-here", "quiet-there") if name in callers],
        })
    per_call = {run["case"]: ratio(run["round_trips"], run["calls"]) for run in runs}
    baseline = next((v for case, v in per_call.items() if "no auth file" in case), None)
    weighted = next((v for case, v in per_call.items() if "weights 3:1," in case), None)
    return {
        "runs": runs, "cost": cost, "targets": targets,
        "added_trips": cost["redis+auth"]["round_trips_per_call"] - cost["redis"]["round_trips_per_call"],
        "added_trips_flood": weighted - baseline if baseline is not None and weighted is not None else None,
        "shares_cpu_us": (cost["redis+auth"]["cpu_us_per_call"] - cost["redis"]["cpu_us_per_call"])
        - (cost["local+auth"]["cpu_us_per_call"] - cost["local"]["cpu_us_per_call"]),
    }


def write_report(path, results, args):
    """docs/templates/SCALING.md.j2 filled with the run's figures."""
    quota, fails = results["quota"], results["failures"]
    cost = {name: results["cost"][name] for name in ("local", "redis", "cluster", "sentinel") if name in results["cost"]}
    redis_rows = [r for r in quota if r["store"] == "redis"]
    failure_codes = {}
    for f in fails:
        for code, count in f["errors"].items():
            failure_codes[code] = failure_codes.get(code, 0) + count
    report.write(
        path, "SCALING.md.j2", commit=results["commit"], date=results["date"], cpus=results["cpus"],
        build="debug" if "debug" in args.bin else "dist", duration=args.duration,
        cost_rounds=args.cost_rounds, cost_duration=args.cost_duration, quota_rate=QUOTA_RATE,
        quota_burst=QUOTA_BURST, offered=OFFERED, answer_bound_s=ANSWER_BOUND_S,
        max_queue_wait_s=MAX_QUEUE_WAIT_S, quota=quota, redis_rows=redis_rows,
        store_names={"local": "local, 2/s each", "base": "local, 1/s each", "redis": "Redis"},
        use_ok=all(r["quota_share"] >= 0.95 for r in redis_rows),
        throttled_ok=all(r["throttled_share"] <= 0.01 for r in redis_rows),
        added_p50_ms=(cost["redis"]["p50_us"] - cost["local"]["p50_us"]) / 1000,
        cpu_ratio=cost["redis"]["cpu_us_per_call"] / cost["local"]["cpu_us_per_call"], cost=cost,
        topology_ratios={name: cost[name]["cpu_us_per_call"] / cost["redis"]["cpu_us_per_call"]
                         for name in ("cluster", "sentinel") if name in cost},
        failures=fails, phase=fails[0]["phase_s"], unanswered=sum(f["unanswered"] for f in fails),
        slowest=max(fails, key=lambda f: f["slowest_s"]),
        max_away_throttled=max(f["away_throttled_share"] for f in fails), failure_codes=failure_codes,
        sharing=sharing_figures(results) if "sharing" in results else None,
        fleet=fleet_figures(results["fleet"]) if "fleet" in results else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/dist")
    parser.add_argument("--out", default="docs/SCALING.md")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--cost-rounds", type=int, default=5)
    parser.add_argument("--cost-duration", type=int, default=5)
    parser.add_argument("--failure-phase", type=int, default=10,
                        help="seconds before the fault, of the fault, and after it")
    parser.add_argument("--sharing-duration", type=int, default=30)
    parser.add_argument("--fleet-duration", type=int, default=60)
    parser.add_argument("--replay-duration", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=1_000_000,
                        help="distinct tokens sent through the in-memory replay cache")
    parser.add_argument("--report-only", metavar="RESULTS_JSON",
                        help="write the report from an earlier run's results.json, measuring nothing")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"the sections to measure, comma-separated ({','.join(SECTIONS)})")
    parser.add_argument("--merge", metavar="RESULTS_JSON",
                        help="an earlier run's results.json, whose sections this run does not measure are kept")
    args = parser.parse_args()
    if args.report_only:
        write_report(args.out, json.load(open(args.report_only)), args)
        print(f"wrote {args.out}")
        return
    work = tempfile.mkdtemp(prefix="connect-facade-scaling-")
    processes = Processes(work)
    bench = Bench(args, processes)
    only = set(args.only.split(","))
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    results = json.load(open(args.merge)) if args.merge else {}
    try:
        if "quota" in only:
            quota = []
            for replicas in range(1, args.replicas + 1):
                for store in ("local", "base", "redis"):
                    row = quota_use(bench, replicas, store, args.duration)
                    print(f"{replicas} x {store}: {row['aws_ok'] / row['duration_s']:.2f} AWS ok/s, "
                          f"{row['throttled_share']:.1%} throttled", flush=True)
                    quota.append(row)
            results["quota"] = quota
        if "cost" in only:
            cost = redis_cost(bench, args.cost_rounds, args.cost_duration)
            print(f"cost: {json.dumps({k: {m: v for m, v in c.items() if m != 'rounds'} for k, c in cost.items()})}",
                  flush=True)
            results["cost"] = cost
        if "failures" in only:
            results["failures"] = failures(bench, args.failure_phase)
        if "sharing" in only:
            results["sharing"] = sharing(bench, args.sharing_duration)
        if "fleet" in only:
            results["fleet"] = {"runs": fleet_sharing(bench, args.fleet_duration),
                                "cost": fleet_cost(bench, args.cost_rounds, args.cost_duration)}
        if "replay" in only:
            results["replay"] = replay_savings(bench, args.replay_duration)
        if "lookup" in only:
            results["lookup"] = lookup_cost(bench, args.cost_rounds, args.cost_duration, args.tokens)
    finally:
        processes.stop_all()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    results.update(commit=commit, date=time.strftime("%Y-%m-%d"), cpus=bench.cpus)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_report(args.out, results, args)
    print(f"wrote {args.out} (raw results in {work}/results.json)")


if __name__ == "__main__":
    sys.exit(main())
