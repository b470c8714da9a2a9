#!/usr/bin/env bash
# Proxy CPU per delivered event, sse-edge against nginx + Nchan, in one run, alternating
# (issue 15.2): CPU-seconds (utime + stime from /proc/PID/stat, summed over all the peer's
# processes: sse-edge's one, nginx's master and workers) per million events the subscribers
# received, over a WINDOW-second window taken once every subscriber is open.
#
# Each demand is SUBSCRIBERSxCHANGES_PER_SECOND. The subscribers are `sse-edge load` (its own
# process, the same client for both peers) on one stream:
#  - sse-edge (`sse-edge --config`, the proxy alone) long-polls the demo origin, which runs in
#    another process (`sse-edge demo`, whose own proxy sits idle on other ports) and changes
#    its metrics document CHANGES_PER_SECOND times a second;
#  - for Nchan, a publisher POSTs a document of the same shape on the same schedule.
# Each event carries its send time (ts_us), so latency is change -> client.
# Transports: plaintext HTTP/1.1 (one connection per subscriber) and h2c, prior knowledge,
# H2_STREAMS subscribers per connection, for both (nginx `listen ... http2` serves h2c
# without TLS). Also printed per delivered event: context switches of the proxy's threads
# (/proc/PID/task/*/status; a wake-up that found nothing to do is one too) and write-family
# system calls (syscw in /proc/PID/io), and the load generator's CPU.
#
# Every port is shifted by PORT_SHIFT (default 100: the proxy on 18180, the origin on 19100,
# Nchan on 18190 and 18191), so that this runs beside the other benches. Installs nginx and
# libnginx-mod-nchan from Debian when missing. Everything on 127.0.0.1; bounded in time; every
# process it starts is stopped on exit. The binary is built in CARGO_TARGET_DIR (default
# ./target), or SSE_EDGE_BIN=path measures that one.
#
#   benches/cpu_per_event.sh [ROUNDS=2]
#     (env: DEMANDS="1000x20 10000x100" WINDOW=8 H2_STREAMS=100 TRANSPORTS="h1 h2c" PORT_SHIFT=100
#      MAX_RSS_MIB=4096: a measure whose peer passes it is stopped and not counted;
#      BASELINE_BIN=path: also measures that sse-edge binary ("before") in every round, as a
#      third peer, to compare a change with the code before it in the same run)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
. benches/nginx.sh
rounds=${1:-2}
demands=${DEMANDS:-1000x20 10000x100}
window=${WINDOW:-8}
per_conn=${H2_STREAMS:-100}
transports=${TRANSPORTS:-h1 h2c}
shift_by=${PORT_SHIFT:-100}
max_rss=${MAX_RSS_MIB:-4096}
edge_port=$((18080 + shift_by)) edge_admin=$((19901 + shift_by))
origin_port=$((19000 + shift_by)) demo_port=$((18081 + shift_by)) demo_admin=$((19902 + shift_by))
nchan_port=$((18090 + shift_by)) nchan_h2_port=$((18091 + shift_by))

if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
fi
for port in $edge_port $edge_admin $origin_port $demo_port $demo_admin $nchan_port $nchan_h2_port; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "127.0.0.1:$port is taken (another bench? set PORT_SHIFT)" >&2
    exit 1
  fi
done
bin=$(sse_edge_bin)
edge_bin=$bin
bench_workspace

# The proxy's configuration, and the demo origin's (its idle proxy on two other ports).
sed -e "s/127.0.0.1:18080/127.0.0.1:$edge_port/" -e "s/127.0.0.1:19901/127.0.0.1:$edge_admin/" \
  -e "s/127.0.0.1:19000/127.0.0.1:$origin_port/" benches/cpu_per_event.toml > "$work/edge.toml"
sed -e "s/127.0.0.1:18080/127.0.0.1:$demo_port/" -e "s/127.0.0.1:19901/127.0.0.1:$demo_admin/" \
  -e "s/127.0.0.1:19000/127.0.0.1:$origin_port/" benches/cpu_per_event.toml > "$work/origin.toml"

