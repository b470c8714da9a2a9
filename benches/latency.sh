#!/usr/bin/env bash
# sse-edge alone, three workloads of the load-harness issue, each on a fresh proxy in front of
# the demo origin (benches/latency.toml), the load from `sse-edge load` in its own processes:
#  1. event latency, origin change -> client, in origin long-poll mode, SUBSCRIBERS plaintext
#     HTTP/1.1 clients of one stream whose data changes every TICK_MS;
#  2. while those are held: time to first frame of NEW clients arriving one at a time
#     (NEW clients at 50/s), the state already in the hub;
#  3. SUBSCRIBERS clients over 100 stream keys: origin requests per poll interval.
# Loopback only; bounded in streams and time. Every port (proxy 18080, admin 19901, origin
# 19000) is shifted by PORT_SHIFT (default 0), so that this runs beside other benches. The
# binary is built in CARGO_TARGET_DIR (default ./target).
#
# HTTP2=1 runs workload 1 over h2c instead, 100 streams per connection. Workload 1 also
# prints the proxy's write-family system calls (syscw, /proc/PID/io) and context switches of
# its threads per frame delivered.
#
#   benches/latency.sh [SUBSCRIBERS=10000]   (env: HOLD=20 TICK_MS=1000 NEW=500 HTTP2= PORT_SHIFT=0)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
subs=${1:-10000}
hold=${HOLD:-20}
tick_ms=${TICK_MS:-1000}
new=${NEW:-500}
h2=()
if [ -n "${HTTP2:-}" ]; then h2=(--http2 --connections $(((subs + 99) / 100))); fi
shift_by=${PORT_SHIFT:-0}
proxy_port=$((18080 + shift_by))
admin=http://127.0.0.1:$((19901 + shift_by))
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/sse-edge
work=$(mktemp -d)
sed -e "s/127.0.0.1:18080/127.0.0.1:$proxy_port/" -e "s/127.0.0.1:19901/127.0.0.1:$((19901 + shift_by))/" \
  -e "s/127.0.0.1:19000/127.0.0.1:$((19000 + shift_by))/" benches/latency.toml > "$work/latency.toml"
proxy=
stop() { [ -n "$proxy" ] && { kill "$proxy" 2>/dev/null; wait "$proxy" 2>/dev/null || true; }; proxy=; }
trap 'stop; rm -rf "$work"' EXIT
start() {
  stop
  RUST_LOG=warn DASHBOARD_API_KEY=bench $bin demo --config "$work/latency.toml" \
    --tick-ms "$tick_ms" --cold-start-ms 0 >/dev/null &
  proxy=$!
  wait_healthy
}
report() { # title json
  python3 - "$1" "$2" <<'PY'
import json, sys
title, r = sys.argv[1], json.load(open(sys.argv[2]))
s = lambda k: r[k]
f = lambda d: f"p50 {d['p50_ms']:.1f} ms, p90 {d['p90_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms, max {d['max_ms']:.1f} ms ({d['count']} samples)"
print(f"{title}: opened {r['opened']}/{r['streams']} ({r['failed']} failed), {r['events_per_second']:.0f} events/s")
print(f"    first frame  {f(r['first_frame'])}")
if r['latency']['count']:
    print(f"    latency      {f(r['latency'])}")
PY
}

echo "sse-edge latency: $subs subscribers, data every $tick_ms ms, $hold s holds, $(nproc) cores, $(date -u +%F)"
start
$bin load http://127.0.0.1:$proxy_port/api/v2/stream --streams 1 --duration 0.5 >/dev/null
$bin load http://127.0.0.1:$proxy_port/api/v2/stream --streams "$subs" --duration "$hold" "${h2[@]}" --json > "$work/held.json" &
held=$!
for _ in $(seq 600); do [ "$(metric sse_edge_streams_open)" -ge "$subs" ] && break; sleep 0.1; done
sleep 2
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # user + system clock ticks
writes() { awk '$1 == "syscw:" {print $2}' "/proc/$1/io"; }
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }
frames0=$(metric sse_edge_frames_sent_total); edge0=$(cpu "$proxy"); load0=$(cpu "$held"); t0=$(date +%s.%N)
w0=$(writes "$proxy"); s0=$(switches "$proxy")
sleep 5
frames1=$(metric sse_edge_frames_sent_total); edge1=$(cpu "$proxy"); load1=$(cpu "$held"); t1=$(date +%s.%N)
w1=$(writes "$proxy"); s1=$(switches "$proxy")
$bin load http://127.0.0.1:$proxy_port/api/v2/stream --streams "$new" --rate 50 --duration 1 --json > "$work/new.json"
wait $held
report "1. long-poll fan-out to $subs subscribers${HTTP2:+ over h2c}" "$work/held.json"
python3 - "$frames0" "$frames1" "$edge0" "$edge1" "$load0" "$load1" "$t0" "$t1" "$(getconf CLK_TCK)" \
  "$w0" "$w1" "$s0" "$s1" <<'PY'
import sys
f0, f1, e0, e1, l0, l1, t0, t1, hz, w0, w1, s0, s1 = (float(x) for x in sys.argv[1:])
frames, seconds = f1 - f0, t1 - t0
print(f"    CPU over {seconds:.1f} s: proxy {(e1 - e0) / hz / seconds * 100:.0f} % of a core, "
      f"{(e1 - e0) / hz / frames * 1e6:.1f} us per frame delivered; load generator "
      f"{(l1 - l0) / hz / seconds * 100:.0f} %, {(l1 - l0) / hz / frames * 1e6:.1f} us per frame received")
print(f"    proxy per frame delivered: {(w1 - w0) / frames:.3f} write calls, "
      f"{(s1 - s0) / frames:.4f} context switches ({frames:.0f} frames)")
PY
report "2. $new new clients at 50/s while $subs are open" "$work/new.json"

start
polls() { metric sse_edge_polls_total; }
$bin load "http://127.0.0.1:$proxy_port/bench/{key}/stream" --keys 100 --streams "$subs" --duration "$hold" --json > "$work/keys.json" &
keys=$!
for _ in $(seq 600); do [ "$(metric sse_edge_streams_open)" -ge "$subs" ] && break; sleep 0.1; done
sleep 2
p0=$(polls); t0=$(date +%s.%N); pollers=$(metric sse_edge_pollers)
sleep $((hold - 6))
p1=$(polls); t1=$(date +%s.%N)
wait $keys
python3 - "$subs" "$pollers" "$p0" "$p1" "$t0" "$t1" <<'PY'
import sys
subs, pollers = int(sys.argv[1]), int(float(sys.argv[2]))
polls, seconds = float(sys.argv[4]) - float(sys.argv[3]), float(sys.argv[6]) - float(sys.argv[5])
print(f"3. {subs} clients on 100 keys: {pollers} pollers; {polls:.0f} origin requests in {seconds:.1f} s "
      f"= {polls / seconds:.1f} per 1 s poll interval (one per key: 100)")
PY
report "   clients" "$work/keys.json"
