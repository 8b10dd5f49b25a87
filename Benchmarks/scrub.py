"""No prompt text kept: sends 240 chat requests whose system prompts carry a marker string
through cacheroute (every request analysed by the prefix diagnostics, or none), then dumps the
router's memory with gdb's `gcore` and counts the marker in the dump, the router's log and its
admin outputs. The goal is 0 everywhere: the router zeroes request bytes once it is done with
them (the body where it was received, the canonical key bytes, the diagnostics' sample).

    python3 Benchmarks/scrub.py [--insight-off]
"""
import argparse
import json
import os
import random
import subprocess
import tempfile
import time
import urllib.request

from benchlib import DEFAULT_BINARY, ensure_binary, wait_port

MARKER = "QWPX-SCRUB-CHECK-5519"  # in no source file but this one


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=DEFAULT_BINARY)
    p.add_argument("--insight-off", action="store_true")
    p.add_argument("--port", type=int, default=18900)
    a = p.parse_args()
    ensure_binary(a.binary)
    work = tempfile.mkdtemp()
    router, emu, admin = a.port, a.port + 1, a.port + 2
    with open(os.path.join(work, "c.yaml"), "w") as f:
        f.write("listen: 127.0.0.1:%d\nadmin_listen: 127.0.0.1:%d\nreplicas: [{name: r1, url: 'http://127.0.0.1:%d'}]\n"
                "logging: {access_log: true}\ninsight: {%s}\n" % (router, admin, emu, "enabled: false" if a.insight_off else "sample_every: 1"))
    log = open(os.path.join(work, "router.log"), "w")
    procs = [subprocess.Popen([a.binary, "emulate", "--port", str(emu), "--instant"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_port(emu)
        procs.append(subprocess.Popen([a.binary, "serve", "--config", os.path.join(work, "c.yaml")], stdout=log, stderr=log))
        wait_port(router)
        words = "the of and to in is you that it he was for on are as with his they at be this have from".split()
        for n in range(240):
            t = n % 8
            system = "[%s] " % MARKER + " ".join(random.Random(t).choice(words) for _ in range(400 + 100 * t))
            if t == 0:
                system = system[:100] + " 2026-12-03T10:%02d:%02d.%03dZ " % (n % 60, n % 59, n) + system[100:]
            body = {"model": "cacheroute-demo", "max_tokens": 1,
                    "messages": [{"role": "system", "content": system}, {"role": "user", "content": "q%d" % n}]}
            req = urllib.request.Request("http://127.0.0.1:%d/v1/chat/completions" % router, data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
            urllib.request.urlopen(req).read()
        time.sleep(1)
        outputs = ""
        for path in ("/admin/prefixes", "/admin/replicas", "/metrics"):
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (admin, path)) as r:
                outputs += r.read().decode()
        core = os.path.join(work, "core")
        subprocess.run(["gcore", "-o", core, str(procs[1].pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        dump = open("%s.%d" % (core, procs[1].pid), "rb").read()
        log.flush()
        logged = open(os.path.join(work, "router.log")).read()
        print("240 requests, diagnostics %s" % ("off" if a.insight_off else "on every request"))
        print("marker in the memory dump (%d MB): %d" % (len(dump) >> 20, dump.count(MARKER.encode())))
        print("marker in the log: %d, in /admin/prefixes, /admin/replicas and /metrics: %d" % (logged.count(MARKER), outputs.count(MARKER)))
    finally:
        for proc in procs:
            proc.kill()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
