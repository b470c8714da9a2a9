#!/usr/bin/env bash
# Proxy memory per idle stream and stream open rate, plaintext HTTP/1.1 and TLS (HTTP/1.1 and
# HTTP/2), and per idle keep-alive connection (one passthrough GET each, then idle;
# benches/keepalive_idle.py), measured on the release binary in front of the demo origin.
# Loopback only; every run is bounded in streams and time.
#
#   benches/idle_memory.sh [STREAMS]      (default 10000; at most ~19000 on this machine)
#
# SSE_EDGE_BIN=path measures that binary instead of building one (to compare two builds in
# one session). SERVING_THREADS=N runs it with `[listen] serving_threads = N` (0: the shared
# runtime; default: the config's, one per core). PLAINTEXT_ONLY=1 runs the plaintext HTTP/1.1
# case alone (to alternate two settings over several rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
streams=${1:-10000}
bin=$(sse_edge_bin)
export RUST_LOG=warn
bench_workspace
config=benches/load.toml
if [ -n "${SERVING_THREADS:-}" ]; then
  config=$work/load.toml
  sed "s/^\[listen\]\$/[listen]\nserving_threads = $SERVING_THREADS/" benches/load.toml > "$config"
fi
proxy=
start_proxy() { # a fresh process per case, so no case reuses memory another one freed
  stop_proxy
  $bin demo --config "$config" >/dev/null &
  proxy=$!
  wait_healthy
  # One stream first, so the poller, the origin's cold start and lazy allocations are not counted.
  $bin load http://127.0.0.1:18080/api/v2/stream --streams 1 --duration 0.5 >/dev/null
}
stop_proxy() { [ -n "$proxy" ] && { kill "$proxy" 2>/dev/null; wait "$proxy" 2>/dev/null || true; }; proxy=; }
trap 'stop_proxy; rm -rf "$work"' EXIT

measure() { # name, url, extra load flags
  local name=$1 url=$2; shift 2
  local before after
  start_proxy
  before=$(rss_kib "$proxy")
  $bin load "$url" --streams "$streams" --duration 6 --json "$@" > /tmp/sse-edge-load.json &
  local load=$!
  for _ in $(seq 300); do [ "$(metric sse_edge_streams_open)" = "$streams" ] && break; sleep 0.1; done
  sleep 2
  after=$(rss_kib "$proxy")
  local held; held=$(metric sse_edge_streams_open)
  wait $load
  python3 - "$name" "$held" "$before" "$after" <<'PY'
import json, sys
name, held, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = json.load(open("/tmp/sse-edge-load.json"))
ff = r["first_frame"]
print(f"{name:<22} {held:>6} streams held | proxy RSS {before:>7} -> {after:>7} KiB | "
      f"{(after - before) / max(held, 1):5.1f} KiB per stream | opened {r['opened']}/{r['streams']} "
      f"at {r['opened_per_second']:.0f}/s | first frame p50 {ff['p50_ms']:.1f} ms, p99 {ff['p99_ms']:.1f} ms")
PY
}

echo "sse-edge idle streams: $streams per run, $(nproc) cores, $(date -u +%F)${SERVING_THREADS:+, serving_threads = $SERVING_THREADS}"
measure "plaintext HTTP/1.1" "http://127.0.0.1:18080/api/v2/stream"
[ "${PLAINTEXT_ONLY:-0}" = 1 ] && exit 0
measure "TLS HTTP/1.1" "https://localhost:18443/api/v2/stream" -k
measure "TLS HTTP/2 (100/conn)" "https://localhost:18443/api/v2/stream" -k --http2 --connections $((streams / 100))
# h2c reaches hyper through the fast path's detection, with the bytes it read (`rewind`).
measure "plaintext h2c (1/conn)" "http://127.0.0.1:18080/api/v2/stream" --http2 --connections "$streams"
# Keep-alive connections idle between requests (a dashboard's fetches), half as many.
start_proxy
python3 benches/keepalive_idle.py 18080 "$proxy" $((streams / 2))
