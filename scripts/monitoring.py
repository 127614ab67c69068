#!/usr/bin/env python3
"""deploy/monitoring/ against a real Prometheus: two facade replicas (TLS, an auth file of four
callers, two OIDC issuers whose keys are fetched over HTTPS, one answering and one down, one account's
quota shared through a redis-server of the script's own) call the simulator,
whose quota throttles them; two callers flood past the quota (one also past its own max_rate), a
third repeats its client token (replays), and for a while a fourth calls an instance that AWS fails
(retries, errors, the circuit breaker). Prometheus (Debian's package) scrapes both replicas every second and evaluates
rules.yaml. Then, through Prometheus's HTTP API:

- every rule is loaded and healthy;
- every recording rule, every alert's expression (each operand of `or`/`and`, without its threshold)
  and every query of dashboard.json (Grafana's variables replaced as Grafana would), and every
  template variable's label_values(), return at least one series: a misspelt metric or label fails;
- the TLS alert (the test certificate expires in 10 days) is pending or firing.

With --png, the dashboard's quota and outcome panels are drawn from the run (matplotlib, from
Prometheus's query_range) to that file; docs/operators/observability.md shows it.

Usage: scripts/monitoring.py [--bin target/debug] [--smoke] [--png docs/images/dashboard.png]
  (needs prometheus, redis-server and openssl on PATH; --png needs matplotlib)
"""

import argparse
import base64
import http.server
import json
import os
import re
import shutil
import subprocess
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_server import ROOT, Processes, auth_file, free_port, wait_port  # noqa: E402

import yaml  # noqa: E402

MONITORING = os.path.join(ROOT, "deploy", "monitoring")
INSTANCE = "11111111-2222-3333-4444-555555555555"
# An instance whose every AWS call fails with InternalServiceException (a simulator fault).
BROKEN = "22222222-3333-4444-5555-666666666666"
SIM_QUOTA = 4  # AWS's quota in the simulator, requests/s
FACADE_RATE = 5  # what the facades allow: above AWS's, so AWS throttles (and the facades adapt)
JOB = "connect-facade"
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
SET_OPERATORS = {"or", "and", "unless"}


def query(prometheus, expr, at=None):
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    return api(prometheus, "query", params)["result"]


def api(prometheus, path, params=None):
    url = f"{prometheus}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as answer:
        body = json.load(answer)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def grafana(expr, rate_interval):
    """A dashboard query as Grafana sends it: the job, every replica and key, the rate interval."""
    return (expr.replace("$__rate_interval", rate_interval).replace("$job", JOB)
            .replace("$instance", ".*").replace("$key", ".*"))


def operands(expr):
    """The parts of an alert's expression that must each return series: the expression without its
    thresholds, each side of `or`/`and`/`unless` on its own (parsed by promql-parser, not by text).
    A comparison against a scalar only filters, so its vector side is what is checked; absent()
    returns series only when its argument has none, so its argument is what is checked.

    >>> operands('a:b > 0 or max by (k) (c{j="x"}) == 1')
    ['a:b{}', 'max by (k)(c{j="x"})']
    >>> operands('min(d) - time() < 14 * 86400')
    ['min(d{}) - time()']
    >>> operands('a > bool 1')
    ['a{} > bool 1']
    >>> operands('absent(up{job="x"} == 1)')
    ['up{job="x"}']
    """
    import promql_parser

    def scalar(node):
        if isinstance(node, promql_parser.NumberLiteral):
            return True
        if isinstance(node, promql_parser.ParenExpr):
            return scalar(node.expr)
        if isinstance(node, promql_parser.BinaryExpr):
            return scalar(node.lhs) and scalar(node.rhs)
        if isinstance(node, promql_parser.Call):
            return node.func.name in ("time", "scalar", "pi")
        return False

    def walk(node):
        # With `bool`, a comparison keeps every series: it is checked whole.
        if isinstance(node, promql_parser.BinaryExpr) and "bool" not in str(node.modifier):
            op = str(node.op)
            if op in SET_OPERATORS:
                return walk(node.lhs) + walk(node.rhs)
            if op in COMPARISONS and scalar(node.rhs):
                return walk(node.lhs)
            if op in COMPARISONS and scalar(node.lhs):
                return walk(node.rhs)
        if isinstance(node, promql_parser.ParenExpr):
            return walk(node.expr)
        if isinstance(node, promql_parser.Call) and node.func.name in ("absent", "absent_over_time"):
            return walk(node.args[0])
        return [node]

    return [" ".join(str(part).split()) for part in walk(promql_parser.parse(expr))]


def certificate(work):
    cert, key = os.path.join(work, "tls.crt"), os.path.join(work, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "10", "-subj", "/CN=localhost", "-keyout", key, "-out", cert,
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    # A leaf, not a CA: rustls refuses a CA certificate as the server's own.
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True)
    return cert, key


