#!/usr/bin/env python3
"""Open-loop load for Benchmarks/overload.sh: Poisson arrivals of streamed chat requests, each
with a prompt of its own (no cache to find), for a fixed time; every answer's status, Retry-After,
time to the first body byte and total time, as JSON lines on stdout. Standard library only."""

import argparse
import asyncio
import json
import random
import sys
import time


async def one(host, port, n, tokens, max_tokens, timeout, out):
    text = f"request {n} " + ("abcd" * tokens)
    body = json.dumps({
        "model": "cacheroute-demo", "max_tokens": max_tokens, "stream": True,
        "messages": [{"role": "user", "content": text}],
    }).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    start = time.monotonic()
    result = {"n": n, "status": 0, "retry_after": None, "ttfb": None, "seconds": None, "error": None}
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(head + body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        result["status"] = int(line.split()[1])
        while True:
            h = await asyncio.wait_for(reader.readline(), timeout)
            if h in (b"\r\n", b""):
                break
            name, _, value = h.decode().partition(":")
            if name.strip().lower() == "retry-after":
                result["retry_after"] = int(value.strip())
        first = await asyncio.wait_for(reader.read(1), timeout)
        if first:
            result["ttfb"] = time.monotonic() - start
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
        result["seconds"] = time.monotonic() - start
        writer.close()
    except Exception as e:  # a lost request shows as an error, never silently
        result["error"] = f"{type(e).__name__}: {e}"
        result["seconds"] = time.monotonic() - start
    out.append(result)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--tokens", type=int, default=2000)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--timeout", type=float, default=300)
    a = p.parse_args()
    out, tasks = [], []
    rng = random.Random(7)
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < a.seconds:
        tasks.append(asyncio.create_task(one("127.0.0.1", a.port, n, a.tokens, a.max_tokens, a.timeout, out)))
        n += 1
        await asyncio.sleep(rng.expovariate(a.rate))
    await asyncio.gather(*tasks)
    for r in out:
        print(json.dumps(r))
    print(f"sent {n}", file=sys.stderr)


asyncio.run(main())
