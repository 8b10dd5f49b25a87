#!/usr/bin/env bash
# A/B of two cacheroute builds on the proxy workload of proxy.sh: both serve side by side in front
# of the same four static nginx backends, and wrk runs alternate between them (ROUNDS runs of
# SECONDS each, after a warm-up). Prints the medians of req/s and of user and system CPU per
# request (from /proc/PID/stat), and B against A. On a shared, noisy machine only such
# alternating medians say anything about a change of a few percent.
#
# YAML_A / YAML_B: configuration lines added to A's or B's (e.g. YAML_B="insight: {enabled: false}").
#
# The load is wrk/chat.lua; its variables pass through (WRK_TEXT=cjk-escaped: system prompts as
# \u-escaped CJK, as Python clients send them).
#
# usage: Benchmarks/ab.sh BINARY_A BINARY_B [--rounds N] [--seconds S]
#   e.g. git stash; swift build -c release; cp .build/release/cacheroute /tmp/a; git stash pop;
#        swift build -c release; Benchmarks/ab.sh /tmp/a .build/release/cacheroute --rounds 9
# Installs wrk and nginx (Debian) when missing. Uses ports 19001-19004 and 19700-19711.
set -euo pipefail

ROUNDS=7
SECONDS_PER_RUN=4
[ $# -ge 2 ] || { echo "usage: $0 BINARY_A BINARY_B [--rounds N] [--seconds S]" >&2; exit 2; }
BIN_A=$(realpath "$1")
BIN_B=$(realpath "$2")
shift 2
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for bin in "$BIN_A" "$BIN_B"; do [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }; done

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"
WORK=$(mktemp -d /tmp/cacheroute-ab.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/backends.pid" ] && kill "$(cat "$WORK/backends.pid")" 2>/dev/null || true
}
trap cleanup EXIT

install_missing wrk nginx

write_backends_conf "$WORK"
nginx -c "$WORK/backends.conf"
declare -A PORT=([a]=19700 [b]=19710) PID BIN=([a]=$BIN_A [b]=$BIN_B)
for side in a b; do
  extra=YAML_A; [ "$side" = b ] && extra=YAML_B
  write_cacheroute_yaml "$WORK/$side.yaml" "${PORT[$side]}" "${!extra:-}"
  "${BIN[$side]}" serve --config "$WORK/$side.yaml" > "$WORK/$side.log" 2>&1 &
  PID[$side]=$!
  PIDS+=("${PID[$side]}")
done
for side in a b; do wait_port "${PORT[$side]}"; done

TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }  # user, system
declare -A RPS USER SYS
one_run() { # side
  local side=$1 u0 s0 u1 s1 out n
  read -r u0 s0 < <(cpu_ticks "${PID[$side]}")
  out=$(wrk -t2 -c32 -d"${SECONDS_PER_RUN}s" -s "$HERE/wrk/chat.lua" "http://127.0.0.1:${PORT[$side]}")
  read -r u1 s1 < <(cpu_ticks "${PID[$side]}")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  if echo "$out" | grep -q "Non-2xx"; then echo "$side: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  RPS[$side]+="$(awk -v n="$n" -v s="$SECONDS_PER_RUN" 'BEGIN {printf "%.0f", n / s}') "
  USER[$side]+="$(awk -v n="$n" -v t=$((u1 - u0)) -v k="$TICK" 'BEGIN {printf "%.1f", t * 1e6 / k / n}') "
  SYS[$side]+="$(awk -v n="$n" -v t=$((s1 - s0)) -v k="$TICK" 'BEGIN {printf "%.1f", t * 1e6 / k / n}') "
}
for side in a b; do wrk -t2 -c32 -d1s -s "$HERE/wrk/chat.lua" "http://127.0.0.1:${PORT[$side]}" >/dev/null; done
for round in $(seq 1 "$ROUNDS"); do
  one_run a
  one_run b
  echo "round $round done" >&2
done

echo "A: $BIN_A"
echo "B: $BIN_B"
echo "wrk -t2 -c32 -s wrk/chat.lua${WRK_TEXT:+ (WRK_TEXT=$WRK_TEXT)}, ${SECONDS_PER_RUN}s x $ROUNDS alternating rounds, medians:"
printf "%-4s %10s %14s %14s   %s\n" "" "req/s" "user us/req" "sys us/req" "user per round"
for side in a b; do
  printf "%-4s %10s %14s %14s   %s\n" "$side" "$(echo "${RPS[$side]}" | median)" "$(echo "${USER[$side]}" | median)" \
    "$(echo "${SYS[$side]}" | median)" "${USER[$side]}"
done
awk -v ra="$(echo "${RPS[a]}" | median)" -v rb="$(echo "${RPS[b]}" | median)" \
  -v ua="$(echo "${USER[a]}" | median)" -v ub="$(echo "${USER[b]}" | median)" \
  'BEGIN {printf "B vs A: %.2fx req/s, %.2fx user CPU per request\n", rb / ra, ub / ua}'
