#!/usr/bin/env python3
"""What the Connect protocol costs next to gRPC: writes docs/PROTOCOLS.md.

One optimised (`dist`) facade (limiter lifted) on CPU 0, the simulator (a process of its own) and loadgen on the
other CPU. For gRPC, Connect JSON and Connect binary, in interleaved rounds (medians):
- closed loop at concurrency 64: calls/s and the facade's CPU per call;
- open loop at 500 calls/s: p50 and p99 latency.
Target (issue: callers without gRPC): Connect JSON at most 1.3x gRPC's CPU per call.

    python3 scripts/protocols.py                # dist build, about 5 minutes
    python3 scripts/protocols.py --smoke        # a second a path on the debug build; writes a temp file
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
from scaling import ROOT, Bench, Processes, cpu_seconds  # noqa: E402

PROTOCOLS = ["grpc", "connect-json", "connect-proto"]


def measure(args):
    work = tempfile.mkdtemp(prefix="connect-facade-protocols-")
    processes = Processes(work)
    bench = Bench(args, processes)
    samples = {p: {"calls_per_s": [], "cpu_us_per_call": [], "p50_ms": [], "p99_ms": []} for p in PROTOCOLS}
    try:
        simulator, sim_url = bench.simulator(quota=False)
        facade = bench.facade(sim_url, ["--rate-limit", "1000000", "--rate-burst", "1000000"])
        for round_ in range(args.rounds):
            order = PROTOCOLS if round_ % 2 == 0 else list(reversed(PROTOCOLS))
            for protocol in order:
                before = cpu_seconds(facade["process"].pid)
                load, out = bench.loadgen([facade["url"]], ["--target", protocol, "--concurrency", "64",
                                                            "--duration", f"{args.duration}s"],
                                          f"{protocol}-c64-{round_}")
                load.wait()
                report = json.load(open(out))
                calls = max(report["calls"], 1)
                spent = cpu_seconds(facade["process"].pid) - before
                samples[protocol]["calls_per_s"].append(report["throughput_per_s"])
                samples[protocol]["cpu_us_per_call"].append(spent * 1e6 / calls)
                load, out = bench.loadgen([facade["url"]], ["--target", protocol, "--rate", str(args.rate),
                                                            "--duration", f"{args.duration}s"],
                                          f"{protocol}-rate-{round_}")
                load.wait()
                report = json.load(open(out))
                samples[protocol]["p50_ms"].append(report["latency_us"]["p50"] / 1000)
                samples[protocol]["p99_ms"].append(report["latency_us"]["p99"] / 1000)
                print(f"round {round_} {protocol}: {samples[protocol]['calls_per_s'][-1]:.0f}/s, "
                      f"{samples[protocol]['cpu_us_per_call'][-1]:.1f} µs CPU a call", flush=True)
    finally:
        processes.stop_all()
    medians = {p: {k: statistics.median(v) for k, v in s.items()} for p, s in samples.items()}
    return {"medians": medians, "rounds": samples}


def write_report(path, results, args):
    m = results["medians"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    report.write(path, "PROTOCOLS.md.j2", commit=commit, date=time.strftime("%Y-%m-%d"),
                 build="debug" if "debug" in args.bin else "dist", rounds=args.rounds,
                 duration=args.duration, rate=args.rate, medians=m, per_round=results["rounds"],
                 json_cpu_ratio=m["connect-json"]["cpu_us_per_call"] / m["grpc"]["cpu_us_per_call"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/dist")
    parser.add_argument("--out", default="docs/PROTOCOLS.md")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--smoke", action="store_true", help="a second a path on the debug build")
    args = parser.parse_args()
    if args.smoke:
        args.bin, args.out, args.rounds, args.duration = "target/debug", tempfile.mktemp(suffix=".md"), 1, 1
    results = measure(args)
    write_report(args.out, results, args)
    print(f"wrote {args.out}")
    if args.smoke:
        report = open(args.out).read()
        if "| connect-json |" not in report or "| connect-proto |" not in report:
            sys.exit(f"the smoke run's report is incomplete:\n{report}")
        print("protocols smoke run: every path ran")


if __name__ == "__main__":
    sys.exit(main())
