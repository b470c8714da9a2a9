#!/usr/bin/env bash
# Instructions per passthrough request, counted by callgrind: the same count for the same
# binary and load whatever else the machine is doing, so two builds compare exactly where a
# timed run on this shared box only shows differences above its noise.
#
# The demo origin runs on its own (19000); each binary given runs under
# `valgrind --tool=callgrind` as the passthrough proxy (18082, the config compare.sh uses),
# with instrumentation off until 2,000 warm-up requests are done; then REQUESTS GETs of
# /api/v2/stream/status (h2load --h1, 16 connections, keep-alive) are counted, and the total
# is divided by REQUESTS. User-space instructions only: system calls are the kernel's, and
# glibc's `rep stos`/`rep movs` count once per byte, so a large memset weighs more here than it
# costs. The top functions, self cost per request, are printed too (TOP=N, default 15).
# Installs valgrind and nghttp2-client (h2load) from Debian when missing.
#
#   benches/instructions.sh BINARY [BINARY...]   (env: REQUESTS=20000 TOP=15)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
[ $# -ge 1 ] || { echo "usage: benches/instructions.sh BINARY [BINARY...]" >&2; exit 2; }
requests=${REQUESTS:-20000}
top=${TOP:-15}
if ! command -v valgrind >/dev/null || ! command -v h2load >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind nghttp2-client >/dev/null
fi
bench_workspace
url=http://127.0.0.1:18082/api/v2/stream/status

# The origin: the demo's, with its own proxy on 18080 (unused here).
RUST_LOG=warn DASHBOARD_API_KEY=bench "$1" demo --config benches/compare.toml \
  --tick-ms 100 --cold-start-ms 0 >/dev/null 2>&1 &
pids+=("$!")
for _ in $(seq 100); do
  curl -fs -o /dev/null http://127.0.0.1:19000/api/v2/stream/status && break
  sleep 0.1
done
sed 's/127.0.0.1:18080/127.0.0.1:18082/; s/127.0.0.1:19901/127.0.0.1:19902/' \
  benches/compare.toml > "$work/passthrough.toml"

echo "instructions per passthrough request: $requests requests, h2load --h1 -c16, $(date -u +%F)"
for bin in "$@"; do
  out=$work/callgrind.out
  RUST_LOG=warn DASHBOARD_API_KEY=bench valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out" "$bin" --config "$work/passthrough.toml" \
    >/dev/null 2>"$work/valgrind.log" &
  proxy=$!; pids+=("$proxy")
  for _ in $(seq 300); do curl -fs -o /dev/null "$url" && break; sleep 0.2; done
  h2load --h1 -n 2000 -c 16 "$url" >/dev/null
  callgrind_control -i on "$proxy" >/dev/null
  done_line=$(h2load --h1 -n "$requests" -c 16 "$url" | grep '^requests:')
  callgrind_control -i off "$proxy" >/dev/null
  callgrind_control -d "$proxy" >/dev/null
  kill -INT "$proxy"; wait "$proxy" 2>/dev/null || true
  # The dump taken while the proxy ran is the one with the counted requests.
  dump=$(ls "$out".* | sort -V | tail -1)
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  echo "$bin: $(( total / requests )) instructions per request ($done_line)"
  callgrind_annotate "$dump" 2>/dev/null | sed -n '/file:function/,$p' | grep -E '^ *[0-9]' \
    | head -"$top" | awk -v n="$requests" '{c = $1; gsub(",", "", c); $1 = ""; $2 = ""; printf "  %6d %s\n", c / n, substr($0, 1, 150)}'
  rm -f "$out"*
done
