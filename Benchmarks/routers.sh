#!/usr/bin/env bash
# Routing quality, side by side in one run (BENCHMARKS.md): the same trace replayed live through
# cacheroute and each peer router in front of the same emulated fleet, caches reset between
# targets (a fresh fleet each time). One table: fleet hit ratio (the replicas' own prefix-cache
# counters), load imbalance (max/mean requests per replica), TTFT p50/p99, throughput, errors.
#
# usage: Benchmarks/routers.sh [--trace FILE] [--replicas N] [--capacity-tokens N] [--speed X]
#                              [--speeds X,Y,...] [--time-scale X] [--duration S] [--concurrency N]
#                              [--targets "..."]
# --speeds: one speed factor per replica, multiplied with --speed (an unequal fleet: 1,1,2,2).
# targets: cacheroute sglang smg vllm-cache-aware vllm-consistent-hash haproxy nginx
# Installs what is missing: haproxy, nginx (Debian); sglang-router==0.3.2, smg, vllm-router (PyPI).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TRACE="$ROOT/../shared/traces/mooncake_conversation_trace.jsonl"
REPLICAS=4
CAPACITY=300000
SPEED=8
SPEEDS=""
TIME_SCALE=4
DURATION=60
CONCURRENCY=64
TARGETS="cacheroute sglang smg vllm-cache-aware vllm-consistent-hash haproxy nginx"
while [ $# -gt 0 ]; do
  case "$1" in
    --trace) TRACE=$2; shift 2 ;;
    --replicas) REPLICAS=$2; shift 2 ;;
    --capacity-tokens) CAPACITY=$2; shift 2 ;;
    --speed) SPEED=$2; shift 2 ;;
    --speeds) SPEEDS=$2; shift 2 ;;
    --time-scale) TIME_SCALE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -f "$TRACE" ] || { echo "trace $TRACE not found (--trace FILE)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/cacheroute-routerbench.XXXXXX)
FLEET_PIDS=()
ROUTER_PID=""
stop_router() {
  [ -n "$ROUTER_PID" ] && kill "$ROUTER_PID" 2>/dev/null && wait "$ROUTER_PID" 2>/dev/null || true
  ROUTER_PID=""
  [ -f "$WORK/haproxy.pid" ] && kill "$(cat "$WORK/haproxy.pid")" 2>/dev/null || true
  rm -f "$WORK/haproxy.pid"
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -f "$WORK/nginx.pid"
  sleep 0.5
}
stop_fleet() {
  for pid in "${FLEET_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${FLEET_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  FLEET_PIDS=()
}
trap 'stop_router; stop_fleet' EXIT

command -v haproxy >/dev/null && command -v nginx >/dev/null || {
  echo "installing haproxy nginx" >&2
  apt-get update -qq && apt-get install -y -qq haproxy nginx >/dev/null
}
pip_need() { python3 -c "import $1" 2>/dev/null || command -v "$2" >/dev/null; }
for t in $TARGETS; do
  case "$t" in
    sglang) pip_need sglang_router sglang-router || pip install -q sglang-router==0.3.2 || echo "sglang-router not installable" >&2 ;;
    smg) command -v smg >/dev/null || pip install -q smg || echo "smg not installable" >&2 ;;
    vllm-*) command -v vllm-router >/dev/null || pip install -q vllm-router || echo "vllm-router not installable" >&2 ;;
  esac
done

echo "building cacheroute (release)" >&2
(cd "$ROOT" && swift build -c release --product cacheroute >/dev/null)
CR="$ROOT/.build/release/cacheroute"

PORT=20100
BASE=20000
WORKERS=()
for i in $(seq 1 "$REPLICAS"); do WORKERS+=("http://127.0.0.1:$((BASE + i))"); done

# The speed of replica i: --speed times the i-th of --speeds (cycled), or --speed alone.
replica_speed() {
  local i=$1
  if [ -z "$SPEEDS" ]; then echo "$SPEED"; return; fi
  IFS=, read -r -a factors <<< "$SPEEDS"
  awk -v a="$SPEED" -v b="${factors[$(( (i - 1) % ${#factors[@]} ))]}" 'BEGIN {print a * b}'
}

