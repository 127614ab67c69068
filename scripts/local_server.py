"""What the Python scripts that start local servers share (as scripts/lib.sh is for the shell ones):
a free port, waiting until something listens on one, the processes started, an auth file of callers,
reading a /metrics page, and a target's mark."""

import hashlib
import os
import socket
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=60):
    """Until something listens on 127.0.0.1:port; fails after `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


def scrape(metrics_port):
    """The Prometheus exposition served on 127.0.0.1:metrics_port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as answer:
        return answer.read().decode()


def series_sum(text, name, labels=""):
    """Sum of every series `name` or `name{...}` whose labels contain `labels`.

    >>> series_sum('a_total{x="1",y="2"} 3\\na_total{x="2"} 4\\nab 9\\na 1', "a_total", 'x="1"')
    3.0
    >>> series_sum('a 1\\nab 9', "a")
    1.0
    """
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def verdict(ok):
    return "✅" if ok else "❌"


class Processes:
    """Every process started, stopped at the end whatever happens."""

    def __init__(self, work):
        self.work = work
        self.running = []

    def start(self, name, argv, cpu=None, env=None, stdout=None):
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        full_env = dict(os.environ, **(env or {}))
        err = open(os.path.join(self.work, f"{name}.err"), "ab")
        out = stdout if stdout is not None else open(os.path.join(self.work, f"{name}.out"), "ab")
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env, cwd=ROOT)
        self.running.append(process)
        return process

    def stop(self, process):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self):
        for process in self.running:
            self.stop(process)
        self.running = []

    def redis(self, port=None, cpu=None):
        """A redis-server of the script's own (never the machine's 6379), keeping nothing on disk."""
        port = port or free_port()
        process = self.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no"], cpu=cpu)
        wait_port(port)
        return process, port

    def simulator(self, binary, flags, cpu=None):
        """`connect-facade simulate` on a free port, with its URL (the first line it prints)."""
        process = self.start("simulator", [binary, "simulate", "--listen", "127.0.0.1:0",
                                           "--log-format", "json"] + flags,
                             cpu=cpu, stdout=subprocess.PIPE)
        return process, process.stdout.readline().decode().split()[-1]


def auth_file(work, callers):
    """An auth file of callers {name: (weight, max_rate)}, each with the bearer token `token-NAME`."""
    path = os.path.join(work, f"auth-{'-'.join(callers)}.yaml")
    with open(path, "w") as f:
        f.write("callers:\n")
        for name, (weight, max_rate) in callers.items():
            digest = hashlib.sha256(f"token-{name}".encode()).hexdigest()
            f.write(f"  - name: {name}\n    token_sha256: \"{digest}\"\n    instances: [\"*\"]\n"
                    f"    weight: {weight}\n")
            if max_rate:
                f.write(f"    max_rate: {max_rate}\n")
    return path
