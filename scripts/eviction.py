#!/usr/bin/env python3
"""What each Redis `maxmemory-policy` does to the answers the facade remembers (issue 44): for each
policy, a redis-server of its own with a small `maxmemory`, a facade sharing its quota through it
that makes `--calls` associations (each remembered under `PREFIX:{KEY}:replay` for the replay
window), then another tenant of the same Redis (a session cache: values with a TTL, and some
without) writing until twice `maxmemory` has been offered. Counted after: the remembered answers
still there, the facade's quota buckets, and the tenant's writes Redis refused. Prints a JSON report
and a table; docs/operators/quota.md quotes it.

    python3 scripts/eviction.py [--bin target/debug] [--calls 300] [--maxmemory 4mb]
    python3 scripts/eviction.py --smoke          # two policies, fewer calls (the script runs)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_server import Processes, free_port, redis_cli, wait_port  # noqa: E402

POLICIES = ["noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
            "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"]
PREFIX = "connect-facade"


def count(port, pattern):
    """Keys matching `pattern` (SCAN, as an operator would on a live Redis)."""
    found, cursor = 0, "0"
    while True:
        answer = redis_cli(port, "SCAN", cursor, "MATCH", pattern, "COUNT", "1000").split("\n")
        cursor, keys = answer[0].strip(), [k for k in answer[1:] if k.strip()]
        found += len(keys)
        if cursor in ("0", ""):
            return found


def fill(port, megabytes):
    """The other tenant: 1 KiB values, three in four with a one-hour TTL; how many Redis refused."""
    lines = []
    for n in range(megabytes * 1024):
        if n % 4:
            lines.append(f"SET session:{n} {'x' * 1000} EX 3600\r\n")
        else:
            lines.append(f"SET profile:{n} {'y' * 1000}\r\n")
    answer = subprocess.run(["redis-cli", "-p", str(port)], input="".join(lines).replace("\r\n", "\n"),
                            capture_output=True, text=True, timeout=120).stdout
    return answer.count("OOM")


def run(p, binary, policy, calls, maxmemory, fill_mb):
    _, port = p.redis(extra=["--maxmemory", maxmemory, "--maxmemory-policy", policy])
    listen, metrics = free_port(), free_port()
    facade = p.start(f"facade-{policy}", [
        f"{binary}/connect-facade", "serve", "--simulator", "--simulator-fixtures", "fixtures/bench.yaml",
        "--listen", f"127.0.0.1:{listen}", "--metrics-listen", f"127.0.0.1:{metrics}",
        "--quota-store", f"redis://127.0.0.1:{port}", "--rate-limit", "10000", "--rate-burst", "10000",
        "--log-format", "json"],
        env={"RUST_LOG": "warn"})
    wait_port(listen)
    load = p.start(f"loadgen-{policy}", [f"{binary}/loadgen", "run", "--url", f"http://127.0.0.1:{listen}",
                                         "--concurrency", "8", "--calls", str(calls), "--quiet"])
    load.wait(120)
    remembered = count(port, f"{PREFIX}:*:replay")
    refused = fill(port, fill_mb)
    kept = count(port, f"{PREFIX}:*:replay")
    buckets = count(port, f"{PREFIX}:*") - kept
    evicted = int(next((line.split(":")[1] for line in redis_cli(port, "INFO", "stats").splitlines()
                        if line.startswith("evicted_keys:")), "0"))
    p.stop(facade)
    return {"policy": policy, "remembered": remembered, "kept": kept, "buckets_left": buckets,
            "evicted_keys": evicted, "tenant_writes_refused": refused}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default="target/debug")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--maxmemory", default="4mb")
    parser.add_argument("--fill-mb", type=int, default=8)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    policies = POLICIES
    if args.smoke:
        policies, args.calls, args.fill_mb = ["noeviction", "volatile-lru"], 50, 6
    results = []
    with tempfile.TemporaryDirectory() as work:
        p = Processes(work)
        try:
            for policy in policies:
                results.append(run(p, args.bin, policy, args.calls, args.maxmemory, args.fill_mb))
        finally:
            p.stop_all()
    print(json.dumps({"maxmemory": args.maxmemory, "fill_mb": args.fill_mb, "results": results}))
    print(f"{'policy':<16} {'answers kept':>14} {'evicted keys':>13} {'tenant writes refused':>22}")
    for r in results:
        print(f"{r['policy']:<16} {r['kept']:>6} of {r['remembered']:<5} {r['evicted_keys']:>13} "
              f"{r['tenant_writes_refused']:>22}")
    noeviction = next((r for r in results if r["policy"] == "noeviction"), None)
    if noeviction and noeviction["kept"] != noeviction["remembered"]:
        sys.exit("noeviction lost remembered answers")
    if any(r["remembered"] == 0 for r in results):
        sys.exit("no answer was remembered: the facade did not reach Redis")


if __name__ == "__main__":
    main()
