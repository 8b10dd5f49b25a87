#!/usr/bin/env python3
"""Hostile bodies on the event loop: does another client's latency move while they arrive?

cacheroute with one event-loop thread (threads: 1, the worst case: every connection shares it) in
front of two instant emulated replicas. A quiet client sends small chat requests one after
another; in the second run, a hostile client sends 2.4 MB chat bodies whose tool parameters nest
objects 500 deep (keys out of order) and 100k deep (refused as too deep), back to back, from 2
connections; in a third, flat bodies of the same size in the same way. The quiet client's p50/p99 in
each, and the ratio of the hostile run to the flat one: the goal is that hostile nesting costs the
other client no more than bodies of that size do (the nested bodies are keyed or refused in about
the time of flat ones, Benchmarks/Sources/NestingBench).

    python3 Benchmarks/nesting.py [--seconds 15] [--binary .build/release/cacheroute]
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




def flat_bodies():
    pad = "lorem ipsum " * ((2400 << 10) // 12)
    return [('{"model":"cacheroute-demo","max_tokens":1,"messages":[{"role":"user","content":"hi"}],'
             '"tools":[{"type":"function","function":{"name":"f","description":"%s","parameters":{"type":"object"}}}]}' % pad).encode()]


def hostile_bodies():
    payload = '"' + "x" * (1200 << 10) + '"'
    deep_ok = payload
    for i in range(500):
        deep_ok = '{"z%d":1,"a":%s}' % (i, deep_ok)
    too_deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    bodies = []
    for params in (deep_ok, too_deep):
        pad = "lorem ipsum " * ((2400 << 10) // 12 - len(params) // 12)
        bodies.append(('{"model":"cacheroute-demo","max_tokens":1,"messages":[{"role":"user","content":"hi"}],'
                       '"tools":[{"type":"function","function":{"name":"f","description":"%s","parameters":%s}}]}' % (pad, params)).encode())
    return bodies


def post(conn, body):
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    r = conn.getresponse()
    r.read()
    return r.status


def run(port, seconds, bodies):
    stop = time.time() + seconds
    latencies, statuses = [], {}
    lock = threading.Lock()

    def quiet():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = 0
        while time.time() < stop:
            body = json.dumps({"model": "cacheroute-demo", "max_tokens": 1, "messages": [{"role": "user", "content": "quiet %d" % i}]})
            t0 = time.perf_counter()
            status = post(conn, body)
            with lock:
                latencies.append(time.perf_counter() - t0)
                statuses[("quiet", status)] = statuses.get(("quiet", status), 0) + 1
            i += 1
            time.sleep(0.005)

    def attacker(bodies):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = 0
        while time.time() < stop:
            try:
                status = post(conn, bodies[i % len(bodies)])
            except Exception:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 0
            with lock:
                statuses[("hostile", status)] = statuses.get(("hostile", status), 0) + 1
            i += 1

    threads = [threading.Thread(target=quiet)]
    if bodies:
        threads += [threading.Thread(target=attacker, args=(bodies,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, statuses




def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--binary", default=DEFAULT_BINARY)
    args = parser.parse_args()
    ensure_binary(args.binary)
    work = tempfile.mkdtemp(prefix="cacheroute-nesting.")
    config = os.path.join(work, "router.yaml")
    with open(config, "w") as f:
        f.write("listen: 127.0.0.1:19960\nadmin_listen: 127.0.0.1:19961\nthreads: 1\nlogging: {level: warning, access_log: false}\n"
                "replicas:\n  - {name: r1, url: 'http://127.0.0.1:19951'}\n  - {name: r2, url: 'http://127.0.0.1:19952'}\n"
                "routing: {max_key_bytes: 8MiB}\n")
    procs = [subprocess.Popen([args.binary, "emulate", "--port", str(p), "--instant"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for p in (19951, 19952)]
    procs.append(subprocess.Popen([args.binary, "serve", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for p in (19951, 19952, 19960):
            wait_port(p)
        time.sleep(1)
        alone, s1 = run(19960, args.seconds, None)
        flat, s3 = run(19960, args.seconds, flat_bodies())
        attacked, s2 = run(19960, args.seconds, hostile_bodies())
    finally:
        for p in procs:
            p.terminate()
    print("quiet client, one request at a time; router with threads: 1; %g s per run" % args.seconds)
    print("%-22s %8s %10s %10s   %s" % ("run", "requests", "p50 (ms)", "p99 (ms)", "answers"))
    for name, lat, st in (("alone", alone, s1), ("with flat 2.4 MB bodies", flat, s3), ("with hostile bodies", attacked, s2)):
        answers = ", ".join("%s %d: %d" % (k[0], k[1], v) for k, v in sorted(st.items()))
        print("%-22s %8d %10.1f %10.1f   %s" % (name, len(lat), percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000, answers))
    print("\nquiet p99 with hostile bodies arriving: %.2fx with flat bodies of the same size (%.2fx alone)"
          % (percentile(attacked, 0.99) / percentile(flat, 0.99), percentile(attacked, 0.99) / percentile(alone, 0.99)))


if __name__ == "__main__":
    main()
