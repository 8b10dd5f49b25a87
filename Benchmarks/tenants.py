#!/usr/bin/env python3
"""Tenant limits under a flood: does a tenant over its limit leave another tenant's latency alone?

Starts two emulated replicas (modelled timing, not instant) and cacheroute in front of them with
API keys for two tenants, then measures the quiet tenant's latency (streamed chat, time to the last
byte) in three runs of the same length:

  alone      the quiet tenant only (the baseline)
  limited    the quiet tenant, and a noisy one flooding from 24 connections, limited to 4 req/s
  unlimited  the same flood without a limit (what the limit protects against)

and prints p50/p99 and the ratio to the baseline. The goal: quiet p99 in the limited run within
1.2x of alone, the flood answered 429 with Retry-After.

    python3 Benchmarks/tenants.py [--seconds 20] [--binary .build/release/cacheroute]
"""
import argparse
import concurrent.futures
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
SYSTEM = "You are the support assistant of a large retailer. Follow the policies below. " * 40




def request(port, key, session, i):
    body = json.dumps({
        "model": "cacheroute-demo", "max_tokens": 16, "stream": True,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "customer %d question %d" % (session, i)}],
    })
    started = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json", "authorization": "Bearer " + key})
        r = c.getresponse()
        r.read()
        return r.status, time.perf_counter() - started, r.getheader("retry-after")
    finally:
        c.close()




def run(port, seconds, flood):
    stop = time.time() + seconds
    quiet, noisy = [], []
    lock = threading.Lock()

    def quiet_loop(worker):
        i = 0
        while time.time() < stop:
            t0 = time.time()
            status, latency, _ = request(port, "sk-quiet", worker, i)
            with lock:
                quiet.append((status, latency))
            i += 1
            time.sleep(max(0, 0.25 - (time.time() - t0)))  # ~4 req/s per worker

    def noisy_loop(worker):
        i = 0
        while time.time() < stop:
            status, latency, retry = request(port, "sk-noisy", 1000 + worker, i)
            with lock:
                noisy.append((status, retry))
            i += 1

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        futures = [pool.submit(quiet_loop, w) for w in range(4)]
        if flood:
            futures += [pool.submit(noisy_loop, w) for w in range(24)]
        for f in futures:
            f.result()
    return quiet, noisy


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--binary", default=DEFAULT_BINARY)
    args = parser.parse_args()
    ensure_binary(args.binary)

    work = tempfile.mkdtemp(prefix="cacheroute-tenants.")
    with open(os.path.join(work, "keys.yaml"), "w") as f:
        f.write("- {key: sk-quiet, tenant: quiet}\n- {key: sk-noisy, tenant: noisy}\n")
    procs = []
    try:
        for i, port in enumerate((19801, 19802)):
            procs.append(subprocess.Popen([args.binary, "emulate", "--port", str(port), "--name", "r%d" % (i + 1)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        results = {}
        for name, limited, flood in (("alone", True, False), ("limited", True, True), ("unlimited", False, True)):
            config = os.path.join(work, "router.yaml")
            with open(config, "w") as f:
                f.write("listen: 127.0.0.1:19810\nadmin_listen: 127.0.0.1:19811\nlogging: {level: warning, access_log: false}\n"
                        "replicas:\n  - {name: r1, url: 'http://127.0.0.1:19801'}\n  - {name: r2, url: 'http://127.0.0.1:19802'}\n"
                        "auth: {api_keys_file: %s}\n" % os.path.join(work, "keys.yaml"))
                if limited:
                    f.write("tenants:\n  limits:\n    - {tenant: noisy, requests_per_second: 4, burst: 1s}\n")
            router = subprocess.Popen([args.binary, "serve", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(19801), wait_port(19802), wait_port(19810)
            time.sleep(1)
            try:
                results[name] = run(19810, args.seconds, flood)
            finally:
                router.terminate()
                router.wait()
    finally:
        for p in procs:
            p.terminate()

    base = None
    print("quiet tenant (4 workers, ~16 req/s, streamed ~800-token prompts), %g s per run" % args.seconds)
    print("%-10s %8s %8s %10s %10s %10s   %s" % ("run", "quiet", "failed", "p50 (ms)", "p99 (ms)", "p99 ratio", "noisy flood"))
    for name in ("alone", "limited", "unlimited"):
        quiet, noisy = results[name]
        ok = [l for s, l in quiet if s == 200]
        p50, p99 = percentile(ok, 0.5) * 1000, percentile(ok, 0.99) * 1000
        if base is None:
            base = p99
        statuses = {}
        for s, _ in noisy:
            statuses[s] = statuses.get(s, 0) + 1
        retry = all(r is not None for s, r in noisy if s == 429)
        flood = ", ".join("%d: %d" % kv for kv in sorted(statuses.items())) + (" (429s with Retry-After)" if statuses.get(429) and retry else "")
        print("%-10s %8d %8d %10.0f %10.0f %9.2fx   %s" % (name, len(quiet), len(quiet) - len(ok), p50, p99, p99 / base, flood or "-"))
    limited_p99 = percentile([l for s, l in results["limited"][0] if s == 200], 0.99) * 1000
    print("\ngoal: quiet p99 with the noisy tenant limited <= 1.2x alone: %.2fx %s" % (limited_p99 / base, "met" if limited_p99 / base <= 1.2 else "NOT met"))


if __name__ == "__main__":
    main()
