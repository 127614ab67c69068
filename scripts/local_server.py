"""What the Python scripts that start local servers share (as scripts/lib.sh is for the shell ones):
a free port, waiting until something listens on one, reading a /metrics page, and a target's mark."""

import socket
import time
import urllib.request


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
