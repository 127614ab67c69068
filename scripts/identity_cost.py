#!/usr/bin/env python3
"""What a caller's identity costs per call: the facade's CPU per call under a steady load from a
caller known by a static token, and from one known by a JWT (ES256, like a projected service account
token, scripts/workload_token.py), in interleaved rounds so that the machine's drift falls on both
alike. A JWT's signature is checked once per token (the verified-token cache, until its exp); every
call then costs what a static token's does: one SHA-256 and a lookup. Prints a JSON report and a
line: the difference against the spread of the static token's rounds (the noise).

    python3 scripts/identity_cost.py [--bin target/dist] [--rounds 5] [--seconds 15] [--rate 200]
    python3 scripts/identity_cost.py --smoke            # one short round each (the script runs)

The facade runs on CPU 0 and everything else on the last CPU, as in scripts/scaling.py.
"""

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from admin_cost import calls, cpu_seconds  # noqa: E402
from local_server import Processes, free_port, scrape, series_sum, wait_port  # noqa: E402
import workload_token  # noqa: E402

STATIC_TOKEN = "identity-cost-static-token"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default="target/dist")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds, args.rate, args.bin = 1, 3.0, 50.0, "target/debug"
    load_cpu = (os.cpu_count() or 1) - 1
    with tempfile.TemporaryDirectory() as work:
        workload_token.main(work)
        with open(os.path.join(work, "callers.yaml"), "a") as file:
            file.write(f"  - name: static-caller\n    token_sha256: {hashlib.sha256(STATIC_TOKEN.encode()).hexdigest()}\n"
                       "    instances: [\"*\"]\n")
        with open(os.path.join(work, "token")) as file:
            tokens = {"static": STATIC_TOKEN, "jwt": file.read().strip()}
        p = Processes(work)
        try:
            _, sim_url = p.simulator(f"{args.bin}/connect-facade", ["--fixtures", "fixtures/bench.yaml"], cpu=load_cpu)
            port, metrics = free_port(), free_port()
            facade = p.start("facade", [f"{args.bin}/connect-facade", "serve", "--listen", f"127.0.0.1:{port}",
                                        "--metrics-listen", f"127.0.0.1:{metrics}", "--region", "us-east-1",
                                        "--endpoint-url", sim_url, "--rate-limit", "0", "--log-format", "json",
                                        "--auth-file", os.path.join(work, "callers.yaml")],
                             cpu=0, env={"AWS_ACCESS_KEY_ID": "AKIDIDENTITYCOST", "AWS_SECRET_ACCESS_KEY": "identity-cost",
                                         "AWS_EC2_METADATA_DISABLED": "true", "RUST_LOG": "warn"})
            for wait in (port, metrics):
                wait_port(wait)
            rounds = {"static": [], "jwt": []}
            answered = {"static": 0, "jwt": 0}
            for _ in range(args.rounds):
                for case in ("static", "jwt"):
                    load = p.start(f"loadgen-{case}", [f"{args.bin}/loadgen", "run", "--url", f"http://127.0.0.1:{port}",
                                                       "--rate", f"{args.rate:g}", "--duration", f"{args.seconds}s",
                                                       "--warmup", "1s", "--quiet", "--bearer", tokens[case]], cpu=load_cpu)
                    time.sleep(1.0)  # the warm-up, not measured
                    cpu0, calls0 = cpu_seconds(facade.pid), calls(metrics)
                    load.wait()
                    cpu1, calls1 = cpu_seconds(facade.pid), calls(metrics)
                    done = calls1 - calls0
                    answered[case] += done
                    rounds[case].append((cpu1 - cpu0) / done * 1e6 if done else float("nan"))
            refused = refusals(metrics)
        finally:
            p.stop_all()
    median = {case: statistics.median(values) for case, values in rounds.items()}
    noise = (max(rounds["static"]) - min(rounds["static"])) if len(rounds["static"]) > 1 else float("nan")
    report = {"binary": args.bin, "rate_per_s": args.rate, "seconds": args.seconds,
              "cpu_us_per_call": rounds, "median": median, "difference_us": median["jwt"] - median["static"],
              "noise_us": noise, "calls": answered, "unauthenticated": refused}
    print(json.dumps(report))
    print(f"CPU per call: {median['static']:.1f} µs with a static token, {median['jwt']:.1f} µs with a JWT "
          f"({report['difference_us']:+.1f} µs; the static token's rounds spread over {noise:.1f} µs); "
          f"{refused} calls refused UNAUTHENTICATED")
    if refused or not all(answered.values()):
        sys.exit(1)


def refusals(metrics_port):
    """Calls answered UNAUTHENTICATED: a token the facade did not take makes the comparison void."""
    return series_sum(scrape(metrics_port), "grpc_server_handled_total", 'grpc_code="Unauthenticated"')


if __name__ == "__main__":
    main()
