#!/usr/bin/env bash
# Proxy cost, side by side in one run (BENCHMARKS.md): throughput and latency of cacheroute,
# HAProxy and nginx (consistent hash on X-Session-ID) and the SGLang router (cache_aware) in
# front of the same four static nginx backends, under the same wrk load (POST ~4 KB chat bodies,
# 8 system prompts, 1000 sessions, 32 connections). Rounds alternate the targets; the table
# shows medians and ratios. Then the latency each proxy adds over direct at a fixed moderate
# rate, two ways:
#   evenly spaced: --rate R req/s (default 1000) from 4 connections on 4 wrk threads, each at its
#     own slot of a common grid (chat.lua's WRK_RATE mode), so requests arrive about one at a time;
#   bursts: 8 connections each pausing 4 ms between requests (~2000 req/s); they stay in step,
#     so requests arrive 8 at a time and the proxy's p50 includes queueing behind the others.
#
# The `emulator` target is one `cacheroute emulate --instant` replica answering directly: the
# emulator must sustain at least HAProxy's rate so that it is never a benchmark's bottleneck.
# The `nio-relay` target (Sources/NIORelay) is the floor of any SwiftNIO proxy: it pairs each
# client connection with one backend connection and copies bytes, with no HTTP parsing, keys or
# routing; what cacheroute costs above it is cacheroute's own work.
#
# --tls: the TLS variant. cacheroute and HAProxy terminate TLS (TLS 1.2+, the same certificate and
# key, made here with openssl; ECDHE and AEAD ciphers; ALPN http/1.1) and wrk speaks HTTPS to them
# over keep-alive connections; the backends stay plain HTTP. The two proxies run pinned to core 1
# with one thread each, wrk and the backends on core 0, so each proxy's cost is read on its own core.
#
# usage: Benchmarks/proxy.sh [--rounds N] [--seconds S] [--rate R] [--peers "haproxy nginx sglang emulator nio-relay"] [--tls]
# Installs wrk, nginx, haproxy (Debian) and sglang-router==0.3.2 (PyPI) when missing.
set -euo pipefail

ROUNDS=3
SECONDS_PER_RUN=8
RATE=1000
PEERS="haproxy nginx sglang emulator nio-relay"
TLS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tls) TLS=1; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"
ROOT=$(cd "$HERE/.." && pwd)
WORK=$(mktemp -d /tmp/cacheroute-proxybench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/backends.pid" ] && kill "$(cat "$WORK/backends.pid")" 2>/dev/null || true
  [ -f "$WORK/nginx-proxy.pid" ] && kill "$(cat "$WORK/nginx-proxy.pid")" 2>/dev/null || true
  [ -f "$WORK/haproxy.pid" ] && kill "$(cat "$WORK/haproxy.pid")" 2>/dev/null || true
}
trap cleanup EXIT

install_missing wrk nginx haproxy
SCHEME=http
PROXY_PIN=()
LOAD_PIN=()
THREADS=2
if [ "$TLS" = 1 ]; then
  install_missing openssl
  PEERS=haproxy
  SCHEME=https
  THREADS=1
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PROXY_PIN=(taskset -c 1); LOAD_PIN=(taskset -c 0); fi
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
  cat "$WORK/tls.crt" "$WORK/tls.key" > "$WORK/haproxy.pem"
fi
if [[ " $PEERS " == *" sglang "* ]] && ! python3 -c 'import sglang_router' 2>/dev/null; then
  echo "installing sglang-router==0.3.2" >&2
  pip install -q sglang-router==0.3.2 || { echo "sglang-router not installable: skipping it" >&2; PEERS=${PEERS/sglang/}; }
fi

echo "building cacheroute (release)" >&2
(cd "$ROOT" && swift build -c release --product cacheroute >/dev/null)
CACHEROUTE="$ROOT/.build/release/cacheroute"
if [[ " $PEERS " == *" nio-relay "* ]]; then
  echo "building NIORelay (release)" >&2
  (cd "$HERE" && swift build -c release --product NIORelay >/dev/null)
fi

write_backends_conf "$WORK"

HAPROXY_BIND="bind 127.0.0.1:19100"
[ "$TLS" = 1 ] && HAPROXY_BIND="bind 127.0.0.1:19100 ssl crt $WORK/haproxy.pem alpn http/1.1 ssl-min-ver TLSv1.2"
cat > "$WORK/haproxy.cfg" <<EOF
global
  maxconn 4000
  nbthread $THREADS
  pidfile $WORK/haproxy.pid
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  $HAPROXY_BIND
  default_backend be
