#!/usr/bin/env python3
"""Hostile peers against the optimised (`dist`) facade (issue 29's attacks, from outside, as raw sockets and a
raw HTTP/2 client): per attack, the facade's peak RSS, how soon the attack's requests are answered or
its connections closed, the log bytes it cost, and whether a normal caller on its own connection (5
calls a second) kept being served; then calls/s and CPU per call at concurrency 64. Writes the
"Hostile peers" section of docs/CONNECTIONS.md (scripts/connections.py keeps it when it rewrites
the rest). `--before DIR` also measures the throughput of another build (e.g. a build of the commit
before the bounds), in interleaved rounds.

Needs the `h2` package (scripts/requirements-connections.txt): its flow control and HPACK make the
HTTP/2 peers exact where hand-made frames would not be.
"""

import argparse
import json
import os
import re
import selectors
import socket
import sys
import tempfile
import time

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
except ImportError:
    sys.exit("hostile_peers.py needs the h2 package: pip install -r scripts/requirements-connections.txt")

from connections import Peak, Run, caller_errors, rss_mib
from local_server import scrape, series_sum
import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RPC = "/amazonconnect.v1.ContactService/CreatePersistentContactAssociation"
BEGIN, END = "<!-- hostile-peers:begin -->", "<!-- hostile-peers:end -->"


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Clock:
    """When each of a set of peers got its answer (or its connection closed)."""

    def __init__(self):
        self.started, self.ended = time.monotonic(), []

    def end(self):
        self.ended.append(time.monotonic() - self.started)

    def summary(self, total):
        times = sorted(self.ended)
        return {"ended": len(times), "of": total,
                "median_s": times[len(times) // 2] if times else None,
                "max_s": times[-1] if times else None}


class H2Peer:
    """One HTTP/2 connection that opens gRPC streams and may leave them unfinished."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.statuses, self.closed, self.goaway = {}, False, False
        self.pending = {}
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def open_stream(self, payload, extra=()):
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", RPC),
                                        (":authority", "facade"), ("content-type", "application/grpc"),
                                        ("te", "trailers")] + list(extra))
        self.pending[stream] = payload
        self.send_pending()
        return stream

    def send_pending(self):
        """Sends what flow control allows of each stream's unsent bytes (never END_STREAM)."""
        for stream, payload in list(self.pending.items()):
            try:
                window = min(len(payload), self.conn.local_flow_control_window(stream))
            except h2.exceptions.StreamClosedError:
                del self.pending[stream]
                continue
            chunk = self.conn.max_outbound_frame_size
            for start in range(0, window, chunk):
                self.conn.send_data(stream, payload[start:min(start + chunk, window)])
            if window == len(payload):
                del self.pending[stream]
            else:
                self.pending[stream] = payload[window:]
        self.flush()

    def receive(self):
        """Reads what is there; answers the events (grpc-status by stream, resets, GOAWAY)."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return []
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # A frame after the GOAWAY in the same read (a PING): h2 has closed the connection.
            self.goaway = self.goaway or self.conn.state_machine.state == h2.connection.ConnectionState.CLOSED
            self.closed = True
            return []
        for event in events:
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                for name, value in event.headers:
                    if name == b"grpc-status":
                        self.statuses[event.stream_id] = value.decode()
            elif isinstance(event, h2.events.StreamReset):
                self.statuses.setdefault(event.stream_id, "reset")
                self.pending.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = True
        if self.pending and not self.goaway:
            self.send_pending()
        self.flush()
        return events


def pump(peers, seconds, until=None):
    """Serves the peers' sockets for at most `seconds`, or until `until()` holds."""
    selector = selectors.DefaultSelector()
    for peer in peers:
        peer.sock.setblocking(False)
        selector.register(peer.sock, selectors.EVENT_READ, peer)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and until()):
        for key, _ in selector.select(0.05):
            peer = key.data
            peer.receive()
            if peer.closed:
                selector.unregister(peer.sock)
    selector.close()


def http1_answers(sockets, seconds):
    """When each HTTP/1.1 socket got its answer's status line (or was closed), and which statuses."""
    clock, statuses = Clock(), {}
    selector = selectors.DefaultSelector()
    for s in sockets:
        selector.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while len(clock.ended) < len(sockets) and time.monotonic() < deadline:
        for key, _ in selector.select(0.1):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            match = re.match(rb"HTTP/1.1 (\d+)", data)
            answer = match.group(1).decode() if match else "closed"
            statuses[answer] = statuses.get(answer, 0) + 1
            clock.end()
            selector.unregister(key.fileobj)
    for s in sockets:
        s.close()
    return {**clock.summary(len(sockets)), "answers": statuses}


