#!/usr/bin/env bash
# Idle streams held in ONE proxy process up to the file limit (plaintext HTTP/1.1), with
# heartbeats flowing: are they all still open at the end, did every one get its heartbeats,
# and what does a stream cost. The load comes from two `sse-edge load` processes (one process
# may hold at most ~19,000 connections here) spread over 64 loopback source addresses.
# Loopback only; bounded in streams and time.
#
#   benches/held_streams.sh [STREAMS] [HOLD_SECONDS]     (defaults 19000 and 40)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
streams=${1:-19000}
hold=${2:-40}
cargo build --release --quiet
bin=target/release/sse-edge
export RUST_LOG=warn
# benches/load.toml with a 5 s heartbeat, so a short hold sees several per stream.
sed 's/^heartbeat_s = .*/heartbeat_s = 5/' benches/load.toml > target/held.toml
$bin demo --config target/held.toml >/dev/null &
proxy=$!
trap 'kill $proxy 2>/dev/null || true' EXIT
wait_healthy
$bin load http://127.0.0.1:18080/api/v2/stream --streams 1 --duration 0.5 >/dev/null
before=$(rss_kib "$proxy")
$bin load http://127.0.0.1:18080/api/v2/stream --streams "$streams" --processes 2 --source-ips 64 \
  --duration "$hold" --json > target/held.json &
load=$!
for _ in $(seq 600); do [ "$(metric sse_edge_streams_open)" = "$streams" ] && break; sleep 0.1; done
beats_start=$(metric sse_edge_heartbeats_sent_total); t_start=$(date +%s.%N)
sleep $((hold / 2))
after=$(rss_kib "$proxy"); fds=$(ls /proc/$proxy/fd | wc -l)
sleep $((hold / 2 - 3))
beats_end=$(metric sse_edge_heartbeats_sent_total); t_end=$(date +%s.%N)
still_open=$(metric sse_edge_streams_open)
wait $load
python3 - "$streams" "$before" "$after" "$fds" "$beats_start" "$beats_end" "$t_start" "$t_end" "$still_open" <<'PY'
import json, sys
streams, before, after, fds = (int(x) for x in sys.argv[1:5])
beats = float(sys.argv[6]) - float(sys.argv[5])
seconds = float(sys.argv[8]) - float(sys.argv[7])
still_open = int(sys.argv[9])
r = json.load(open("target/held.json"))
per = (after - before) / streams
ff = r["first_frame"]
print(f"held {still_open}/{streams} streams in one proxy process ({fds} open files), "
      f"opened {r['opened']} at {r['opened_per_second']:.0f}/s, {r['failed']} failed, {r['ended_early']} ended early")
print(f"proxy RSS {before} -> {after} KiB: {per:.1f} KiB per stream; 1M streams would take {per * 1e6 / 2**20:.1f} GiB")
import math
print(f"heartbeats: {beats:.0f} sent in {seconds:.1f} s = {beats / streams:.2f} per stream "
      f"(a 5 s heartbeat gives each stream {math.floor(seconds / 5)} or {math.ceil(seconds / 5)} in that time)")
print(f"first frame while opening all at once: p50 {ff['p50_ms']:.0f} ms, p99 {ff['p99_ms']:.0f} ms")
PY
