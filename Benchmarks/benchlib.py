"""Shared by the Python benchmarks (hung.py, nesting.py, tenants.py): the release binary, waiting
for a port, percentiles."""
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_BINARY = os.path.join(ROOT, ".build/release/cacheroute")


def ensure_binary(path):
    """Builds cacheroute in release mode when `path` is the default and missing."""
    if not os.path.exists(path):
        subprocess.run(["swift", "build", "-c", "release", "--product", "cacheroute"], cwd=ROOT, check=True)


def wait_port(port, timeout=30):
    """Waits until something listens on 127.0.0.1:`port` (exits after `timeout` seconds)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("port %d never opened" % port)


def percentile(values, q):
    """The `q` quantile (0-1) of `values`, nearest rank; NaN when empty."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