def connect_stalled_http1(run, count):
    """Connect JSON over HTTP/1.1, a Content-Length of 100 and no body: answered when, and how."""
    head = (f"POST {RPC} HTTP/1.1\r\nhost: facade\r\ncontent-type: application/json\r\n"
            "content-length: 100\r\n\r\n").encode()
    sockets = [socket.create_connection(("127.0.0.1", run.port)) for _ in range(count)]
    for s in sockets:
        s.sendall(head)
    return http1_answers(sockets, 30)


def grpc_stalled_h2(run, connections, streams):
    """gRPC over h2c, 15 bytes of a 100-byte message and nothing more: when each stream is answered."""
    peers = [H2Peer(run.port) for _ in range(connections)]
    clock = Clock()
    opened = [(peer, peer.open_stream(bytes([0, 0, 0, 0, 100]) + b"\x0a" * 10))
              for peer in peers for _ in range(streams)]
    answered = set()

    def all_answered():
        for peer, stream in opened:
            if (id(peer), stream) not in answered and stream in peer.statuses:
                answered.add((id(peer), stream))
                clock.end()
        return len(answered) == len(opened)

    pump(peers, 30, all_answered)
    codes = {}
    for peer, stream in opened:
        code = peer.statuses.get(stream, "none")
        codes[code] = codes.get(code, 0) + 1
    return {**clock.summary(len(opened)), "grpc_status": codes}


def http1_big_headers(run, count, size):
    """HTTP/1.1 peers sending `size` bytes of headers that never end: answered (431) or closed when."""
    sockets = []
    line = b"POST / HTTP/1.1\r\nhost: facade\r\nx-padding: " + b"a" * size
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", run.port))
        s.setblocking(False)
        try:
            s.send(line)
        except BlockingIOError:
            pass
        sockets.append(s)
    return http1_answers(sockets, 40)


def unfinished_streams(run, connections, streams, sent, announced):
    """HTTP/2 connections of streams sending `sent` bytes of an `announced`-byte message, never the
    rest: how each stream and connection ends (refused, reset, deadline) and when."""
    peers = [H2Peer(run.port) for _ in range(connections)]
    clock = Clock()
    frame = bytes([0]) + announced.to_bytes(4, "big") + b"\x0a" * (sent - 5)
    opened = []
    for peer in peers:
        for _ in range(streams):
            if peer.closed:
                break
            opened.append((peer, peer.open_stream(frame)))
            peer.sock.setblocking(False)
            peer.receive()
    ended = set()

    def all_ended():
        for peer, stream in opened:
            if (id(peer), stream) not in ended and (stream in peer.statuses or peer.closed or peer.goaway):
                ended.add((id(peer), stream))
                clock.end()
        return len(ended) == len(opened)

    pump(peers, 30, all_ended)
    codes = {}
    for peer, stream in opened:
        code = peer.statuses.get(stream) or ("connection reset" if peer.closed or peer.goaway else "none")
        codes[code] = codes.get(code, 0) + 1
    for peer in peers:
        peer.sock.close()
    return {**clock.summary(len(opened)), "streams": codes,
            "connections_reset": sum(1 for peer in peers if peer.closed or peer.goaway)}