start_fleet() {
  for i in $(seq 1 "$REPLICAS"); do
    "$CR" emulate --port $((BASE + i)) --name "r$i" --speed "$(replica_speed "$i")" --capacity-tokens "$CAPACITY" > "$WORK/r$i.log" 2>&1 &
    FLEET_PIDS+=($!)
  done
  for i in $(seq 1 "$REPLICAS"); do
    for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$((BASE + i))/health" && break; sleep 0.1; done
  done
}

start_router() {
  local t=$1
  case "$t" in
    cacheroute)
      {
        echo "listen: 127.0.0.1:$PORT"
        echo "admin_listen: 127.0.0.1:$((PORT + 1))"
        echo "logging: {level: warning, access_log: false}"
        echo "replicas:"
        for i in $(seq 1 "$REPLICAS"); do echo "  - {name: r$i, url: \"http://127.0.0.1:$((BASE + i))\", cache_tokens: $CAPACITY}"; done
      } > "$WORK/cacheroute.yaml"
      "$CR" serve --config "$WORK/cacheroute.yaml" > "$WORK/$t.log" 2>&1 & ROUTER_PID=$! ;;
    sglang)
      python3 -m sglang_router.launch_router --host 127.0.0.1 --port $PORT --policy cache_aware \
        --worker-urls "${WORKERS[@]}" --prometheus-port $((PORT + 2)) > "$WORK/$t.log" 2>&1 & ROUTER_PID=$! ;;
    smg)
      smg launch --host 127.0.0.1 --port $PORT --policy cache_aware --disable-tokenizer-autoload \
        --worker-urls "${WORKERS[@]}" > "$WORK/$t.log" 2>&1 & ROUTER_PID=$! ;;
    vllm-cache-aware)
      vllm-router --host 127.0.0.1 --port $PORT --policy cache_aware --worker-urls "${WORKERS[@]}" > "$WORK/$t.log" 2>&1 & ROUTER_PID=$! ;;
    vllm-consistent-hash)
      vllm-router --host 127.0.0.1 --port $PORT --policy consistent_hash --worker-urls "${WORKERS[@]}" > "$WORK/$t.log" 2>&1 & ROUTER_PID=$! ;;
    haproxy)
      {
        echo "global"; echo "  maxconn 4000"; echo "  pidfile $WORK/haproxy.pid"
        echo "defaults"; echo "  mode http"; echo "  timeout connect 2s"; echo "  timeout client 600s"; echo "  timeout server 600s"
        echo "frontend fe"; echo "  bind 127.0.0.1:$PORT"; echo "  default_backend be"
        echo "backend be"; echo "  balance hdr(X-Session-ID)"; echo "  hash-type consistent"; echo "  hash-balance-factor 125"
        for i in $(seq 1 "$REPLICAS"); do echo "  server r$i 127.0.0.1:$((BASE + i))"; done
      } > "$WORK/haproxy.cfg"
      haproxy -D -f "$WORK/haproxy.cfg" ;;
    nginx)
      {
        echo "worker_processes 2; pid $WORK/nginx.pid; error_log $WORK/nginx.err warn;"
        echo "events { worker_connections 4096; }"
        echo "http { access_log off; client_max_body_size 64m;"
        echo "  upstream be { hash \$http_x_session_id consistent;"
        for i in $(seq 1 "$REPLICAS"); do echo "    server 127.0.0.1:$((BASE + i));"; done
        echo "    keepalive 64; }"
        echo "  server { listen 127.0.0.1:$PORT; location / { proxy_pass http://be; proxy_http_version 1.1;"
        echo "    proxy_set_header Connection \"\"; proxy_buffering off; proxy_read_timeout 600s; } }"
        echo "}"
      } > "$WORK/nginx.conf"
      nginx -c "$WORK/nginx.conf" ;;
    *) echo "unknown target $t" >&2; return 1 ;;
  esac
  # Routers may report healthy before their workers are registered: wait for a real answer.
  for _ in $(seq 1 300); do
    if curl -sf -o /dev/null -m 5 -X POST -H 'content-type: application/json' \
      -d '{"model":"cacheroute-demo","prompt":"warm up","max_tokens":1}' "http://127.0.0.1:$PORT/v1/completions"; then
      return 0
    fi
    sleep 0.2
  done
  echo "$t did not answer; see $WORK/$t.log" >&2
  return 1
}

