#!/usr/bin/env python3
"""A hung replica under load: how long do clients wait, and does any request fail?

Three emulated replicas (modelled timing) behind cacheroute; one of them hangs (accepts requests
and never answers) while its /health stays fine, so no probe ever takes it out. Streamed chat
requests from 8 workers for a fixed time, in three runs of the same length:

  healthy     all three replicas answer (the baseline)
  hung        r3 hangs; the stall deadline on (upstream.stall_factor 4, stall_min 2 s)
  hung, off   r3 hangs; the stall deadline off (only first_byte_timeout, 20 s here)

and prints the clients' time to first token (p50, p99, max), failures, and the ratio of each run's
p99 to the healthy one's. The goal: with a hung replica, no client waits more than a few seconds
beyond its normal time to first token, and 0 requests fail.

    python3 Benchmarks/hung.py [--seconds 20] [--binary .build/release/cacheroute]
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import DEFAULT_BINARY, ensure_binary, percentile, wait_port  # noqa: E402




def stream(port, worker, i):
    body = json.dumps({
        "model": "cacheroute-demo", "max_tokens": 8, "stream": True,
        "messages": [{"role": "user", "content": "worker %d asks question %d about an order" % (worker, i)}],
    })
    started = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        r = c.getresponse()
        first = r.read(1)
        ttft = time.perf_counter() - started
        r.read()
        return r.status if first else 0, ttft
    except Exception:
        return 0, time.perf_counter() - started
    finally:
        c.close()




def run(binary, work, seconds, hung, stall):
    procs = []
    try:
        for i, port in enumerate((19901, 19902, 19903)):
            args = [binary, "emulate", "--port", str(port), "--name", "r%d" % (i + 1)]
            if hung and i == 2:
                args += ["--fault", "hang"]
            procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        config = os.path.join(work, "router.yaml")
        with open(config, "w") as f:
            f.write("listen: 127.0.0.1:19910\nadmin_listen: 127.0.0.1:19911\nlogging: {level: warning, access_log: false}\n"
                    "replicas:\n" + "".join("  - {name: r%d, url: 'http://127.0.0.1:%d'}\n" % (i + 1, p) for i, p in enumerate((19901, 19902, 19903)))
                    + "upstream: {first_byte_timeout: 20s, stall_factor: %s, stall_min: 2s}\n" % ("4" if stall else "0")
                    + "health: {eject_after_failures: 0}\n")
        procs.append(subprocess.Popen([binary, "serve", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in (19901, 19902, 19903, 19910):
            wait_port(port)
        time.sleep(1)
        results = []
        lock = threading.Lock()
        stop = time.time() + seconds

        def worker(w):
            i = 0
            while time.time() < stop:
                status, ttft = stream(19910, w, i)
                with lock:
                    results.append((status, ttft))
                i += 1

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--binary", default=DEFAULT_BINARY)
    args = parser.parse_args()
    ensure_binary(args.binary)
    work = tempfile.mkdtemp(prefix="cacheroute-hung.")
    runs = [("healthy", False, True), ("hung", True, True), ("hung, off", True, False)]
    out = {name: run(args.binary, work, args.seconds, hung, stall) for name, hung, stall in runs}
    base = percentile([t for s, t in out["healthy"] if s == 200], 0.99)
    print("streamed chat, 8 workers, %g s per run; time to first token as the client saw it" % args.seconds)
    print("%-10s %8s %8s %10s %10s %10s %14s %10s" % ("run", "requests", "failed", "p50 (ms)", "p99 (ms)", "max (ms)", "longest wait", "p99 ratio"))
    for name, _, _ in runs:
        ok = [t for s, t in out[name] if s == 200]
        failed = len(out[name]) - len(ok)
        p99 = percentile(ok, 0.99)
        longest = max(t for _, t in out[name])  # failures included (a 504 after first_byte_timeout)
        print("%-10s %8d %8d %10.0f %10.0f %10.0f %12.1f s %9.1fx" % (name, len(out[name]), failed, percentile(ok, 0.5) * 1000, p99 * 1000,
                                                                max(ok) * 1000 if ok else float("nan"), longest, p99 / base))
    hung_ok = [t for s, t in out["hung"] if s == 200]
    failed = len(out["hung"]) - len(hung_ok)
    worst = max(hung_ok) if hung_ok else float("inf")
    print("\ngoal: with a hung replica, 0 failed and no wait beyond a few seconds over normal: %d failed, worst %.1f s over healthy p99 %s"
          % (failed, worst - base, "met" if failed == 0 and worst - base < 5 else "NOT met"))


if __name__ == "__main__":
    main()