def log_flood(run, calls, id_length):
    """Refused calls (INVALID_ARGUMENT) with an `id_length`-character instance id, over HTTP/1.1
    keep-alive: the log bytes they cost, the first 100 and all of them."""
    body = json.dumps({"instanceId": "i" * id_length, "initialContactId": "c",
                       "rehydrationType": "ENTIRE_PAST_SESSION", "sourceContactId": "s"}).encode()
    request = (f"POST {RPC} HTTP/1.1\r\nhost: facade\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
    log = os.path.join(run.work, "facade.err")
    sock = socket.create_connection(("127.0.0.1", run.port))
    reader = sock.makefile("rb")
    sizes, started = [os.path.getsize(log)], time.monotonic()
    answers = {}
    for i in range(calls):
        sock.sendall(request)
        status = reader.readline().split()[1].decode()
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        reader.read(length)
        answers[status] = answers.get(status, 0) + 1
        if i == 99:
            time.sleep(0.2)
            sizes.append(os.path.getsize(log))
    took = time.monotonic() - started
    time.sleep(1.5)
    sizes.append(os.path.getsize(log))
    sock.close()
    metrics = scrape(run.metrics)
    return {"calls": calls, "id_length": id_length, "answers": answers, "seconds": took,
            "log_bytes_first_100_per_call": (sizes[1] - sizes[0]) / 100,
            "log_bytes_per_call": (sizes[2] - sizes[0]) / calls,
            "suppressed": series_sum(metrics, "connect_facade_log_lines_suppressed_total")}


def idle_pinging(run, seconds):
    """An HTTP/2 connection with no call that answers every PING: when its GOAWAY comes."""
    peer, clock = H2Peer(run.port), Clock()
    pump([peer], seconds, lambda: peer.goaway or peer.closed)
    if peer.goaway or peer.closed:
        clock.end()
    peer.sock.close()
    return {**clock.summary(1), "goaway": peer.goaway}


def attack(run, name, seconds, action):
    """Runs one attack beside a normal caller (for `seconds`), with the facade's peak RSS and log
    growth."""
    log = os.path.join(run.work, "facade.err")
    caller, caller_out = run.caller(f"caller-{name}", seconds)
    time.sleep(1)
    before_rss, before_log = rss_mib(run.facade.pid), os.path.getsize(log)
    peak = Peak(run.facade.pid)
    result = action()
    result["peak_rss_mib"], result["rss_before_mib"] = peak.stop(), before_rss
    result["log_bytes"] = os.path.getsize(log) - before_log
    caller.wait()
    result["caller_ok"], result["caller_errors"] = caller_errors(caller_out)
    time.sleep(2)
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def throughput(args, work, builds):
    """calls/s and facade CPU per call at concurrency 64, interleaved rounds per build."""
    runs = {}
    for label, (path, flags) in builds.items():
        os.makedirs(os.path.join(work, label), exist_ok=True)
        runs[label] = Run(argparse.Namespace(**{**vars(args), "bin": path}), os.path.join(work, label), flags)
    results = {label: {"calls_per_s": [], "cpu_us_per_call": []} for label in builds}
    try:
        for round_ in range(args.rounds):
            for label in (builds if round_ % 2 == 0 else list(reversed(list(builds)))):
                run = runs[label]
                cpu = cpu_seconds(run.facade.pid)
                process, out = run.loadgen(f"c64-{round_}", ["--concurrency", "64", "--duration",
                                                             f"{args.duration}s"])
                process.wait()
                report = json.load(open(out))
                calls = report["ok"] + sum(report["errors"].values())
                results[label]["calls_per_s"].append(report["throughput_per_s"])
                results[label]["cpu_us_per_call"].append(
                    (cpu_seconds(run.facade.pid) - cpu) * 1e6 / max(calls, 1))
        for result in results.values():
            for key in ("calls_per_s", "cpu_us_per_call"):
                result[key + "_median"] = sorted(result[key])[len(result[key]) // 2]
        return results
    finally:
        for run in runs.values():
            run.stop()


def measure(args):
    work = tempfile.mkdtemp(prefix="connect-facade-hostile-")
    n = args.scale
    results = {}
    run = Run(args, work)
    try:
        process, _ = run.loadgen("one", ["--concurrency", "1", "--calls", "1", "--warmup", "0s"])
        process.wait()
        time.sleep(1)
        results["idle_rss_mib"] = rss_mib(run.facade.pid)
        results["stalled_connect_http1"] = attack(run, "stalled-connect", 12,
                                                  lambda: connect_stalled_http1(run, 200 // n))
        results["stalled_grpc_h2c"] = attack(run, "stalled-grpc", 12, lambda: grpc_stalled_h2(run, 8, 25 // n))
        results["http1_headers"] = attack(run, "headers", 5,
                                          lambda: http1_big_headers(run, 250 // n, 390 * 1024))
        results["streams_64k"] = attack(run, "streams-64k", 8,
                                        lambda: unfinished_streams(run, 16 // n, 256, 65_000, 65_531))
        results["streams_small"] = attack(run, "streams-small", 12,
                                          lambda: unfinished_streams(run, 32 // n, 256, 10, 100))
        results["log_flood"] = attack(run, "log-flood", 8, lambda: log_flood(run, 3000 // n, 60_000))
        metrics = scrape(run.metrics)
        results["closed"] = {reason: series_sum(metrics, "connect_facade_connections_closed_total",
                                                f'reason="{reason}"')
                             for reason in ("buffer", "idle", "max_age", "cap", "handshake_timeout")}
        results["open_requests_refused"] = series_sum(metrics, "connect_facade_open_requests_refused_total")
    finally:
        run.stop()
    idle_work = os.path.join(work, "idle")
    os.makedirs(idle_work)
    run = Run(args, idle_work, [f"--idle-timeout={args.idle_timeout}s", "--keepalive-interval=1s"])
    try:
        results["idle_pinging"] = attack(run, "idle-pinging", args.idle_timeout + 2,
                                         lambda: idle_pinging(run, args.idle_timeout + 10))
    finally:
        run.stop()
    builds = {"this build": (args.bin, [])}
    if args.before:
        # The replay cache off too, to tell this build's bounds from every call's replay lookup.
        builds["this build, --replay-window 0"] = (args.bin, ["--replay-window=0s"])
        builds["before"] = (args.before, [])
    results["throughput"] = throughput(args, work, builds)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results, work


def seconds(summary):
    if summary["median_s"] is None:
        return "none"
    return f"{summary['median_s']:.2f} s / {summary['max_s']:.2f} s ({summary['ended']} of {summary['of']})"


def counts(mapping):
    return ", ".join(f"{key}: {value}" for key, value in sorted(mapping.items())) or "none"


def caller(result):
    errors = sum(result["caller_errors"].values())
    return f"{result['caller_ok']} of {result['caller_ok'] + errors} served" + \
        (f" ({counts(result['caller_errors'])})" if errors else "")


def section(r, args):
    """The report's markdown (docs/templates/hostile_peers.md.j2) from the figures."""
    attacks = [
        ("Connect body that never comes, HTTP/1.1 (Content-Length 100, no body)", "stalled_connect_http1",
         f"{r['stalled_connect_http1']['of']} connections", counts(r["stalled_connect_http1"]["answers"])),
        ("gRPC message that never completes, h2c (15 of 100 bytes)", "stalled_grpc_h2c",
         f"{r['stalled_grpc_h2c']['of']} streams on 8 connections",
         "grpc-status " + counts(r["stalled_grpc_h2c"]["grpc_status"])),
        ("HTTP/1.1 headers of 390 KB that never end", "http1_headers", f"{r['http1_headers']['of']} connections",
         counts(r["http1_headers"]["answers"])),
        ("HTTP/2: 256 streams per connection, 65,000 of 65,531 bytes each", "streams_64k",
         f"{r['streams_64k']['of']} streams",
         f"{r['streams_64k']['connections_reset']} connections reset; streams: {counts(r['streams_64k']['streams'])}"),
        ("HTTP/2: 256 streams per connection, 10 of 100 bytes each", "streams_small",
         f"{r['streams_small']['of']} streams", f"streams: {counts(r['streams_small']['streams'])}"),
        ("idle HTTP/2 connection answering PINGs", "idle_pinging", "1 connection",
         f"GOAWAY: {r['idle_pinging']['goaway']}"),
    ]
    env = report.environment()
    env.filters.update(seconds=seconds, counts=counts, caller=caller)
    return env.get_template("hostile_peers.md.j2").render(
        commit=r["commit"], date=r["date"], idle_timeout=args.idle_timeout, idle_rss_mib=r["idle_rss_mib"],
        attacks=[{"name": name, "result": r[key], "size": size, "how": how} for name, key, size, how in attacks],
        flood=r["log_flood"], closed=r["closed"], open_requests_refused=r["open_requests_refused"],
        throughput=r["throughput"]).rstrip("\n")


def write_section(path, text):
    """Puts the section between its markers in `path` (at the end when it has none yet)."""
    report = open(path).read() if os.path.exists(path) else ""
    if BEGIN in report and END in report:
        report = report[:report.index(BEGIN)] + text + report[report.index(END) + len(END):]
    else:
        report = report.rstrip("\n") + "\n\n## Hostile peers\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(report)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/dist")
    parser.add_argument("--before", help="another build's directory, whose throughput is measured too")
    parser.add_argument("--duration", type=int, default=10, help="seconds per throughput round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle-timeout", type=int, default=5)
    parser.add_argument("--out", default="docs/CONNECTIONS.md")
    parser.add_argument("--smoke", action="store_true",
                        help="every attack, smaller, on the debug build; writes to a temporary file")
    args = parser.parse_args()
    args.scale, args.facade_flag, args.facade_env = 1, [], []
    if args.smoke:
        args.bin, args.out, args.scale = "target/debug", tempfile.mktemp(suffix=".md"), 4
        args.duration, args.rounds, args.idle_timeout = 2, 1, 2
    results, work = measure(args)
    commit = subprocess_output(["git", "rev-parse", "--short", "HEAD"])
    results.update(commit=commit, date=time.strftime("%Y-%m-%d"))
    write_section(args.out, section(results, args))
    print(f"wrote {args.out} (raw results in {work}/results.json)")
    if args.smoke:
        failures = [name for name in ("stalled_connect_http1", "stalled_grpc_h2c", "http1_headers", "idle_pinging")
                    if results[name]["ended"] < results[name]["of"]]
        if failures:
            sys.exit(f"hostile peers smoke run: not all answered or closed: {failures}")
        print("hostile peers smoke run: every attack ran and ended")


def subprocess_output(argv):
    import subprocess
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