REPLICA_ARGS=()
for w in "${WORKERS[@]}"; do REPLICA_ARGS+=(--replica "$w"); done

for t in $TARGETS; do
  echo "== $t" >&2
  start_fleet
  if start_router "$t"; then
    "$CR" replay --trace "$TRACE" --target "http://127.0.0.1:$PORT" --time-scale "$TIME_SCALE" --duration "$DURATION" \
      --concurrency "$CONCURRENCY" --timeout 120 --json "${REPLICA_ARGS[@]}" > "$WORK/$t.json" || echo '{}' > "$WORK/$t.json"
    for i in $(seq 1 "$REPLICAS"); do
      curl -s "http://127.0.0.1:$((BASE + i))/admin/stats" > "$WORK/$t.r$i.stats.json" || echo '{}' > "$WORK/$t.r$i.stats.json"
    done
  else
    echo '{"failed": true}' > "$WORK/$t.json"
  fi
  stop_router
  stop_fleet
done

python3 - "$WORK" "$REPLICAS" "$TARGETS" "$TRACE" "$TIME_SCALE" "$DURATION" <<'PY'
import json, sys, os
work, n, targets, trace, scale, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4], sys.argv[5], sys.argv[6]
rows = []
for t in targets:
    r = json.load(open(os.path.join(work, t + ".json")))
    counts = []
    for i in range(1, n + 1):
        try: counts.append(json.load(open(os.path.join(work, f"{t}.r{i}.stats.json"))).get("requests", 0))
        except Exception: counts.append(0)
    mean = sum(counts) / len(counts) if counts else 0
    imbalance = max(counts) / mean if mean else None
    rows.append((t, r, imbalance, counts))
print(f"\nLive replay: {os.path.basename(trace)}, time scale {scale}, {duration} s, {n} emulated replicas (caches reset per target)")
print(f"{'target':<22}{'hit ratio':>10}{'imbalance':>11}{'TTFT p50':>10}{'TTFT p99':>10}{'req/s':>8}{'ok':>7}{'errors':>8}   requests per replica")
def ms(v): return f"{v*1000:.0f} ms" if isinstance(v, (int, float)) else "-"
for t, r, imb, counts in rows:
    if r.get("failed") or "requests" not in r:
        print(f"{t:<22}{'did not run':>10}")
        continue
    hr = r.get("hit_ratio")
    print(f"{t:<22}{(f'{hr*100:.1f} %' if hr is not None else '-'):>10}{(f'{imb:.2f}' if imb else '-'):>11}{ms(r.get('ttft_p50')):>10}{ms(r.get('ttft_p99')):>10}"
          f"{r.get('throughput_rps', 0):>8.1f}{r.get('ok', 0):>7}{r.get('errors', 0):>8}   {counts}")
ok = [(t, r) for t, r, _, _ in rows if r.get("hit_ratio") is not None and t != "cacheroute"]
me = next((r for t, r, _, _ in rows if t == "cacheroute" and r.get("hit_ratio") is not None), None)
if me and ok:
    best_hit = max(ok, key=lambda x: x[1]["hit_ratio"])
    best_p99 = min((x for x in ok if x[1].get("ttft_p99") is not None), key=lambda x: x[1]["ttft_p99"], default=None)
    print(f"\ngoal: hit ratio >= best peer's ({best_hit[0]} {best_hit[1]['hit_ratio']*100:.1f} %): cacheroute {me['hit_ratio']*100:.1f} % "
          + ("met" if me["hit_ratio"] >= best_hit[1]["hit_ratio"] else "NOT met"))
    if best_p99 and me.get("ttft_p99") is not None:
        print(f"goal: TTFT p99 <= best peer's ({best_p99[0]} {ms(best_p99[1]['ttft_p99'])}): cacheroute {ms(me['ttft_p99'])} "
              + ("met" if me["ttft_p99"] <= best_p99[1]["ttft_p99"] else "NOT met"))
PY
echo "raw results: $WORK" >&2
