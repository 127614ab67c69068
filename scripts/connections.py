#!/usr/bin/env python3
"""What connections cost the facade, and what a flood of them does: writes docs/CONNECTIONS.md.

The optimised (`dist`) facade (limiter lifted) on CPU 0; the simulator, in a process of its own, and the peers on
the other CPU:
1. idle, after one call: RSS and descriptors;
2. idle HTTP/2 connections (preface and SETTINGS sent, nothing more), 500 of them: what one costs;
3. 3,000 TCP connections that never send a byte: the peak, how many the cap lets in, and how many are
   still open after the handshake timeout;
4. 2 x 8,000 connections with one call each (h2load): the peak RSS, RSS 20 s after each burst, and
   descriptors;
5. throughput at concurrency 64 (loadgen), to show the bounds cost nothing;
6. the HTTP/2 flow-control window (`--connection-window`) at 64 KiB, 256 KiB (the default) and 1 MiB
   (hyper's default): an idle connection's cost and throughput at concurrency 64, in interleaved rounds,
   each window on a facade of its own.
Throughout 3 and 4, a caller on an established connection calls 5 times a second (loadgen): its
errors say whether normal calls kept being served.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import report
from local_server import free_port, scrape, series_sum, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])




def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))




class Peak:
    """Samples a process's RSS every 50 ms in the background."""

    def __init__(self, pid):
        self.pid, self.peak, self.running = pid, 0.0, True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while self.running:
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except OSError:
                return
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.peak