backend be
  balance hdr(X-Session-ID)
  hash-type consistent
  hash-balance-factor 125
  http-reuse always
  server b1 127.0.0.1:19001
  server b2 127.0.0.1:19002
  server b3 127.0.0.1:19003
  server b4 127.0.0.1:19004
EOF

cat > "$WORK/nginx-proxy.conf" <<EOF
worker_processes 2; pid $WORK/nginx-proxy.pid; error_log $WORK/nginx-proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream be {
    hash \$http_x_session_id consistent;
    server 127.0.0.1:19001; server 127.0.0.1:19002; server 127.0.0.1:19003; server 127.0.0.1:19004;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:19200;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF

write_cacheroute_yaml "$WORK/cacheroute.yaml" 19400
if [ "$TLS" = 1 ]; then
  printf "threads: 1\ntls: {cert_file: %s, key_file: %s}\n" "$WORK/tls.crt" "$WORK/tls.key" >> "$WORK/cacheroute.yaml"
fi

"${LOAD_PIN[@]}" nginx -c "$WORK/backends.conf"
declare -A PORT=([direct]=19001 [cacheroute]=19400)
TARGETS=(direct cacheroute)
"${PROXY_PIN[@]}" "$CACHEROUTE" serve --config "$WORK/cacheroute.yaml" > "$WORK/cacheroute.log" 2>&1 &
PIDS+=($!)
for peer in $PEERS; do
  case "$peer" in
    haproxy) "${PROXY_PIN[@]}" haproxy -D -f "$WORK/haproxy.cfg"; PORT[haproxy]=19100 ;;
    nginx) nginx -c "$WORK/nginx-proxy.conf"; PORT[nginx]=19200 ;;
    sglang)
      python3 -m sglang_router.launch_router --host 127.0.0.1 --port 19300 --policy cache_aware \
        --worker-urls http://127.0.0.1:19001 http://127.0.0.1:19002 http://127.0.0.1:19003 http://127.0.0.1:19004 \
        > "$WORK/sglang.log" 2>&1 &
      PIDS+=($!)
      PORT[sglang]=19300 ;;
    emulator)
      "$CACHEROUTE" emulate --port 19500 --instant > "$WORK/emulator.log" 2>&1 &
      PIDS+=($!)
      PORT[emulator]=19500 ;;
    nio-relay)
      "$HERE/.build/release/NIORelay" 19600 19001 19002 19003 19004 > "$WORK/nio-relay.log" 2>&1 &
      PIDS+=($!)
      PORT[nio-relay]=19600 ;;
  esac
  TARGETS+=("$peer")
done
for t in "${TARGETS[@]}"; do
  if [ "$t" = direct ]; then wait_port "${PORT[$t]}"; else wait_port "${PORT[$t]}" "$SCHEME"; fi
done
url_of() { if [ "$1" = direct ]; then echo "http://127.0.0.1:${PORT[$1]}"; else echo "$SCHEME://127.0.0.1:${PORT[$1]}"; fi; }

# wrk's latency lines print units (us, ms, s); convert to microseconds.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /ms$/) n *= 1000; else if (v ~ /[0-9]s$/) n *= 1e6; printf "%.0f", n }'; }

declare -A RPS P50 P99
for round in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    url=$(url_of "$t")
    "${LOAD_PIN[@]}" wrk -t2 -c32 -d1s -s "$HERE/wrk/chat.lua" "$url" >/dev/null 2>&1 || true
    out=$("${LOAD_PIN[@]}" wrk -t2 -c32 -d"${SECONDS_PER_RUN}s" --latency -s "$HERE/wrk/chat.lua" "$url")
    RPS[$t]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
    P50[$t]+="$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')") "
    P99[$t]+="$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')") "
    echo "round $round $t: $(echo "$out" | awk '/Requests\/sec/ {print $2}') req/s" >&2
  done
done

declare -A MRPS
echo
if [ "$TLS" = 1 ]; then
  echo "Throughput over TLS: wrk -t2 -c32 (HTTPS, keep-alive), ${SECONDS_PER_RUN}s x $ROUNDS rounds, medians; each proxy pinned to core 1 with one thread, wrk and backends on core 0"
else
  echo "Throughput: wrk -t2 -c32, ${SECONDS_PER_RUN}s x $ROUNDS rounds, medians (2 cores shared by wrk, proxy and backends)"
fi
printf "%-12s %12s %12s %12s %14s\n" target "req/s" "p50 (us)" "p99 (us)" "vs haproxy"
for t in "${TARGETS[@]}"; do
  MRPS[$t]=$(echo "${RPS[$t]}" | median)
