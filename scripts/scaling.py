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

from local_server import (ROOT, Processes, auth_file, free_port, redis_cli, scrape, series_sum, verdict,
                          wait_port)

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


def write_sharing(w, results):
    runs, savings, lookup = results["sharing"], results["replay"], results["lookup"]
    w("## Callers sharing the quota")
    w("")
    by_case = {run["case"]: {c["name"]: c for c in run["callers"]} for run in runs}
    fair = next((c for case, c in by_case.items() if "two callers" in case), None)
    weighted = next((c for case, c in by_case.items() if "3:1" in case), None)
    with_replay = next((r for r in savings if r["replay"] and r.get("tokens", "unique") == "unique"), None)
    tokenless = next((r for r in savings if r["replay"] and r.get("tokens") == "none"), None)
    without = next((r for r in savings if not r["replay"]), None)
    w("| target | measured | |")
    w("|---|---|---|")
    if fair:
        quiet = fair["quiet"]
        share = quiet["ok"] / max(quiet["calls"], 1)
        w(f"| beside a caller offering 10x the quota, one offering 0.25x gets at least 95% of its calls "
          f"through | {share:.0%} ({quiet['ok']} of {quiet['calls']}) | {verdict(share >= 0.95)} |")
    if weighted:
        ratio = weighted["heavy"]["ok"] / max(weighted["light"]["ok"], 1)
        w(f"| weights 3:1, both saturating: successes about 3:1 (within 20%) | {ratio:.2f} | "
          f"{verdict(2.4 <= ratio <= 3.6)} |")
    if with_replay and without:
        on = with_replay["slots"] / max(with_replay["calls"], 1)
        off = without["slots"] / max(without["calls"], 1)
        w(f"| a client retrying after timeouts spends fewer slots with replay and coalescing | "
          f"{on:.2f} slots per call (off: {off:.2f}); {with_replay['ok']} of {with_replay['calls']} answered "
          f"(off: {without['ok']}) | {verdict(on < off)} |")
    if tokenless:
        share = tokenless["ok"] / max(tokenless["calls"], 1)
        w(f"| lost answers retried with no client token are answered OK (target 100%) | {share:.0%} "
          f"({tokenless['ok']} of {tokenless['calls']}) | {verdict(share >= 0.999)} |")
    w("")
    w("One facade at the default limits (2/s, burst 4, `--max-queue-wait` 3s), the simulator at Connect's "
      "quota, each caller an open-loop loadgen with a 10 s deadline per call. With an auth file, waiting "
      "calls are served in weighted fair order; without one, every call is the same caller, in arrival "
      "order.")
    w("")
    w("| case | caller | offered | answered OK | share of its calls | share of AWS's successes |")
    w("|---|---|---:|---:|---:|---:|")
    for run in runs:
        total_ok = sum(c["ok"] for c in run["callers"]) or 1
        for c in run["callers"]:
            w(f"| {run['case']} | {c['name']} | {c['offered_per_s']:g}/s | {c['ok']} of {c['calls']} | "
              f"{c['ok'] / max(c['calls'], 1):.0%} | {c['ok'] / total_ok:.0%} |")
    w("")
    w("## Replay and coalescing: the slots a retrying client saves")
    w("")
    w("A client calls once a second with a 300 ms deadline while AWS (the simulator, a 400 ms latency "
      "fault) answers in 400 ms: every first answer is lost. On DEADLINE_EXCEEDED it asks once more for "
      "the same association, with its own token or, as most clients, with none. A slot is a slot of the "
      "account's quota given to an attempt.")
    w("")
    w("| replay | client token | calls | answered OK | quota slots spent | slots per call | answers per slot | replayed | coalesced |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in savings:
        w(f"| {'on (10m)' if r['replay'] else 'off'} | {r.get('tokens', 'unique')} | {r['calls']} | {r['ok']} | {r['slots']:.0f} | "
          f"{r['slots'] / max(r['calls'], 1):.2f} | {r['ok'] / max(r['slots'], 1):.2f} | "
          f"{r['replays']:.0f} | {r['coalesced']:.0f} |")
    w("")
    w("Without replay, the facade abandons each AWS call when its caller's deadline passes, so the retry "
      "starts again, spends a second slot and times out the same way. With it, the abandoned call "
      "finishes in the background, and the retry shares it (or, if it comes later, is replayed).")
    w("")
    w("## What the replay cache costs per call")
    w("")
    w("One facade at an unlimited rate, in interleaved rounds (medians): p50 at concurrency 1, facade "
      "CPU per call at concurrency 16. `none`: no client token (each call a new chat: a lookup by contact "
      "that misses, the call's task, the answer kept); `unique`: a new "
      "token per call (a lookup that misses, the call's task, the answer kept); `repeat`: the same token "
      "every call (replayed from memory; with Redis too, since a replica keeps what it read).")
    w("")
    w("| store | tokens | p50 at c=1 | CPU µs per call |")
    w("|---|---|---:|---:|")
    for key, c in lookup["cost"].items():
        store, tokens = key.split("/")
        w(f"| {store} | {tokens} | {c['p50_us'] / 1000:.3f} ms | {c['cpu_us_per_call']:.1f} |")
    w("")
    w("Memory: calls with distinct tokens through the in-memory cache, at the default bound and at a "
      "larger one. An answer is only kept after AWS succeeded, at most at the quota's rate (2/s over a "
      "10-minute window is 1,200 per account), so the bound is reached only by many accounts or by a "
      "load like this one, with the quota lifted.")
    w("")
    w("| `--replay-capacity` | calls | answers held | RSS before | peak | after | per answer |")
    w("|---:|---:|---:|---:|---:|---:|---:|")
    for m in lookup["memory"] if isinstance(lookup["memory"], list) else [lookup["memory"]]:
        per = (m["peak_mib"] - m["idle_mib"]) * 1024 * 1024 / max(m["entries"], 1)
        w(f"| {m.get('capacity', 100_000):,} | {m['tokens']:,} | {m['entries']:,.0f} | {m['idle_mib']:.1f} MiB | "
          f"{m['peak_mib']:.1f} MiB | {m['after_mib']:.1f} MiB | {per:.0f} B |")
    w("")


def write_fleet(w, fleet):
    runs, cost = fleet["runs"], fleet["cost"]
    w("## Fair shares across replicas")
    w("")
    w("Every caller on its own replica, as a gRPC client's one connection puts it behind a Service; the "
      "replicas share one Redis (`src/quota/fair.rs` has the design). Without fleet-wide shares each "
      "replica's queue asks Redis in turn, so the slots split by replica whatever the weights: the last "
      "case below, two floods without an auth file, gets 50% each, and weights 3:1 came out 1.16:1 that "
      "way before this design (issue 30). Targets:")
    w("")
    w("| target | measured | |")
    w("|---|---|---|")
    by_case = {run["case"]: {c["name"]: c for c in run["callers"]} for run in runs}
    for case, callers in by_case.items():
        if "heavy" in callers:
            ratios = [callers["heavy"]["ok"] / max(c["ok"], 1) for n, c in callers.items() if n != "heavy"]
            w(f"| {case}: successes within 20% of the weights | heavy over "
              f"{', '.join(n for n in callers if n != 'heavy')}: {', '.join(f'{r:.2f}' for r in ratios)} "
              f"(3.00 wanted) | {verdict(all(2.4 <= r <= 3.6 for r in ratios))} |")
        for name in ("quiet-here", "quiet-there"):
            if name in callers:
                c = callers[name]
                share = c["ok"] / max(c["calls"], 1)
                where = "on the flooded replica" if name == "quiet-here" else "on the other replica"
                w(f"| a quiet caller {where} gets at least 90% of its calls through | {share:.0%} "
                  f"({c['ok']} of {c['calls']}), p50 {c['p50_ms']:.0f} ms | {verdict(share >= 0.9)} |")
    shares = (cost["redis+auth"]["cpu_us_per_call"] - cost["redis"]["cpu_us_per_call"]) - (
        cost["local+auth"]["cpu_us_per_call"] - cost["local"]["cpu_us_per_call"])
    trips = cost["redis+auth"]["round_trips_per_call"] - cost["redis"]["round_trips_per_call"]
    w(f"| at most one more Redis round trip per call (one caller, unlimited rate) | {trips:+.2f} | "
      f"{verdict(trips <= 1.0)} |")
    per_call = {run["case"]: run["round_trips"] / max(run["calls"], 1) for run in runs}
    baseline = next((v for case, v in per_call.items() if "no auth file" in case), None)
    weighted = next((v for case, v in per_call.items() if "weights 3:1," in case), None)
    if baseline is not None and weighted is not None:
        w(f"| ... and under a flood (weights 3:1 against the same two floods without an auth file) | "
          f"{weighted - baseline:+.2f} | {verdict(weighted - baseline <= 1.0)} |")
    w("")
    w("| case | caller | weight | replica | offered | answered OK | p50 | share of AWS's successes |")
    w("|---|---|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        total = sum(c["ok"] for c in run["callers"]) or 1
        for c in run["callers"]:
            w(f"| {run['case']} | {c['name']} | {c['weight']} | {c['replica']} | {c['offered_per_s']:g}/s | "
              f"{c['ok']} of {c['calls']} | {c['p50_ms']:.0f} ms | {c['ok'] / total:.0%} |")
    w("")
    w("| case | AWS successes | share of the quota | throttled | Redis round trips per call | per AWS success |")
    w("|---|---:|---:|---:|---:|---:|")
    for run in runs:
        w(f"| {run['case']} | {run['aws_ok']:.0f} | {run['aws_ok'] / (QUOTA_RATE * run['duration_s']):.0%} | "
          f"{run['aws_throttled']:.0f} of {run['aws_attempts']:.0f} | "
          f"{run['round_trips'] / max(run['calls'], 1):.2f} | {run['round_trips'] / max(run['aws_ok'], 1):.2f} |")
    w("")
    w("Round trips include each replica's heartbeat (one a second). An over-share caller waiting for a "
      "slot asks again when the account's next slot frees, so a flood costs more round trips per success "
      "than without shares; every refusal at once costs one or none.")
    w("")
    w("What the shares cost one call: one replica at an unlimited rate (every call within its share), "
      "medians of interleaved rounds; the local store has no shares, so its difference with and without "
      "the auth file is the auth file's own cost.")
    w("")
    w("| store | auth file (one caller) | p50 at c=1 | CPU µs per call at c=16 | Redis round trips per call |")
    w("|---|---|---:|---:|---:|")
    for name, c in cost.items():
        store, auth = name.split("+")[0], "yes" if "auth" in name else "no"
        w(f"| {store} | {auth} | {c['p50_us'] / 1000:.3f} ms | {c['cpu_us_per_call']:.1f} | "
          f"{c['round_trips_per_call']:.2f} |")
    w("")
    w(f"The shares' own CPU per call: {shares:+.1f} µs (Redis's difference with and without the auth "
      "file, less the local store's).")
    w("")


SECTIONS = ["quota", "cost", "failures", "sharing", "fleet", "replay", "lookup"]


def write_failures(w, fails):
    phase = fails[0]["phase_s"]
    w("## When Redis fails")
    w("")
    w(f"Replicas on Redis at 2/s each (the fallback sized by the fleet), 3x the quota offered for "
      f"{3 * phase} s with the callers' own 5 s deadline; the fault comes after {phase} s. **killed**: "
      f"SIGKILL, started again, empty, {phase} s later. **hung**: SIGSTOP, so its port still accepts "
      f"connections and nothing answers, SIGCONT {phase} s later. **failover**: the master (of the "
      "quota's slot, on the cluster) SIGKILLed; the sentinels (down after 1 s) or the cluster (node "
      "timeout 1 s) promote its replica. \"Away\" runs from the fault until every replica's "
      "`connect_facade_quota_store_up` is 1 again; \"back on Redis after\" is from the restart, the "
      "SIGCONT or the promotion until then; \"after\" is the rest of the run.")
    w("")
    w("| fault | topology | replicas | calls | answered | slowest answer | away | quota used while away | attempts throttled while away | after | back on Redis after | store errors |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for f in fails:
        back = f"{f['back_after_s']:.2f} s" if f["back_after_s"] is not None else "not within the run"
        w(f"| {f['case']} | {f['topology']} | {f['replicas']} | {f['calls']} | {f['calls'] - f['unanswered']} | "
          f"{f['slowest_s']:.2f} s | {f['away_s']:.1f} s | {f['away_quota_share']:.0%} | "
          f"{f['away_throttled']:.0f} of {f['away_attempts']:.0f} ({f['away_throttled_share']:.0%}) | "
          f"{f['after_throttled']:.0f} of {f['after_attempts']:.0f} throttled | {back} | {f['store_errors']:.0f} |")
    w("")
    codes = {}
    for f in fails:
        for code, count in f["errors"].items():
            codes[code] = codes.get(code, 0) + count
    w("Every call is answered: served, or refused with `RESOURCE_EXHAUSTED` and a `RetryInfo` when its "
      "slot is further than its wait allows (3x the quota is offered, so about two calls in three are "
      f"refused; over the runs: {', '.join(f'{c} {n}' for c, n in sorted(codes.items())) or 'none'}). "
      "The slowest answers are calls that waited their whole `--max-queue-wait` for a slot: a call's "
      "attempts share that wait, and the store costs at most one timeout per outage, not one per call. "
      "While Redis is away each replica sends the rate divided by the replicas it last saw, so the "
      "fleet stays within the quota at 2 and at 4 replicas. Back on Redis, a replica's first slot "
      "comes after the last one its fallback granted, with the account's burst spent; the few "
      "throttles after the return come from the replicas' fallback slots and Redis's first slots "
      "meeting in an AWS bucket the fleet keeps nearly empty (each is retried). Store errors count "
      "failed round trips, probes included.")
    w("")


def write_report(path, results, args):
    quota, cost, fails = results["quota"], results["cost"], results["failures"]
    lines = []
    w = lines.append
    w("# Scaling: replicas sharing one AWS quota")
    w("")
    w(f"Written by `scripts/scaling.sh` ({results['commit']}, {results['date']}, {results['cpus']} CPUs, "
      f"{'release' if 'release' in args.bin else 'debug'} build). Connect's quota for the account is "
      f"simulated at {QUOTA_RATE:g} requests/s with a burst of {QUOTA_BURST}; the callers offer "
      f"{OFFERED:g} calls/s (3x the quota) for {args.duration} s, spread over the replicas by loadgen as a "
      "Service would. AWS's side is read from the facades' metrics, the callers' side from loadgen.")
    w("")
    w("## Targets")
    w("")
    redis_rows = [r for r in quota if r["store"] == "redis"]
    use_ok = all(r["quota_share"] >= 0.95 for r in redis_rows)
    thr_ok = all(r["throttled_share"] <= 0.01 for r in redis_rows)
    added_p50 = (cost["redis"]["p50_us"] - cost["local"]["p50_us"]) / 1000
    cpu_ratio = cost["redis"]["cpu_us_per_call"] / cost["local"]["cpu_us_per_call"]
    w("| target | measured | |")
    w("|---|---|---|")
    w(f"| with Redis, at least 95% of the quota used at every replica count | "
      f"{', '.join(format(r['quota_share'], '.0%') for r in redis_rows)} | {verdict(use_ok)} |")
    w(f"| with Redis, at most 1% of attempts throttled at every replica count | "
      f"{', '.join(format(r['throttled_share'], '.1%') for r in redis_rows)} | {verdict(thr_ok)} |")
    w(f"| Redis adds at most 0.3 ms at p50 per call | {added_p50:+.3f} ms | {verdict(added_p50 <= 0.3)} |")
    w(f"| CPU per call at most 1.15x the local store's | {cpu_ratio:.2f}x | {verdict(cpu_ratio <= 1.15)} |")
    for name in [n for n in ("cluster", "sentinel") if n in cost]:
        ratio = cost[name]["cpu_us_per_call"] / cost["redis"]["cpu_us_per_call"]
        w(f"| {name}: CPU per call at most 1.2x the standalone Redis store's | {ratio:.2f}x | "
          f"{verdict(ratio <= 1.2)} |")
    unanswered = sum(f["unanswered"] for f in fails)
    slowest = max(fails, key=lambda f: f["slowest_s"])
    away_throttled = max(f["away_throttled_share"] for f in fails)
    w(f"| when Redis fails (killed, hung, failed over; 2 and 4 replicas): no call unanswered | "
      f"{unanswered} unanswered | {verdict(unanswered == 0)} |")
    w(f"| ... and no answer later than `--max-queue-wait` + the store timeout + 0.3 s ({ANSWER_BOUND_S:g} s) | "
      f"slowest {slowest['slowest_s']:.2f} s ({slowest['case']}, {slowest['topology']}) | "
      f"{verdict(slowest['slowest_s'] <= ANSWER_BOUND_S)} |")
    w(f"| ... and at most 5% of AWS attempts throttled while Redis is away, at any replica count | "
      f"{', '.join(format(f['away_throttled_share'], '.0%') for f in fails)} | {verdict(away_throttled <= 0.05)} |")
    w("")
    w("## Quota use under 3x overload")
    w("")
    w("\"Local, 2/s each\" is every replica at the flags' default; \"local, 1/s each\" is deploy/'s base "
      "ConfigMap (the quota divided by hand for its 2 replicas: rate 1/s, burst 2), whatever number of "
      "replicas the HPA runs; "
      "\"Redis\" shares one bucket (2/s, burst 4) through `--quota-store`. The share of the quota is AWS's "
      "successful calls over quota x time, so the first burst can take it a little over 100%.")
    w("")
    w("| replicas | store | rate per replica | AWS successful calls/s | share of the quota | attempts throttled | callers answered OK | callers' p50 | callers' p99 |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    names = {"local": "local, 2/s each", "base": "local, 1/s each", "redis": "Redis"}
    for r in quota:
        w(f"| {r['replicas']} | {names[r['store']]} | {r['rate_per_replica']:.2g}/s | "
          f"{r['aws_ok'] / r['duration_s']:.2f} | {r['quota_share']:.0%} | "
          f"{r['aws_throttled']:.0f} of {r['aws_attempts']:.0f} ({r['throttled_share']:.1%}) | "
          f"{r['ok_calls']} of {r['calls']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.0f} ms |")
    w("")
    w(f"Callers' latency includes the wait for a slot (up to `--max-queue-wait`, {MAX_QUEUE_WAIT_S:g} s); the calls not "
      "answered OK were refused with `RESOURCE_EXHAUSTED` and a `RetryInfo`.")
    w("")
    w("Reading it: every configuration ends up with AWS's whole quota, because AWS throttles the excess. "
      "What differs is the cost of getting there. Replicas that together may send more than the quota "
      "(2/s each from 2 replicas up; deploy/'s 1/s each from 3 up) have a share of their attempts "
      "throttled, each a wasted round trip to AWS, a retry, and quota taken from every other "
      "application in the account; one replica left at 1/s uses half the quota. With Redis the share "
      "is the same at every replica count and nothing is throttled. Its callers' p50 is about a "
      "millisecond because a call whose slot is further away than its wait allows is refused at once, with the "
      "time to come back; a local store's waiting calls sleep, and most are refused only when they "
      "wake to find the slot taken.")
    w("")
    w("## What each Redis topology costs per call")
    w("")
    w(f"One replica at an unlimited rate (`--rate-limit 1000000`) per store, side by side: the local "
      f"store, a standalone Redis, a 3-master Redis Cluster (`redis+cluster://` naming the masters) and "
      f"a master with a replica behind three sentinels (`redis+sentinel://`), measured in "
      f"{args.cost_rounds} interleaved rounds of {args.cost_duration} s each (medians): p50 at "
      "concurrency 1, CPU per call at concurrency 16. Every Redis process and the load generator share "
      "the other CPU; redis-server's CPU is the sum over the topology's processes.")
    w("")
    w("| store | p50 at c=1 | added to the local store's | CPU µs per call (facade) | vs standalone Redis | CPU µs per call (redis-server) | calls/s at c=16 |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for name in [n for n in ("local", "redis", "cluster", "sentinel") if n in cost]:
        c = cost[name]
        w(f"| {name} | {c['p50_us'] / 1000:.3f} ms | {(c['p50_us'] - cost['local']['p50_us']) / 1000:+.3f} ms | "
          f"{c['cpu_us_per_call']:.1f} | {c['cpu_us_per_call'] / cost['redis']['cpu_us_per_call']:.2f}x | "
          f"{c['redis_cpu_us_per_call']:.1f} | {c['calls_per_s']:.0f} |")
    w("")
    w("Per round, p50 in µs: " + "; ".join(f"{name} {c['rounds']['p50_us']}" for name, c in cost.items())
      + ". Facade CPU µs per call: "
      + "; ".join(f"{name} {[round(x, 1) for x in c['rounds']['cpu_us_per_call']]}" for name, c in cost.items())
      + ".")
    w("")
    w("Each quota script touches one slot (the keys' hash tag), so every topology is one round trip "
      "per attempt; the cluster client routes it to the slot's master, and the sentinel store talks "
      "to the master it found, asking the sentinels again only after a failure.")
    w("")
    write_failures(w, fails)
    if "sharing" in results:
        write_sharing(w, results)
    if "fleet" in results:
        write_fleet(w, results["fleet"])
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/release")
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