# nginx + Nchan: HTTP/1.1 and h2c listeners, a publisher endpoint, and its subscriber count.
nginx_conf "$work" <<CONF
  server {
    listen 127.0.0.1:$nchan_port backlog=4096;
    listen 127.0.0.1:$nchan_h2_port http2 backlog=4096;
    # A new subscriber starts at the next message, as on sse-edge.
    location = /sub { nchan_subscriber eventsource; nchan_channel_id bench; nchan_subscriber_first_message newest; }
    location = /pub { nchan_publisher; nchan_channel_id bench; nchan_message_buffer_length 16; }
    location = /nchan_status { nchan_stub_status; }
  }
CONF
# A fresh nginx for every Nchan measure: past its demand Nchan queues what its subscribers
# cannot take in its workers' memory (15 GiB in one run here), which nginx keeps once freed.
nginx_master=
stop_nginx() {
  if [ -n "$nginx_master" ]; then kill "$nginx_master" 2>/dev/null || true; wait "$nginx_master" 2>/dev/null || true; fi
  nginx_master=
}
start_nginx() {
  stop_nginx
  nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
  nginx_master=$!; pids+=("$nginx_master")
  for _ in $(seq 100); do curl -fs -m 1 -o /dev/null -X POST -d '{}' "http://127.0.0.1:$nchan_port/pub" && return 0; sleep 0.1; done
  echo "nginx did not start within 10 s" >&2
  return 1
}

edge= origin=
stop_edge() {
  for p in $edge $origin; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  edge= origin=
}
start_edge() { # tick_ms
  stop_edge
  RUST_LOG=warn DASHBOARD_API_KEY=bench $bin demo --config "$work/origin.toml" \
    --tick-ms "$1" --cold-start-ms 0 >/dev/null &
  origin=$!; pids+=("$origin")
  RUST_LOG=warn DASHBOARD_API_KEY=bench $edge_bin --config "$work/edge.toml" >/dev/null &
  edge=$!; pids+=("$edge")
  for _ in $(seq 100); do
    curl -fs -m 1 -o /dev/null "http://127.0.0.1:$edge_admin/healthz" \
      && curl -fs -m 1 -o /dev/null "http://127.0.0.1:$demo_admin/healthz" && return 0
    sleep 0.1
  done
  echo "sse-edge did not become healthy within 10 s" >&2
  return 1
}

# Counts read from the peers (0 when a peer does not answer).
edge_streams() { { curl -fs -m 2 "http://127.0.0.1:$edge_admin/metrics" || true; } | awk '$1 == "sse_edge_streams_open" {print $2 + 0; f = 1} END {if (!f) print 0}'; }
edge_frames() { { curl -fs -m 2 "http://127.0.0.1:$edge_admin/metrics" || true; } | awk '$1 == "sse_edge_frames_sent_total" {print $2 + 0; f = 1} END {if (!f) print 0}'; }
nchan_streams() { { curl -fs -m 2 "http://127.0.0.1:$nchan_port/nchan_status" || true; } | awk '$1 == "subscribers:" {print $2 + 0; f = 1} END {if (!f) print 0}'; }
edge_processes() { echo "$edge"; }
nchan_processes() { echo "$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"; }

# Resident memory of the processes, in MiB.
rss_mib() { for p in "$@"; do awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0; done | awk '{s += $1} END {print int(s / 1024)}'; }

# "clock-ticks context-switches write-calls", summed over the processes (all their threads).
snapshot() {
  local ticks=0 switches=0 writes=0 t s w
  for p in "$@"; do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    s=$(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}')
    w=$(awk '$1 == "syscw:" {print $2}' "/proc/$p/io" 2>/dev/null || echo 0)
    ticks=$((ticks + t)) switches=$((switches + s)) writes=$((writes + ${w:-0}))
  done
  echo "$ticks $switches $writes"
}