class Run:
    def __init__(self, args, work, extra_flags=()):
        self.args, self.work = args, work
        self.cpus = os.cpu_count() or 1
        self.peer_cpu = str(self.cpus - 1)
        self.port, self.metrics = free_port(), free_port()
        # The simulator in a process of its own, so the facade's figures are the facade's alone.
        self.simulator = subprocess.Popen(
            ["taskset", "-c", self.peer_cpu, f"{args.bin}/connect-facade", "simulate", "--listen",
             "127.0.0.1:0", "--fixtures", "fixtures/bench.yaml", "--log-format", "json"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        simulator_url = self.simulator.stdout.readline().decode().split()[-1]
        argv = ["taskset", "-c", "0", f"{args.bin}/connect-facade", "serve", "--region", "us-east-1",
                "--endpoint-url", simulator_url, "--listen", f"127.0.0.1:{self.port}",
                "--metrics-listen", f"127.0.0.1:{self.metrics}", "--rate-limit", "1000000",
                "--rate-burst", "1000000", "--log-format", "json"] + args.facade_flag + list(extra_flags)
        env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDCONNECTIONS", AWS_SECRET_ACCESS_KEY="connections",
                   AWS_EC2_METADATA_DISABLED="true", **dict(pair.split("=", 1) for pair in args.facade_env))
        self.facade = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, env=env,
                                       stderr=open(os.path.join(work, "facade.err"), "wb"))
        wait_port(self.port)
        wait_port(self.metrics)
        self.url = f"http://127.0.0.1:{self.port}"
        self.request = os.path.join(work, "request.bin")
        subprocess.run([f"{args.bin}/loadgen", "frame", "--out", self.request], check=True)

    def loadgen(self, label, extra):
        out = os.path.join(self.work, f"{label}.json")
        process = subprocess.Popen(["taskset", "-c", self.peer_cpu, f"{self.args.bin}/loadgen", "run",
                                    "--url", self.url, "--quiet", "--json", out] + extra,
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return process, out

    def caller(self, label, seconds):
        """A normal caller on one established connection, 5 calls a second."""
        return self.loadgen(label, ["--rate", "5", "--duration", f"{seconds}s", "--connections", "1",
                                    "--warmup", "0s"])

    def state(self):
        text = scrape(self.metrics)
        return {"rss_mib": rss_mib(self.facade.pid), "fds": descriptors(self.facade.pid),
                "open": series_sum(text, "connect_facade_open_connections", 'listener="grpc"'),
                "closed_cap": series_sum(text, "connect_facade_connections_closed_total",
                                         'listener="grpc",reason="cap"'),
                "closed_timeout": series_sum(text, "connect_facade_connections_closed_total",
                                             'listener="grpc",reason="handshake_timeout"')}

    def stop(self):
        for process in (self.facade, self.simulator):
            process.terminate()
            process.wait(30)


def open_sockets(port, count, send=b""):
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(True)
        try:
            s.connect(("127.0.0.1", port))
            if send:
                s.sendall(send)
        except OSError:
            s.close()
            continue
        sockets.append(s)
    return sockets


def still_open(sockets):
    """How many of `sockets` the server has not closed (no EOF, no reset)."""
    count = 0
    for s in sockets:
        s.setblocking(False)
        try:
            data = s.recv(65536, socket.MSG_PEEK)
            count += 1 if data else 0
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def caller_errors(out):
    """The caller's calls served, and its errors by code."""
    report = json.load(open(out))
    return report["ok"], report["errors"]


def ensure_h2load():
    """h2load (Debian's nghttp2-client) makes the bursts: installed when missing and root, else a clear
    failure, never a report without its bursts."""
    import shutil
    if shutil.which("h2load"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        for command in (["apt-get", "install", "-y", "-qq", "nghttp2-client"],
                        ["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nghttp2-client"]):
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if shutil.which("h2load"):
                return
    sys.exit("h2load is needed for the bursts: install Debian's nghttp2-client")


def measure(args):
    work = tempfile.mkdtemp(prefix="connect-facade-connections-")
    run = Run(args, work)
    results = {"flags": args.facade_flag}
    try:
        # 1. idle after one call
        process, _ = run.loadgen("one", ["--concurrency", "1", "--calls", "1", "--warmup", "0s"])
        process.wait()
        time.sleep(1)
        results["idle"] = run.state()
        # 2. idle HTTP/2 connections
        if args.only_bursts:
            return measure_bursts(args, run, results, work)
        before = rss_mib(run.facade.pid)
        idle = open_sockets(run.port, args.idle_connections, PREFACE + EMPTY_SETTINGS)
        time.sleep(2)
        results["idle_h2"] = {"connections": len(idle), "open": run.state()["open"],
                              "kib_each": (rss_mib(run.facade.pid) - before) * 1024 / max(len(idle), 1)}
        for s in idle:
            s.close()
        time.sleep(2)
        # 3. silent connections
        caller, caller_out = run.caller("silent-caller", args.timeout + 8)
        time.sleep(1)
        peak = Peak(run.facade.pid)
        silent = open_sockets(run.port, args.silent)
        time.sleep(1)
        during = run.state()
        time.sleep(args.timeout + 3)
        after = run.state()
        results["silent"] = {"sent": args.silent, "connected": len(silent), "during": during,
                             "after_timeout": after, "still_open_after_timeout": still_open(silent),
                             "peak_rss_mib": peak.stop()}
        for s in silent:
            s.close()
        caller.wait()
        results["silent"]["caller_ok"], results["silent"]["caller_errors"] = caller_errors(caller_out)
        time.sleep(2)
        return measure_bursts(args, run, results, work)
    finally:
        run.stop()


def measure_bursts(args, run, results, work):
    try:
        # 4. bursts of connections with one call each
        bursts = []
        for burst in range(2):
            caller, caller_out = run.caller(f"burst-caller-{burst}", args.settle + 10)
            time.sleep(1)
            peak = Peak(run.facade.pid)
            h2load = subprocess.run(
                ["taskset", "-c", run.peer_cpu, "h2load", "-n", str(args.burst), "-c", str(args.burst),
                 "-m", "1", "-t", "1", f"--data={run.request}", "-H", "content-type: application/grpc",
                 "-H", "te: trailers",
                 f"{run.url}/amazonconnect.v1.ContactService/CreatePersistentContactAssociation"],
                capture_output=True, text=True)
            done = re.search(r"requests: .*?(\d+) succeeded, (\d+) failed", h2load.stdout)
            if not done:
                raise RuntimeError(f"h2load did not run: {h2load.stdout[-500:]} {h2load.stderr[-500:]}")
            right_after = run.state()
            time.sleep(args.settle)
            later = run.state()
            caller.wait()
            ok, errors = caller_errors(caller_out)
            bursts.append({"connections": args.burst, "succeeded": int(done.group(1)) if done else None,
                           "failed": int(done.group(2)) if done else None, "peak_rss_mib": peak.stop(),
                           "right_after": right_after, "after_20s": later, "caller_ok": ok,
                           "caller_errors": errors})
        results["bursts"] = bursts
        # 5. throughput
        process, out = run.loadgen("c64", ["--concurrency", "64", "--duration", f"{args.duration}s"])
        process.wait()
        results["c64_calls_per_s"] = json.load(open(out))["throughput_per_s"]
        results["end"] = run.state()
    finally:
        run.stop()
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results, work



WINDOWS = [65_535, 262_144, 1_048_576]


def measure_windows(args, work):
    """Per window: an idle HTTP/2 connection's cost, and calls/s at concurrency 64 (median of rounds)."""
    runs = {}
    try:
        for window in WINDOWS:
            os.makedirs(os.path.join(work, f"window-{window}"), exist_ok=True)
            runs[window] = Run(args, os.path.join(work, f"window-{window}"), [f"--connection-window={window}"])
        results = {}
        for window, run in runs.items():
            process, _ = run.loadgen(f"one-{window}", ["--concurrency", "1", "--calls", "1", "--warmup", "0s"])
            process.wait()
            time.sleep(1)
            before = rss_mib(run.facade.pid)
            idle = open_sockets(run.port, args.idle_connections, PREFACE + EMPTY_SETTINGS)
            time.sleep(2)
            results[window] = {"kib_each": (rss_mib(run.facade.pid) - before) * 1024 / max(len(idle), 1),
                               "c64": []}
            for sock in idle:
                sock.close()
        for round_ in range(args.window_rounds):
            order = WINDOWS if round_ % 2 == 0 else list(reversed(WINDOWS))
            for window in order:
                process, out = runs[window].loadgen(f"c64-{window}-{round_}",
                                                    ["--concurrency", "64", "--duration", f"{args.duration}s"])
                process.wait()
                results[window]["c64"].append(json.load(open(out))["throughput_per_s"])
        for result in results.values():
            result["c64_median"] = sorted(result["c64"])[len(result["c64"]) // 2]
        return results
    finally:
        for run in runs.values():
            run.stop()


def write_report(path, r, args):
    silent, bursts = r["silent"], r["bursts"]
    phases = [silent] + bursts
    errors = {}
    for phase in phases:
        for code, count in phase["caller_errors"].items():
            errors[code] = errors.get(code, 0) + count
    windows = r.get("windows", {})
    text = report.render(
        "CONNECTIONS.md.j2", commit=r["commit"], date=r["date"], flags=r["flags"], settle=args.settle,
        timeout=args.timeout, duration=args.duration, window_rounds=args.window_rounds,
        idle=r["idle"]["rss_mib"], idle_fds=r["idle"]["fds"], idle_h2=r["idle_h2"], silent=silent,
        bursts=bursts, c64_calls_per_s=r["c64_calls_per_s"], windows=windows,
        default_window=windows.get(str(262_144), windows.get(262_144)),
        peak=max([silent["peak_rss_mib"]] + [b["peak_rss_mib"] for b in bursts]),
        settled=max(b["after_20s"]["rss_mib"] for b in bursts),
        calls=sum(x["caller_ok"] + sum(x["caller_errors"].values()) for x in phases), errors=errors,
        # Shed by the overload bound beside the burst's own calls is the bound at work, not the flood.
        unserved={code: n for code, n in errors.items() if code != "ResourceExhausted"})
    # scripts/hostile_peers.py writes its own section: kept as it is.
    kept = open(path).read() if os.path.exists(path) else ""
    if "<!-- hostile-peers:begin -->" in kept:
        text += kept[kept.index("## Hostile peers"):].rstrip("\n") + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/dist")
    parser.add_argument("--idle-connections", type=int, default=500)
    parser.add_argument("--silent", type=int, default=3000)
    parser.add_argument("--burst", type=int, default=8000)
    parser.add_argument("--timeout", type=int, default=10, help="the facade's --handshake-timeout (s)")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--settle", type=int, default=20, help="seconds to wait after each burst")
    parser.add_argument("--out", default="docs/CONNECTIONS.md")
    parser.add_argument("--facade-flag", action="append", default=[],
                        help="an extra flag for the facade (repeatable; e.g. --facade-flag=--max-connections=20000)")
    parser.add_argument("--facade-env", action="append", default=[],
                        help="an environment variable for the facade, NAME=VALUE (repeatable)")
    parser.add_argument("--only-bursts", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--window-rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true",
                        help="every step for a moment, on the debug build; writes to a temporary file")
    args = parser.parse_args()
    if args.smoke:
        args.bin, args.out = "target/debug", tempfile.mktemp(suffix=".md")
        args.idle_connections, args.silent, args.burst = 50, 200, 300
        args.timeout, args.settle, args.duration = 2, 2, 2
        args.window_rounds = 1
    if not any(f.startswith("--handshake-timeout") for f in args.facade_flag):
        args.facade_flag.append(f"--handshake-timeout={args.timeout}s")
    ensure_h2load()
    results, work = measure(args)
    if not args.only_bursts:
        results["windows"] = measure_windows(args, work)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    results.update(commit=commit, date=time.strftime("%Y-%m-%d"))
    if not args.only_bursts:
        write_report(args.out, results, args)
        print(f"wrote {args.out} (raw results in {work}/results.json)")
        if args.smoke:
            report = open(args.out).read()
            if "## Targets" not in report or "| 2 | 300 |" not in report or "| 256 KiB |" not in report:
                sys.exit(f"the smoke run's report is incomplete:\n{report}")
            print("connections smoke run: every step ran")
    else:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
