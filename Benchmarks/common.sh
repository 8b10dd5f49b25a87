# Shared by proxy.sh and ab.sh (sourced): installing the Debian tools they run, the four static
# nginx backends both put behind the proxies, a cacheroute config in front of them, waiting for a
# proxy to answer, and the median of a list of numbers.

# Installs the Debian packages of the named commands that are missing.
install_missing() {
  local missing=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Waits until a chat completion sent to PORT (SCHEME http or https, any certificate) succeeds
# (20 s at most; fails after that).
wait_port() {
  for _ in $(seq 1 100); do
    if curl -sk -o /dev/null -m 1 -X POST -H 'content-type: application/json' \
      -d '{"model":"m","messages":[{"role":"user","content":"hi"}]}' "${2:-http}://127.0.0.1:$1/v1/chat/completions"; then
      return 0
    fi
    sleep 0.2
  done
  echo "port $1 never answered" >&2
  return 1
}

# Writes DIR/backends.conf: nginx answering a fixed one-token chat completion on 19001-19004.
write_backends_conf() {
  local dir=$1
  local body='{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"length"}],"usage":{"prompt_tokens":1000,"completion_tokens":1,"total_tokens":1001}}'
  {
    echo "worker_processes 1; pid $dir/backends.pid; error_log $dir/backends.err warn;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off;"
    for p in 19001 19002 19003 19004; do
      echo "  server { listen 127.0.0.1:$p; location / { default_type application/json; return 200 '$body'; } }"
    done
    echo "}"
  } > "$dir/backends.conf"
}

# Writes a cacheroute config to FILE: data port PORT, admin PORT+1, the four backends, no access log.
write_cacheroute_yaml() {
  local file=$1 port=$2 extra=${3:-}
  cat > "$file" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$((port + 1))
replicas:
  - {name: b1, url: "http://127.0.0.1:19001"}
  - {name: b2, url: "http://127.0.0.1:19002"}
  - {name: b3, url: "http://127.0.0.1:19003"}
  - {name: b4, url: "http://127.0.0.1:19004"}
logging: {level: warning, access_log: false}
$extra
YAML
}

# The median of whitespace-separated numbers on stdin.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
