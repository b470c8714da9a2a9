#!/usr/bin/env bash
# sse-edge and nginx + Nchan side by side, in one run, alternating, on loopback:
#  - fan-out: SUBSCRIBERS plaintext HTTP/1.1 EventSource clients (sse-edge load, its own
#    process) of one stream whose data changes every TICK_MS: for sse-edge the demo origin's
#    metrics (polled every 10 ms), for Nchan a publisher POSTing at the same rate. Events
#    carry their send time (ts_us), so latency is origin change -> client.
#  - passthrough: wrk against /api/v2/stream/status through sse-edge and through nginx
#    proxy_pass, to the same demo origin.
# Installs nginx, libnginx-mod-nchan and wrk from Debian when missing. Bounded in time.
#
#   benches/compare.sh [SUBSCRIBERS=10000] [ROUNDS=2]      (env: HOLD=10 TICK_MS=50)
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-10000}
rounds=${2:-2}
hold=${HOLD:-10}
tick_ms=${TICK_MS:-50}

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null \
  || [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan wrk >/dev/null
fi
cargo build --release --quiet
bin=$PWD/target/release/sse-edge
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# sse-edge in front of the demo origin (origin on 19000, proxy on 18080).
RUST_LOG=warn DASHBOARD_API_KEY=bench $bin demo --config benches/compare.toml \
  --tick-ms "$tick_ms" --cold-start-ms 0 >/dev/null &
edge=$!; pids+=("$edge")

# nginx + Nchan on 18090, proxying everything else to the same demo origin.
mkdir -p "$work/tmp"
cat > "$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path $work/tmp;
  proxy_temp_path $work/tmp;
  fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp;
  scgi_temp_path $work/tmp;
  upstream origin { server 127.0.0.1:19000; keepalive 64; }
  server {
    listen 127.0.0.1:18090 backlog=4096;
    location = /sub { nchan_subscriber eventsource; nchan_channel_id bench; }
    location = /pub { nchan_publisher; nchan_channel_id bench; nchan_message_buffer_length 16; }
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
nginx_master=$!; pids+=("$nginx_master")
for _ in $(seq 100); do
  curl -fs http://127.0.0.1:19901/healthz >/dev/null 2>&1 && curl -fs -o /dev/null -X POST -d '{}' http://127.0.0.1:18090/pub && break
  sleep 0.1
done

rss_of() { local total=0; for p in "$@"; do total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $total; }
nginx_workers() { pgrep -P "$nginx_master" | tr '\n' ' '; }

publisher() { # POSTs {"ts_us": now} to Nchan every TICK_MS, on a fixed schedule, for $1 seconds
  python3 - "$1" "$tick_ms" <<'PY'
import http.client, sys, time
seconds, tick = float(sys.argv[1]), float(sys.argv[2]) / 1000
conn = http.client.HTTPConnection("127.0.0.1", 18090)
start = time.monotonic()
n = 0
while time.monotonic() - start < seconds:
    body = '{"ts_us":%d}' % (time.time_ns() // 1000)
    conn.request("POST", "/pub", body)
    conn.getresponse().read()
    n += 1
    time.sleep(max(0.0, start + n * tick - time.monotonic()))
PY
}

fanout() { # name url rss-pids...
  local name=$1 url=$2; shift 2
  local before after
  before=$(rss_of "$@")
  $bin load "$url" --streams "$subs" --duration "$hold" --json > "$work/load.json" &
  local load=$!
  sleep $(( hold / 2 + 3 ))
  after=$(rss_of "$@")
  wait "$load"
  python3 - "$name" "$before" "$after" "$subs" "$work/load.json" <<'PY'
import json, sys
name, before, after, subs, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
r = json.load(open(path)); l = r["latency"]
print(f"  {name:<8} fan-out  opened {r['opened']}/{subs}  {r['events_per_second']:>9.0f} events/s  "
      f"latency p50 {l['p50_ms']:6.1f} ms p99 {l['p99_ms']:7.1f} ms  "
      f"RSS +{(after - before) / max(r['opened'], 1):5.1f} KiB/subscriber")
with open(path + ".summary", "a") as out:
    out.write(f"{name} {r['events_per_second']} {l['p99_ms']}\n")
PY
}

passthrough() { # name url
  local rps
  rps=$(wrk -t2 -c64 -d5s "$2" | awk '/Requests\/sec/ {print $2}')
  printf '  %-8s passthrough %10.0f requests/s\n' "$1" "$rps"
  echo "$1 $rps" >> "$work/wrk.summary"
}

echo "sse-edge vs nginx $(nginx -v 2>&1 | sed 's/.*\///') + Nchan: $subs subscribers, data every ${tick_ms} ms, ${hold} s holds, $rounds round(s), $(nproc) cores, $(date -u +%F)"
for round in $(seq "$rounds"); do
  echo "round $round"
  fanout sse-edge "http://127.0.0.1:18080/api/v2/stream" "$edge"
  publisher $(( hold + 8 )) & pub=$!
  # shellcheck disable=SC2046
  fanout nchan "http://127.0.0.1:18090/sub" $(nginx_workers)
  wait "$pub" 2>/dev/null || true
  passthrough sse-edge "http://127.0.0.1:18080/api/v2/stream/status"
  passthrough nginx "http://127.0.0.1:18090/api/v2/stream/status"
done
python3 - "$work/load.json.summary" "$work/wrk.summary" <<'PY'
import sys, statistics as st
def read(path):
    rows = {}
    for line in open(path):
        name, *values = line.split()
        rows.setdefault(name, []).append([float(v) for v in values])
    return rows
fan, wrk = read(sys.argv[1]), read(sys.argv[2])
med = lambda rows, i: st.median(r[i] for r in rows)
print("ratios (median over rounds, sse-edge / nginx):")
print(f"  fan-out events/s        {med(fan['sse-edge'], 0) / med(fan['nchan'], 0):5.2f}x")
print(f"  fan-out p99 latency     {med(fan['sse-edge'], 1) / med(fan['nchan'], 1):5.2f}x (lower is better)")
print(f"  passthrough requests/s  {med(wrk['sse-edge'], 0) / med(wrk['nginx'], 0):5.2f}x")
PY