done
for t in "${TARGETS[@]}"; do
  ratio="-"
  [ -n "${MRPS[haproxy]:-}" ] && ratio=$(awk -v a="${MRPS[$t]}" -v b="${MRPS[haproxy]}" 'BEGIN {printf "%.2fx", a / b}')
  printf "%-12s %12.0f %12.0f %12.0f %14s\n" "$t" "${MRPS[$t]}" "$(echo "${P50[$t]}" | median)" "$(echo "${P99[$t]}" | median)" "$ratio"
done

echo
SPREAD_CONNS=4
awk -v r="$RATE" 'BEGIN {exit !(r > 0 && 1000 / r == int(1000 / r))}' \
  || { echo "--rate must space requests by whole milliseconds (1000, 500, 250...): wrk's timers have 1 ms resolution" >&2; exit 2; }
declare -A L50 B50
latency_table() { # mode title; fills L50 (spread) or B50 (bursts)
  local mode=$1
  echo "$2"
  printf "%-12s %10s %12s %12s %16s\n" target "req/s" "p50 (us)" "p99 (us)" "p50 added (us)"
  for t in "${TARGETS[@]}"; do
    local url out
    url=$(url_of "$t")
    if [ "$mode" = spread ]; then
      out=$(WRK_RATE=$RATE WRK_CONNECTIONS=$SPREAD_CONNS "${LOAD_PIN[@]}" wrk -t$SPREAD_CONNS -c$SPREAD_CONNS -d10s --latency -s "$HERE/wrk/chat.lua" "$url" 2>/dev/null)
    else
      out=$(WRK_DELAY_MS=4 "${LOAD_PIN[@]}" wrk -t1 -c8 -d10s --latency -s "$HERE/wrk/chat.lua" "$url" 2>/dev/null)
    fi
    local p50 l99 rps
    p50=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    l99=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    if [ "$mode" = spread ]; then L50[$t]=$p50; else B50[$t]=$p50; fi
    local base=${L50[direct]}
    [ "$mode" = spread ] || base=${B50[direct]}
    printf "%-12s %10s %12s %12s %16s\n" "$t" "$rps" "$p50" "$l99" "$((p50 - base))"
  done
  echo
}
latency_table spread "Added latency at $RATE req/s, evenly spaced (wrk -t$SPREAD_CONNS -c$SPREAD_CONNS, WRK_RATE=$RATE: about one request at a time), 10 s, against direct"
latency_table bursts "Added latency in bursts (wrk -t1 -c8, each connection paced 4 ms: ~2000 req/s arriving 8 at a time), 10 s, against direct"

echo
if [ -n "${MRPS[haproxy]:-}" ]; then
  what="cacheroute throughput"
  [ "$TLS" = 1 ] && what="cacheroute over TLS throughput"
  awk -v c="${MRPS[cacheroute]}" -v h="${MRPS[haproxy]}" -v w="$what" -v t="$TLS" \
    'BEGIN {printf "goal: %s >= 0.7x HAProxy%s (aim 1.0x): %.2fx %s\n", w, (t == 1 ? " over TLS" : ""), c / h, (c / h >= 0.7 ? "met" : "NOT met")}'
fi
if [ -n "${MRPS[sglang]:-}" ]; then
  awk -v c="${MRPS[cacheroute]}" -v s="${MRPS[sglang]}" \
    'BEGIN {printf "goal: cacheroute throughput >= 5x SGLang router cache_aware: %.1fx %s\n", c / s, (c / s >= 5 ? "met" : "NOT met")}'
fi
if [ -n "${MRPS[emulator]:-}" ] && [ -n "${MRPS[haproxy]:-}" ]; then
  awk -v e="${MRPS[emulator]}" -v h="${MRPS[haproxy]}" \
    'BEGIN {printf "goal: one emulated replica (instant) >= HAProxy throughput: %.2fx %s\n", e / h, (e / h >= 1 ? "met" : "NOT met")}'
fi
if [ -n "${MRPS[nio-relay]:-}" ]; then
  awk -v c="${MRPS[cacheroute]}" -v r="${MRPS[nio-relay]}" \
    'BEGIN {printf "context: cacheroute runs at %.2fx the bare SwiftNIO relay (no parsing, keys or routing)\n", c / r}'
fi
added=$((L50[cacheroute] - L50[direct]))
echo "goal: added p50 latency over direct at $RATE req/s (evenly spaced) <= 100 us: ${added} us $([ "$added" -le 100 ] && echo met || echo 'NOT met')"
[ -n "${L50[haproxy]:-}" ] && echo "      (HAProxy adds $((L50[haproxy] - L50[direct])) us there; in bursts cacheroute adds $((B50[cacheroute] - B50[direct])) us, HAProxy $((B50[haproxy] - B50[direct])) us)"
