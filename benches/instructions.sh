#!/usr/bin/env bash
# Instructions per passthrough request, counted by callgrind: nearly the same count for the
# same binary and load whatever else the machine is doing (within ~0.2 % from run to run
# here), so two builds compare closely where a timed run on this shared box only shows
# differences above its noise.
#
# The demo origin runs on its own (19000); each binary given runs under
# `valgrind --tool=callgrind` as the passthrough proxy (18082, the config compare.sh uses),
# with instrumentation off until 2,000 warm-up requests are done; then REQUESTS GETs of
# /api/v2/stream/status (h2load --h1, 16 connections, keep-alive) are counted, and the total
# is divided by REQUESTS. User-space instructions only: system calls are the kernel's, and
# glibc's `rep stos`/`rep movs` count once per byte, so a large memset weighs more here than it
# costs. The top functions, self cost per request, are printed too (TOP=N, default 15).
# The first binary also runs the demo origin. NGINX=1 counts nginx too, as one process
# (`master_process off`) with compare.sh's two passthrough setups: bare `proxy_pass`, and
# `nginx-hdr`, doing sse-edge's header work. Installs valgrind and nghttp2-client (h2load),
# and with NGINX=1 nginx and its Nchan module (benches/nginx.sh's config loads it), from
# Debian when missing.
#
# KEEP=DIR copies each counted dump to DIR (callgrind.<binary's name>, callgrind.nginx-*), for
# `callgrind_annotate --inclusive=yes` or `--tree=caller` to ask who calls what.
#
#   benches/instructions.sh BINARY [BINARY...]   (env: REQUESTS=20000 TOP=15 NGINX=0 KEEP=)
set -euo pipefail
# The binaries as given from where the script was started, before it moves to the repository.
bins=()
for bin in "$@"; do bins+=("$(realpath "$(command -v "$bin" || echo "$bin")")"); done
keep=${KEEP:+$(realpath -m "$KEEP")}
cd "$(dirname "$0")/.."
. benches/common.sh
. benches/nginx.sh
[ $# -ge 1 ] || { echo "usage: benches/instructions.sh BINARY [BINARY...]" >&2; exit 2; }
requests=${REQUESTS:-20000}
top=${TOP:-15}
with_nginx=${NGINX:-0}
packages=()
command -v valgrind >/dev/null || packages+=(valgrind)
command -v h2load >/dev/null || packages+=(nghttp2-client)
if [ "$with_nginx" = 1 ]; then
  command -v nginx >/dev/null || packages+=(nginx)
  [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || packages+=(libnginx-mod-nchan)
fi
if [ ${#packages[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
bench_workspace
url=http://127.0.0.1:18082/api/v2/stream/status

# The origin: the demo's, with its own proxy on 18080 (unused here).
RUST_LOG=warn DASHBOARD_API_KEY=bench "${bins[0]}" demo --config benches/compare.toml \
  --tick-ms 100 --cold-start-ms 0 >/dev/null 2>&1 &
pids+=("$!")
up() {
  for _ in $(seq 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.2; done
  echo "nothing answers $1 after 60 s" >&2
  exit 1
}
up http://127.0.0.1:19000/api/v2/stream/status
sed 's/127.0.0.1:18080/127.0.0.1:18082/; s/127.0.0.1:19901/127.0.0.1:19902/' \
  benches/compare.toml > "$work/passthrough.toml"

echo "instructions per passthrough request: $requests requests, h2load --h1 -c16, $(date -u +%F)"
# count NAME URL PID N: counts REQUESTS GETs of URL through the process PID (running under
# callgrind with instrumentation off, its dumps at $work/callgrind.out.N), its Nth dump;
# prints the figures. A fifth argument names the kept dump (KEEP); the binary's name is the default.
count() {
  local name=$1 url=$2 pid=$3
  up "$url"
  h2load --h1 -n 2000 -c 16 "$url" >/dev/null
  callgrind_control -i on "$pid" >/dev/null
  local done_line
  done_line=$(h2load --h1 -n "$requests" -c 16 "$url" | grep '^requests:')
  callgrind_control -i off "$pid" >/dev/null
  callgrind_control -d "$pid" >/dev/null
  if ! grep -q " $requests succeeded" <<< "$done_line"; then
    echo "$name: not every request succeeded ($done_line)" >&2
    exit 1
  fi
  # The process's dump number N has the counted requests, whole: not split by thread (as
  # --separate-threads would, into N-01, N-02...). Read from a file by awk alone: a pipe
  # closed early would fail the script (pipefail).
  local dump=$work/callgrind.out.$4 total
  if [ ! -f "$dump" ] || compgen -G "$dump-*" >/dev/null; then
    echo "$name: callgrind's dump $4 is missing or split: $(ls "$work")" >&2
    exit 1
  fi
  callgrind_annotate "$dump" > "$work/annotated" 2>/dev/null
  if [ -n "$keep" ]; then mkdir -p "$keep" && cp "$dump" "$keep/callgrind.${5:-$(basename "$name")}"; fi
  total=$(awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t + 0}' "$work/annotated")
  echo "$name: $(( total / requests )) instructions per request ($done_line)"
  awk -v n="$requests" -v top="$top" '
    listed && /^ *[0-9]/ && shown < top {
      c = $1; gsub(",", "", c); line = $0; shown++
      sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, "", line); sub(/ \[.*\]$/, "", line)
      gsub(/\/root\/.cargo\/registry\/src\/[^/]+\//, "", line)
      printf "  %6d %s\n", c / n, substr(line, 1, 150)
    }
    /file:function/ {listed = 1}' "$work/annotated"
}

for bin in "${bins[@]}"; do
  RUST_LOG=warn DASHBOARD_API_KEY=bench valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/callgrind.out" "$bin" --config "$work/passthrough.toml" \
    >/dev/null 2>"$work/valgrind.log" &
  proxy=$!; pids+=("$proxy")
  count "$bin" "$url" "$proxy" 1
  kill -INT "$proxy"; wait "$proxy" 2>/dev/null || true
  rm -f "$work"/callgrind.out*
done

if [ "$with_nginx" = 1 ]; then
  # compare.sh's two passthrough setups, on 18090 (bare) and 18091 (nginx-hdr).
  nginx_conf "$work" <<CONF
  upstream origin { server 127.0.0.1:19000; keepalive 64; }
  server {
    listen 127.0.0.1:18090;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
$(nginx_hdr_server 18091)
CONF
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
    nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off; master_process off;' \
    >/dev/null 2>"$work/valgrind.log" &
  nginx_pid=$!; pids+=("$nginx_pid")
  count "nginx $(nginx -v 2>&1 | sed 's/.*\///') bare proxy_pass" "http://127.0.0.1:18090/api/v2/stream/status" "$nginx_pid" 1 nginx-bare
  count "nginx-hdr" "http://127.0.0.1:18091/api/v2/stream/status" "$nginx_pid" 2 nginx-hdr
fi