def issuer_keys(work, cert, key):
    """An issuer's JWK set (one RSA key, made with openssl) served over HTTPS with `cert` on a free
    port, in a thread of this process: its URL."""
    rsa = os.path.join(work, "issuer-rsa.pem")
    subprocess.run(["openssl", "genrsa", "-out", rsa, "2048"], check=True, capture_output=True)
    modulus = subprocess.run(["openssl", "rsa", "-in", rsa, "-noout", "-modulus"], check=True,
                             capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    n = base64.urlsafe_b64encode(bytes.fromhex(modulus)).rstrip(b"=").decode()
    jwks = json.dumps({"keys": [{"kty": "RSA", "kid": "monitoring-1", "alg": "RS256", "use": "sig",
                                 "n": n, "e": "AQAB"}]}).encode()

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "application/json")
            # Without a length the body ends at the close, which TLS reports as an unclean EOF.
            self.send_header("content-length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{server.server_address[1]}/openid/v1/jwks"


class Run:
    def __init__(self, args, processes, work):
        self.bin = args.bin
        self.p = processes
        self.work = work

    def start_all(self):
        cert, key = certificate(self.work)
        self.cert = cert
        _, redis_port = self.p.redis()
        _, simulator_url = self.p.simulator(f"{self.bin}/connect-facade", [
            "--fixtures", "fixtures/bench.yaml",
            "--quota-rate", str(SIM_QUOTA), "--quota-burst", str(SIM_QUOTA),
            "--fault", f"kind=error,code=InternalServiceException,instance_id={BROKEN}"])
        callers = auth_file(self.work, {"web": (3, None), "batch": (1, 1), "retrier": (1, None), "ops": (1, None)})
        # Two issuers for the fetched keys' series: one answering, one down (nothing listens).
        with open(callers, "a") as f:
            f.write(f"issuers:\n  - issuer: https://issuer.monitoring\n    jwks_url: {issuer_keys(self.work, cert, key)}\n"
                    f"    ca_file: {cert}\n  - issuer: https://issuer.down\n"
                    f"    jwks_url: https://127.0.0.1:{free_port()}/openid/v1/jwks\n    ca_file: {cert}\n"
                    "    refresh_seconds: 2\n    min_refresh_seconds: 1\n")
        self.grpc, self.metrics = [], []
        for _ in range(2):
            port, metrics = free_port(), free_port()
            env = {"AWS_ACCESS_KEY_ID": "AKIDMONITORING", "AWS_SECRET_ACCESS_KEY": "monitoring-secret",
                   "AWS_EC2_METADATA_DISABLED": "true", "RUST_LOG": "info"}
            self.p.start(f"facade-{port}", [
                f"{self.bin}/connect-facade", "serve", "--listen", f"127.0.0.1:{port}",
                "--metrics-listen", f"127.0.0.1:{metrics}", "--region", "us-east-1",
                "--endpoint-url", simulator_url, "--log-format", "json",
                "--tls-cert", cert, "--tls-key", key, "--auth-file", callers,
                "--quota-store", f"redis://127.0.0.1:{redis_port}",
                "--rate-limit", str(FACADE_RATE), "--rate-burst", str(FACADE_RATE),
                "--breaker-cool-down", "5s"], env=env)
            wait_port(port)
            wait_port(metrics)
            self.grpc.append(f"https://127.0.0.1:{port}")
            self.metrics.append(f"127.0.0.1:{metrics}")
        self.prometheus = self.start_prometheus()

    def start_prometheus(self):
        port = free_port()
        config = os.path.join(self.work, "prometheus.yml")
        with open(config, "w") as f:
            yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [os.path.join(MONITORING, "rules.yaml")],
                "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": self.metrics}]}],
            }, f)
        self.p.start("prometheus", [
            "prometheus", f"--config.file={config}", f"--storage.tsdb.path={self.work}/tsdb",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                    return url
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("prometheus is not ready after 60 s (see prometheus.err)")
                time.sleep(0.2)

    def load(self, schedule):
        """schedule: (start s, duration s, caller, rate/s, extra loadgen flags); waits for all."""
        began = time.time()
        pending = sorted(schedule)
        running = []
        while pending or any(process.poll() is None for process in running):
            while pending and time.time() - began >= pending[0][0]:
                start, duration, caller, rate, extra = pending.pop(0)
                running.append(self.p.start(f"loadgen-{caller}-{start}", [
                    f"{self.bin}/loadgen", "run", "--url", ",".join(self.grpc), "--ca", self.cert,
                    "--rate", str(rate), "--duration", f"{duration}s", "--warmup", "0s", "--quiet",
                    "--bearer", f"token-{caller}", "--label", caller] + extra))
            time.sleep(0.2)
        failed = [process.args for process in running if process.returncode != 0]
        if failed:
            raise RuntimeError(f"loadgen failed: {failed}")
        return began


def schedule(smoke):
    broken = ["--instance-id", BROKEN]
    repeat = ["--tokens", "repeat"]
    if smoke:
        return [(0, 30, "web", 6, []), (0, 30, "batch", 3, []), (0, 30, "retrier", 1, repeat),
                (10, 8, "ops", 2, broken)]
    # Calm, then a flood past the quota (batch also past its max_rate), calm again, and then AWS
    # failing one instance for 20 s while the quota has room, so its retries and errors show.
    return [(0, 240, "retrier", 0.5, repeat), (0, 60, "web", 2, []), (60, 90, "web", 7, []),
            (60, 90, "batch", 3, []), (150, 90, "web", 2, []), (180, 20, "ops", 1, broken)]


def dashboard_queries(dashboard):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def check(prometheus, rules, dashboard, rate_interval):
    """Every expression returns series; a list of failures (empty when all passed)."""
    failures = []
    at = time.time()
    groups = api(prometheus, "rules")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    expected = [rule for group in rules["groups"] for rule in group["rules"]]
    for rule in expected:
        name = rule.get("record") or rule.get("alert")
        state = loaded.get(name)
        if not state or state["health"] != "ok":
            failures.append(f"rule {name} is not loaded and healthy: {state}")
    rows = []
    for rule in expected:
        if "record" in rule:
            rows.append((f"record {rule['record']}", rule["record"]))
        else:
            for part in operands(rule["expr"]):
                rows.append((f"alert {rule['alert']}", part))
    for title, target in dashboard_queries(dashboard):
        rows.append((f"panel {title!r} {target['refId']}", grafana(target["expr"], rate_interval)))
    for source, expr in rows:
        series = query(prometheus, expr, at)
        print(f"{'ok  ' if series else 'FAIL'} {len(series):3} series  {source}: {' '.join(expr.split())[:110]}")
        if not series:
            failures.append(f"{source} returned no series: {expr}")
    for variable in dashboard["templating"]["list"]:
        found = re.fullmatch(r"label_values\((.*), (\w+)\)", variable.get("definition", ""))
        if not found:
            continue
        values = api(prometheus, f"label/{found.group(2)}/values",
                     {"match[]": grafana(found.group(1), rate_interval)})
        print(f"{'ok  ' if values else 'FAIL'} variable ${variable['name']}: {values}")
        if not values:
            failures.append(f"variable {variable['name']} has no values")
    alerts = {alert["labels"]["alertname"]: alert["state"] for alert in api(prometheus, "alerts")["alerts"]}
    print(f"alerts pending or firing: {alerts}")
    if alerts.get("ConnectFacadeTlsCertificateExpiring") not in ("pending", "firing"):
        failures.append("the TLS alert is not pending for a certificate that expires in 10 days")
    return failures


PICTURE = ["Quota used vs the limit, per account and region", "Quota yield: share of attempts AWS answered OK",
           "Calls by outcome", "AWS attempts by AWS error code"]


def picture(prometheus, dashboard, began, path):
    """The dashboard's quota and outcome panels over the run, drawn from query_range."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    end = time.time()
    figure, axes = plt.subplots(2, 2, figsize=(14, 7.5), constrained_layout=True)
    for axis, title in zip(axes.flat, PICTURE):
        panel = panels[title]
        unit = panel["fieldConfig"]["defaults"].get("unit")
        for target in panel["targets"]:
            data = api(prometheus, "query_range", {"query": grafana(target["expr"], "10s"), "start": began,
                                                   "end": end, "step": 2})["result"]
            for series in data:
                label = re.sub(r"\{\{(\w+)\}\}", lambda m: series["metric"].get(m.group(1), ""),
                               target["legendFormat"]).strip()
                times = [float(t) - began for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                if unit == "percentunit":
                    values = [100 * v for v in values]
                axis.plot(times, values, label=label, linestyle="--" if "limit" in label else "-")
        axis.set_title(title, fontsize=11)
        axis.set_xlabel("seconds into the run")
        axis.set_ylabel({"reqps": "per second", "percentunit": "%"}.get(unit, unit))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    figure.suptitle("connect-facade dashboard (deploy/monitoring/dashboard.json): two replicas, one account "
                    f"quota of {SIM_QUOTA}/s, a flood at 60–150 s, AWS failing one instance at 180–200 s",
                    fontsize=11)
    figure.savefig(path, dpi=90)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "debug"))
    parser.add_argument("--smoke", action="store_true", help="a 30 s load (CI) instead of 4 minutes")
    parser.add_argument("--png", help="draw the quota and outcome panels to this file")
    args = parser.parse_args()
    for tool in ("prometheus", "redis-server", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not on PATH (Debian: apt-get install prometheus redis-server openssl)")
    with open(os.path.join(MONITORING, "rules.yaml")) as f:
        rules = yaml.safe_load(f)
    with open(os.path.join(MONITORING, "dashboard.json")) as f:
        dashboard = json.load(f)
    work = tempfile.mkdtemp(prefix="connect-facade-monitoring-")
    processes = Processes(work)
    try:
        run = Run(args, processes, work)
        run.start_all()
        began = run.load(schedule(args.smoke))
        time.sleep(4)  # the last scrape and rule evaluation
        failures = check(run.prometheus, rules, dashboard, "1m")
        if args.png:
            picture(run.prometheus, dashboard, began, args.png)
    finally:
        processes.stop_all()
    if failures:
        print("\n".join(["FAIL:"] + failures) + f"\n(logs in {work})")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("monitoring checks: all passed")


if __name__ == "__main__":
    main()
