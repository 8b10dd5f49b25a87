"""Exact response-cache hits against a direct request and a miss, in one run.

An emulated replica answers at once (`--instant`) on core 0 with this client; cacheroute (one
thread) is pinned to core 1 with `cache.default_mode: exact`. Over one keep-alive connection each,
sequentially: `direct` sends the same request to the replica itself, `hit` sends it through the
router after one miss stored it, `miss` sends a new request each time through the router (looked
up, placed, relayed, stored). Prints p50/p99 of each and the replica's request count during the
hit phase (it must not move).

    python3 Benchmarks/cache.py --requests 5000
"""
import argparse
import http.client
import json
import os
import subprocess
import tempfile
import time

from benchlib import DEFAULT_BINARY, ensure_binary, percentile, wait_port


def body(n=0, stream=False):
    return json.dumps({"model": "cacheroute-demo", "messages": [{"role": "user", "content": "Question %d: what is cached?" % n}],
                       "temperature": 0, "max_tokens": 16, "stream": stream})


def timed(port, bodies):
    c = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    headers = {"content-type": "application/json"}
    results = {}
    for b in bodies:
        t = time.perf_counter()
        c.request("POST", "/v1/chat/completions", b, headers)
        r = c.getresponse()
        r.read()
        out.append(time.perf_counter() - t)
        results[r.getheader("x-cacheroute-cache", "-")] = results.get(r.getheader("x-cacheroute-cache", "-"), 0) + 1
    c.close()
    return out, results


def replica_requests(port):
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("GET", "/admin/stats")
    doc = json.loads(c.getresponse().read())
    c.close()
    return doc.get("requests", doc.get("stats", {}).get("requests"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=DEFAULT_BINARY)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--port", type=int, default=18480)
    p.add_argument("--stream", action="store_true", help="streamed requests (the hit replays the event stream)")
    a = p.parse_args()
    ensure_binary(a.binary)
    router, admin, emu = a.port, a.port + 1, a.port + 2
    config = os.path.join(tempfile.mkdtemp(), "cache.yaml")
    with open(config, "w") as f:
        f.write("listen: 127.0.0.1:%d\nadmin_listen: 127.0.0.1:%d\nthreads: 1\nreplicas: [{name: r1, url: 'http://127.0.0.1:%d'}]\n"
                "logging: {access_log: false}\nhealth: {scrape_metrics: false}\ncache: {enabled: true, default_mode: exact}\n" % (router, admin, emu))
    procs = [subprocess.Popen(["taskset", "-c", "0", a.binary, "emulate", "--port", str(emu), "--instant"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_port(emu)
        procs.append(subprocess.Popen(["taskset", "-c", "1", a.binary, "serve", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(router)
        os.sched_setaffinity(0, {0})
        n = a.requests
        same = [body(0, a.stream)] * n
        timed(emu, same[:500])  # warm both paths
        timed(router, [body(10 ** 7 + i, a.stream) for i in range(500)])
        direct, _ = timed(emu, same)
        timed(router, same[:1])  # the miss that stores it
        before = replica_requests(emu)
        hit, hit_results = timed(router, same)
        after = replica_requests(emu)
        miss, miss_results = timed(router, [body(i + 1, a.stream) for i in range(n)])
        print("%d sequential %s requests each (router pinned to core 1, one thread; replica and client on core 0)"
              % (n, "streamed" if a.stream else "JSON"))
        print("%-8s %9s %9s   %s" % ("", "p50 ms", "p99 ms", "x-cacheroute-cache"))
        for name, values, results in (("direct", direct, {}), ("hit", hit, hit_results), ("miss", miss, miss_results)):
            print("%-8s %9.3f %9.3f   %s" % (name, percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3, results or "-"))
        print("hit adds %.3f ms at p50 and %.3f ms at p99 over direct; a miss adds %.3f ms at p99"
              % ((percentile(hit, 0.5) - percentile(direct, 0.5)) * 1e3, (percentile(hit, 0.99) - percentile(direct, 0.99)) * 1e3,
                 (percentile(miss, 0.99) - percentile(direct, 0.99)) * 1e3))
        print("replica requests during the %d hits: %s" % (n, after - before if None not in (before, after) else "unknown"))
    finally:
        for proc in procs:
            proc.kill()


if __name__ == "__main__":
    main()
