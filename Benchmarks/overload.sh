#!/usr/bin/env bash
# Overload, live (issue: adaptive load): four emulated replicas offered about twice what they
# can serve, for SECONDS, through cacheroute with its queue on and then off (a fresh fleet each
# time). Prints, per run: requests served, refused (503 with Retry-After: by the queue's deadline?),
# lost (any other answer or none); the admitted requests' time to first token (mean, p99); the
# largest replica queue seen (vllm:num_requests_waiting, sampled each second); the router's
# largest RSS. The capacity is measured first: a closed loop of one request per replica.
#
# usage: Benchmarks/overload.sh [--seconds S] [--factor F] [--timeout S]
# Uses ports 20300-20310.
set -euo pipefail

SECONDS_RUN=60
FACTOR=2
TIMEOUT=10
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_RUN=$2; shift 2 ;;
    --factor) FACTOR=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORK=$(mktemp -d /tmp/cacheroute-overload.XXXXXX)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "building cacheroute (release)" >&2
(cd "$ROOT" && swift build -c release --product cacheroute >/dev/null)
CR="$ROOT/.build/release/cacheroute"
SPEED=0.25       # 5000 prefill tokens per second per replica
TOKENS=2000
PORT=20300

start_fleet() {
  PIDS=()
  for i in 1 2 3 4; do
    "$CR" emulate --port $((PORT + i)) --name "r$i" --speed "$SPEED" --capacity-tokens 200000 > "$WORK/r$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 1 2 3 4; do for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$((PORT + i))/health" && break; sleep 0.1; done; done
}

start_router() { # queue on|off
  {
    echo "listen: 127.0.0.1:$PORT"
    echo "admin_listen: 127.0.0.1:$((PORT + 9))"
    echo "logging: {level: warning, access_log: false}"
    echo "health: {interval: 1s}"
    echo "queue: {enabled: $([ "$1" = on ] && echo true || echo false), timeout: ${TIMEOUT}s}"
    echo "routing: {load: {prefill_tokens_per_second: 5000}}"
    echo "replicas:"
    for i in 1 2 3 4; do echo "  - {name: r$i, url: \"http://127.0.0.1:$((PORT + i))\"}"; done
  } > "$WORK/router.yaml"
  "$CR" serve --config "$WORK/router.yaml" > "$WORK/router-$1.log" 2>&1 &
  ROUTER=$!
  PIDS+=("$ROUTER")
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$((PORT + 9))/readyz" && break; sleep 0.1; done
}

# Samples the replicas' waiting queues and the router's RSS once a second into FILE.
sample() { # file router-pid
  while kill -0 "$2" 2>/dev/null; do
    local w=0
    for i in 1 2 3 4; do
      v=$(curl -s -m 1 "http://127.0.0.1:$((PORT + i))/metrics" | awk '/^vllm:num_requests_waiting/ {print int($2)}' | head -1)
      [ -n "$v" ] && [ "$v" -gt "$w" ] && w=$v
    done
    echo "$w $(awk '/VmRSS/ {print $2}' "/proc/$2/status" 2>/dev/null || echo 0)" >> "$1"
    sleep 1
  done
}

# Capacity: what four replicas serve with enough requests in flight to keep them busy (32, 20 s).
start_fleet
start_router off
python3 "$HERE/overload.py" --port "$PORT" --rate 1000 --seconds 0.05 --tokens "$TOKENS" > /dev/null 2>&1 || true
CAP_START=$(date +%s.%N)
python3 - "$PORT" "$TOKENS" > "$WORK/capacity.txt" <<'PY'
import asyncio, json, sys, time
port, tokens = int(sys.argv[1]), int(sys.argv[2])
done = 0
async def worker(w):
    global done
    end = time.monotonic() + 20
    n = 0
    while time.monotonic() < end:
        body = json.dumps({"model": "cacheroute-demo", "max_tokens": 8, "messages": [{"role": "user", "content": f"cap {w} {n} " + "abcd" * tokens}]}).encode()
        r, wr = await asyncio.open_connection("127.0.0.1", port)
        wr.write(f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        await wr.drain()
        while await r.read(65536): pass
        wr.close(); n += 1; done += 1
async def main():
    await asyncio.gather(*(worker(w) for w in range(32)))
    print(done / 20)
asyncio.run(main())
PY
CAPACITY=$(cat "$WORK/capacity.txt")
cleanup
RATE=$(awk -v c="$CAPACITY" -v f="$FACTOR" 'BEGIN {printf "%.2f", c * f}')
echo "capacity ~ $CAPACITY req/s (4 replicas, $TOKENS-token prompts, 8 output tokens); offering $RATE req/s for ${SECONDS_RUN}s" >&2

printf "%-10s %7s %8s %7s %6s %10s %10s %12s %12s\n" "queue" "sent" "served" "503" "lost" "TTFT mean" "TTFT p99" "max waiting" "router RSS"
for mode in on off; do
  start_fleet
  start_router "$mode"
  : > "$WORK/samples-$mode.txt"
  sample "$WORK/samples-$mode.txt" "$ROUTER" &
  SAMPLER=$!
  python3 "$HERE/overload.py" --port "$PORT" --rate "$RATE" --seconds "$SECONDS_RUN" --tokens "$TOKENS" > "$WORK/results-$mode.jsonl" 2> /dev/null
  kill "$SAMPLER" 2>/dev/null || true
  python3 - "$mode" "$WORK/results-$mode.jsonl" "$WORK/samples-$mode.txt" "$TIMEOUT" <<'PY'
import json, sys
mode, results, samples, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rs = [json.loads(l) for l in open(results)]
served = [r for r in rs if r["status"] == 200 and r["error"] is None]
refused = [r for r in rs if r["status"] in (429, 503) and r["retry_after"]]
lost = [r for r in rs if r not in served and r not in refused]
late = [r for r in refused if r["seconds"] > timeout + 2]
ttft = sorted(r["ttfb"] for r in served if r["ttfb"] is not None)
mean = sum(ttft) / len(ttft) if ttft else 0
p99 = ttft[min(len(ttft) - 1, int(0.99 * (len(ttft) - 1)))] if ttft else 0
rows = [l.split() for l in open(samples) if l.strip()]
waiting = max((int(a) for a, _ in rows), default=0)
rss = max((int(b) for _, b in rows), default=0)
print(f"{mode:<10} {len(rs):7d} {len(served):8d} {len(refused):7d} {len(lost):6d} {mean:9.2f}s {p99:9.2f}s {waiting:12d} {rss / 1024:10.1f}MB"
      + (f"  ({len(late)} refusals after the deadline)" if late else ""))
PY
  cleanup
done