publisher() { # POSTs a metrics-shaped document with ts_us to Nchan rate times a second until killed
  exec python3 - "$nchan_port" "$1" <<'PY'
import http.client, json, sys, time
port, rate = int(sys.argv[1]), float(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
start = time.monotonic()
n = 0
while True:
    n += 1
    # The demo origin's document: the same fields, the same sizes.
    body = json.dumps({"errors": 10 + n % 40, "hours": 24, "p95_ms": 100 + n % 200,
                       "requests": 10000 + n % 5000, "sample": n, "ts_us": time.time_ns() // 1000},
                      separators=(",", ":"))
    conn.request("POST", "/pub", body)
    conn.getresponse().read()
    time.sleep(max(0.0, start + n / rate - time.monotonic()))
PY
}

measure() { # demand transport name url count-function processes-function
  local demand=$1 transport=$2 name=$3 url=$4 count=$5 processes=$6
  local subs=${demand%x*} rate=${demand#*x} pub= args
  # The load holds its streams past the window (its hold starts when its last stream opens,
  # which the peer's count may report a little later); its rate over the hold, in which the
  # window lies, gives the events delivered in the window.
  args=(--streams "$subs" --duration $((window + 5)) --json)
  if [ "$transport" = h2c ]; then args+=(--http2 --connections $(((subs + per_conn - 1) / per_conn))); fi
  if [ "$name" = nchan ]; then start_nginx; publisher "$rate" & pub=$!; pids+=("$pub"); fi
  $bin load "$url" "${args[@]}" > "$work/load.json" &
  local load=$!
  # Until every subscriber is open (or, when some failed, the count stopped growing for 2 s
  # at 99 % of them); bounded by 60 s and by MAX_RSS_MIB.
  local open last=-1 still=0
  for _ in $(seq 600); do
    open=$($count)
    [ "$open" -ge "$subs" ] || ! kill -0 "$load" 2>/dev/null && break
    if [ "$open" -eq "$last" ] && [ "$open" -ge $((subs * 99 / 100)) ]; then
      still=$((still + 1)); [ "$still" -ge 20 ] && break
    else still=0; fi
    last=$open
    # shellcheck disable=SC2046
    [ "$(rss_mib $($processes))" -gt "$max_rss" ] && break
    sleep 0.1
  done
  sleep 1
  local procs a b la lb f0 f1 t0 t1
  procs=$($processes)
  # shellcheck disable=SC2086
  a=$(snapshot $procs); la=$(snapshot "$load"); f0=$(edge_frames); t0=$(date +%s.%N)
  # The window, cut short (and the load stopped) if the peer's memory passes MAX_RSS_MIB.
  local held=1 end
  end=$(python3 -c "import time; print(time.monotonic() + $window)")
  while python3 -c "import sys, time; sys.exit(time.monotonic() >= $end)"; do
    # shellcheck disable=SC2086
    if [ "$(rss_mib $procs)" -gt "$max_rss" ]; then
      echo "  $name $transport: over $max_rss MiB of memory; load stopped" >&2
      held=0; kill "$load" 2>/dev/null || true; break
    fi
    sleep 0.5
  done
  # shellcheck disable=SC2086
  b=$(snapshot $procs); lb=$(snapshot "$load"); f1=$(edge_frames); t1=$(date +%s.%N)
  kill -0 "$load" 2>/dev/null || held=0  # the load ended inside the window: not a measure
  wait "$load" || true
  if [ -n "$pub" ]; then
    kill "$pub" 2>/dev/null || true; wait "$pub" 2>/dev/null || true
    stop_nginx  # and the memory it queued with it
  fi
  python3 - "$demand" "$transport" "$name" "$a" "$b" "$la" "$lb" "$f0" "$f1" "$t0" "$t1" \
    "$(getconf CLK_TCK)" "$work/load.json" "$work/summary" "$held" <<'PY'
import json, sys
demand, transport, name = sys.argv[1:4]
(t_a, s_a, w_a), (t_b, s_b, w_b), (lt_a, _, _), (lt_b, _, _) = (
    [float(x) for x in v.split()] for v in sys.argv[4:8])
f0, f1, t0, t1, hz = (float(x) for x in sys.argv[8:13])
try:
    r = json.load(open(sys.argv[13]))
except ValueError:  # the load was stopped: no report
    print(f"  {name:<8} {transport:<3} no report from the load (stopped); not counted")
    sys.exit(0)
subs, rate = (int(x) for x in demand.split("x"))
seconds = t1 - t0
events = r["events_per_second"] * seconds  # the window lies inside the load's hold
cpu = (t_b - t_a) / hz
per_m = cpu / max(events, 1) * 1e6
l = r["latency"]
row = dict(demand=demand, transport=transport, name=name, cpu_per_m=per_m,
           events_per_s=r["events_per_second"], asked=subs * rate, cpu_pct=cpu / seconds * 100,
           switches=(s_b - s_a) / max(events, 1), writes=(w_b - w_a) / max(events, 1),
           load_us=(lt_b - lt_a) / hz / max(events, 1) * 1e6, p50=l["p50_ms"], p99=l["p99_ms"],
           bytes=r["bytes"] / max(r["events"], 1), opened=r["opened"], failed=r["failed"])
frames = f"; proxy's own frame count {(f1 - f0) / seconds:.0f}/s" if name == "sse-edge" else ""
print(f"  {name:<8} {transport:<3} {row['cpu_per_m']:6.2f} CPU-s per M events  "
      f"({row['cpu_pct']:3.0f} % of a core, {row['events_per_s']:7.0f} of {row['asked']} events/s{frames})  "
      f"{row['switches']:.3f} ctx switches, {row['writes']:.3f} writes per event  "
      f"load {row['load_us']:.1f} us/event  p50 {row['p50']:.1f} ms p99 {row['p99']:.1f} ms  "
      f"{row['bytes']:.0f} B/event  opened {row['opened']}/{subs}"
      + (f", {r['failed']} failed: {r['first_failure']}" if r["failed"] else "")
      + ("" if sys.argv[15] == "1" else "  (NOT COUNTED: the load ended inside the window)"))
if sys.argv[15] == "1":
    with open(sys.argv[14], "a") as out:
        out.write(json.dumps(row) + "\n")
PY
  # Let the closed streams go before the next measure.
  for _ in $(seq 200); do [ "$($count)" -eq 0 ] && break; sleep 0.1; done
}

echo "CPU per delivered event, sse-edge vs nginx $(nginx -v 2>&1 | sed 's/.*\///') + Nchan: demands $demands (subscribers x changes/s), ${window} s windows, h2c ${per_conn} streams per connection, $rounds round(s), $(nproc) cores, $(date -u +%F)"
for demand in $demands; do
  running=
  for round in $(seq "$rounds"); do
    echo "$demand round $round"
    for transport in $transports; do
      if [ "$transport" = h2c ]; then np=$nchan_h2_port; else np=$nchan_port; fi
      for who in sse-edge ${BASELINE_BIN:+before}; do
        if [ "$running" != "$who" ]; then
          if [ "$who" = before ]; then edge_bin=$BASELINE_BIN; else edge_bin=$bin; fi
          start_edge $((1000 / ${demand#*x})); running=$who
        fi
        measure "$demand" "$transport" "$who" "http://127.0.0.1:$edge_port/api/v2/stream" edge_streams edge_processes
      done
      measure "$demand" "$transport" nchan "http://127.0.0.1:$np/sub" nchan_streams nchan_processes
    done
  done
done
stop_edge
python3 - "$work/summary" <<'PY'
import json, sys, statistics as st
rows = [json.loads(line) for line in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r["demand"], r["transport"]), {}).setdefault(r["name"], []).append(r)
print("ratios, sse-edge / Nchan (median over rounds; lower is better for CPU per event):")
for (demand, transport), by in groups.items():
    if "sse-edge" not in by or "nchan" not in by:
        continue
    med = lambda name, key: st.median(r[key] for r in by[name])
    print(f"  {demand:<10} {transport:<3} CPU per delivered event {med('sse-edge', 'cpu_per_m') / med('nchan', 'cpu_per_m'):.2f}x "
          f"({med('sse-edge', 'cpu_per_m'):.2f} / {med('nchan', 'cpu_per_m'):.2f} CPU-s per M), "
          f"events/s {med('sse-edge', 'events_per_s') / med('nchan', 'events_per_s'):.2f}x, "
          f"p99 {med('sse-edge', 'p99') / max(med('nchan', 'p99'), 1e-9):.2f}x")
    if "before" in by:
        print(f"  {demand:<10} {transport:<3} against BASELINE_BIN: CPU per delivered event "
              f"{med('sse-edge', 'cpu_per_m') / med('before', 'cpu_per_m'):.2f}x "
              f"({med('sse-edge', 'cpu_per_m'):.2f} / {med('before', 'cpu_per_m'):.2f}, before "
              f"{med('before', 'cpu_per_m') / med('nchan', 'cpu_per_m'):.2f}x Nchan's), writes per event "
              f"{med('sse-edge', 'writes'):.3f} / {med('before', 'writes'):.3f}, p50 "
              f"{med('sse-edge', 'p50'):.1f} / {med('before', 'p50'):.1f} ms, p99 "
              f"{med('sse-edge', 'p99'):.1f} / {med('before', 'p99'):.1f} ms")
PY
