"""What the Python scripts that start local servers share (as scripts/lib.sh is for the shell ones):
a free port, waiting until something listens on one, the processes started, an auth file of callers,
and reading a /metrics page."""

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


def redis_cli(port, *command):
    """One command's answer from the Redis on 127.0.0.1:port ("" when it does not answer)."""
    try:
        return subprocess.run(["redis-cli", "-p", str(port)] + list(command), capture_output=True,
                              text=True, timeout=5).stdout
    except subprocess.TimeoutExpired:
        return ""


def wait_until(check, what, seconds=30):
    """Polls `check` every 0.1 s until it holds; fails after `seconds`."""
    deadline = time.time() + seconds
    while not check():
        if time.time() > deadline:
            raise RuntimeError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


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

    def redis(self, port=None, cpu=None, extra=()):
        """A redis-server of the script's own (never the machine's 6379), keeping nothing on disk."""
        port = port or free_port()
        process = self.start(f"redis-{port}", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                               "--save", "", "--appendonly", "no", "--dir", self.work]
                             + list(extra), cpu=cpu)
        wait_port(port)
        return process, port

    def redis_cluster(self, masters, replicas_each, cpu=None):
        """A Redis Cluster built with `redis-cli --cluster create`: [(process, port)], masters first.
        A replica fails over whatever the age of its data (a short run may not have finished its
        first sync)."""
        nodes = []
        for _ in range(masters * (1 + replicas_each)):
            port = free_port()
            nodes.append(self.redis(port, cpu, [
                # The bus port is named: Redis's default (port + 10000) is out of range above 55535.
                "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"]))
        subprocess.run(["redis-cli", "--cluster", "create"] + [f"127.0.0.1:{port}" for _, port in nodes]
                       + ["--cluster-replicas", str(replicas_each), "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL)
        wait_until(lambda: all("cluster_state:ok" in redis_cli(port, "CLUSTER", "INFO") for _, port in nodes),
                   "the cluster is ok")
        return nodes

    def redis_sentinels(self, service, cpu=None):
        """A master, its replica and three sentinels watching them as `service`:
        (master, replica, [sentinel]), each (process, port)."""
        master = self.redis(cpu=cpu)
        replica = self.redis(cpu=cpu, extra=["--replicaof", "127.0.0.1", str(master[1])])
        sentinels = []
        for _ in range(3):
            port = free_port()
            conf = os.path.join(self.work, f"sentinel-{port}.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {self.work}\n"
                        f"sentinel monitor {service} 127.0.0.1 {master[1]} 2\n"
                        f"sentinel down-after-milliseconds {service} 1000\n"
                        f"sentinel failover-timeout {service} 5000\n")
            sentinels.append((self.start(f"sentinel-{port}", ["redis-server", conf, "--sentinel"], cpu=cpu), port))
            wait_port(port)
        wait_until(lambda: redis_cli(sentinels[0][1], "SENTINEL", "REPLICAS", service).strip() != "",
                   "the sentinels know the replica")
        return master, replica, sentinels

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
