#!/usr/bin/env python3
"""What the admin API costs the calls: the facade's CPU per call under a steady load, with nobody
looking, and with ten status pages open (ten pollers asking /status every second, as the page does),
in interleaved rounds so that the machine's drift falls on both alike. Prints a JSON report and a
line: the difference against the spread of the rounds without pollers (the noise).

    python3 scripts/admin_cost.py [--bin target/dist] [--rounds 5] [--seconds 15] [--rate 200]
    python3 scripts/admin_cost.py --smoke            # one short round each (the script runs)

The facade runs on CPU 0 and everything else on the last CPU, as in scripts/scaling.py.
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_server import Processes, free_port, scrape, series_sum, wait_port  # noqa: E402


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def calls(metrics_port):
    return series_sum(scrape(metrics_port), "grpc_server_handled_total")


def pollers(admin_port, count, stop):
    """`count` threads asking /status every second until `stop`; returns them and their tally."""
    tally = {"answers": 0, "errors": 0}

    def poll():
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=2) as answer:
                    answer.read()
                tally["answers"] += 1
            except OSError:
                tally["errors"] += 1
            stop.wait(1.0)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, tally


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default="target/dist")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--pollers", type=int, default=10)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds, args.rate, args.bin = 1, 3.0, 50.0, "target/debug"
    cpus = os.cpu_count() or 1
    load_cpu = cpus - 1
    with tempfile.TemporaryDirectory() as work:
        p = Processes(work)
        try:
            _, sim_url = p.simulator(f"{args.bin}/connect-facade", ["--fixtures", "fixtures/bench.yaml"], cpu=load_cpu)
            port, metrics, admin = free_port(), free_port(), free_port()
            facade = p.start("facade", [f"{args.bin}/connect-facade", "serve", "--listen", f"127.0.0.1:{port}",
                                        "--metrics-listen", f"127.0.0.1:{metrics}",
                                        "--admin-listen", f"127.0.0.1:{admin}", "--region", "us-east-1",
                                        "--endpoint-url", sim_url, "--rate-limit", "0", "--log-format", "json"],
                             cpu=0, env={"AWS_ACCESS_KEY_ID": "AKIDADMINCOST", "AWS_SECRET_ACCESS_KEY": "admin-cost",
                                         "AWS_EC2_METADATA_DISABLED": "true", "RUST_LOG": "warn"})
            for wait in (port, metrics, admin):
                wait_port(wait)
            rounds = {"without": [], "with": []}
            polled = {"answers": 0, "errors": 0}
            for _ in range(args.rounds):
                for case in ("without", "with"):
                    stop = threading.Event()
                    threads, tally = pollers(admin, args.pollers, stop) if case == "with" else ([], None)
                    load = p.start(f"loadgen-{case}", [f"{args.bin}/loadgen", "run", "--url", f"http://127.0.0.1:{port}",
                                                       "--rate", f"{args.rate:g}", "--duration", f"{args.seconds}s",
                                                       "--warmup", "1s", "--quiet"], cpu=load_cpu)
                    time.sleep(1.0)  # the warm-up, not measured
                    cpu0, calls0 = cpu_seconds(facade.pid), calls(metrics)
                    load.wait()
                    cpu1, calls1 = cpu_seconds(facade.pid), calls(metrics)
                    stop.set()
                    for thread in threads:
                        thread.join()
                    if tally:
                        for key in polled:
                            polled[key] += tally[key]
                    done = calls1 - calls0
                    rounds[case].append((cpu1 - cpu0) / done * 1e6 if done else float("nan"))
            # Each answer on its own, the facade otherwise idle: one connection kept alive, as a page's.
            connection = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
            asked = 200 if args.smoke else 2000
            cpu0 = cpu_seconds(facade.pid)
            for _ in range(asked):
                connection.request("GET", "/status")
                connection.getresponse().read()
            per_status_us = (cpu_seconds(facade.pid) - cpu0) / asked * 1e6
        finally:
            p.stop_all()
    median = {case: statistics.median(values) for case, values in rounds.items()}
    noise = (max(rounds["without"]) - min(rounds["without"])) if len(rounds["without"]) > 1 else float("nan")
    report = {"binary": args.bin, "rate_per_s": args.rate, "seconds": args.seconds, "pollers": args.pollers,
              "cpu_us_per_call": rounds, "median": median, "difference_us": median["with"] - median["without"],
              "noise_us": noise, "status_answers": polled["answers"], "status_errors": polled["errors"],
              "cpu_us_per_status": per_status_us}
    print(json.dumps(report))
    print(f"CPU per call: {median['without']:.1f} µs without pollers, {median['with']:.1f} µs with "
          f"{args.pollers} polling /status every second ({report['difference_us']:+.1f} µs; the rounds "
          f"without pollers spread over {noise:.1f} µs); {polled['answers']} /status answers, "
          f"{polled['errors']} errors; one /status answer costs {per_status_us:.0f} µs of the facade's CPU, "
          f"so {args.pollers} pages cost {args.pollers * per_status_us / 1000:.2f} ms of CPU per second")
    if polled["errors"] or not polled["answers"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
