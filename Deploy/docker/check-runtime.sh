#!/usr/bin/env bash
# Checks the container's runtime stage without a Docker engine: builds the binary the way the
# Dockerfile does (release, --static-swift-stdlib), lists its shared-library needs, then runs it
# as uid 10001 in a Debian bookworm minbase root (debootstrap) holding only what the runtime
# stage installs (libxxhash0): `check`, `serve` in front of two emulated replicas, a chat
# request through it, SIGHUP (reload) and SIGTERM (drain, exit 0).
#
#   sudo Deploy/docker/check-runtime.sh [ROOT_DIR]     (needs root, debootstrap and Debian's mirror)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="${1:-/tmp/cacheroute-slimroot}"
scratch="${SCRATCH:-/tmp/cacheroute-static-build}"

swift build -c release --static-swift-stdlib --product cacheroute --scratch-path "$scratch" >/dev/null
bin="$scratch/release/cacheroute"
echo "== shared libraries the binary needs"
ldd "$bin"
if ldd "$bin" | grep -q swift; then echo "FAIL: links the Swift runtime dynamically"; exit 1; fi

if [ ! -x "$root/usr/bin/apt-get" ]; then
  debootstrap --variant=minbase --include=libxxhash0 bookworm "$root" http://deb.debian.org/debian >/dev/null
fi
install -D -m 0755 "$bin" "$root/usr/local/bin/cacheroute"
strip --strip-debug "$root/usr/local/bin/cacheroute"
mkdir -p "$root/etc/cacheroute" "$root/proc"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  umount "$root/proc" 2>/dev/null || true
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p1=$(port); p2=$(port); listen=$(port); admin=$(port)
"$bin" emulate --port "$p1" --name e1 --instant >/dev/null 2>&1 & pids+=($!)
"$bin" emulate --port "$p2" --name e2 --instant >/dev/null 2>&1 & pids+=($!)
cat > "$root/etc/cacheroute/cacheroute.yaml" <<YAML
listen: 127.0.0.1:$listen
admin_listen: 127.0.0.1:$admin
replicas:
  - {name: e1, url: "http://127.0.0.1:$p1"}
  - {name: e2, url: "http://127.0.0.1:$p2"}
reload: {watch_file: false}
YAML
run() { chroot --userspec=10001:10001 "$root" /usr/local/bin/cacheroute "$@"; }
echo "== check, as uid 10001 in the slim root"
run check --config /etc/cacheroute/cacheroute.yaml
echo "== serve"
chroot --userspec=10001:10001 "$root" /usr/local/bin/cacheroute serve --config /etc/cacheroute/cacheroute.yaml \
  > /tmp/cacheroute-runtime.log 2>&1 &
serve=$!; pids+=("$serve")
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$admin/readyz"; echo
curl -fsS -D - -o /dev/null "http://127.0.0.1:$listen/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"model":"cacheroute-demo","max_tokens":4,"messages":[{"role":"user","content":"hello from the slim root"}]}' | grep -i -E '^HTTP|x-cacheroute'
# chroot executes cacheroute in place: the same pid.
kill -HUP "$serve"; sleep 0.5
grep -q "configuration reloaded" /tmp/cacheroute-runtime.log || { echo "FAIL: SIGHUP did not reload"; cat /tmp/cacheroute-runtime.log; exit 1; }
echo "SIGHUP: reloaded"
kill -TERM "$serve"
status=0; wait "$serve" || status=$?
echo "SIGTERM: exit status $status"
[ "$status" -eq 0 ]
echo "runtime check passed"
