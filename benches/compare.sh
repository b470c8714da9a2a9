#!/usr/bin/env bash
# sse-edge, nginx + Nchan and Pushpin side by side, in one run, alternating, on loopback:
#  - fan-out: SUBSCRIBERS plaintext HTTP/1.1 EventSource clients (sse-edge load, its own
#    process, the same client for all three) of one stream whose data changes every TICK_MS:
#    for sse-edge the demo origin's metrics (polled every 10 ms), for Nchan a publisher
#    POSTing at the same rate, for Pushpin a publisher POSTing to its HTTP publish endpoint
#    at the same rate (subscribers reach Pushpin's channel through a GRIP origin,
#    benches/grip_origin.py, which answers each new stream with Grip-Hold: stream). Events
#    carry their send time (ts_us), so latency is origin change -> client. Memory: RSS of all
#    the peer's processes, growth per subscriber.
#  - opening: a burst of SUBSCRIBERS new streams at once per peer (no publisher): streams
#    opened per second, failures, time to first frame.
#  - passthrough: wrk against /api/v2/stream/status through sse-edge, nginx proxy_pass and
#    Pushpin, to the same demo origin. As nginx and Pushpin, the sse-edge measured here is a
#    process of its own in front of the demo's origin (on 18082), so the origin's work never
#    shares the measured proxy's runtime.
# Pushpin sheds a burst of new streams (each one is a request to the GRIP origin through zurl,
# and its internal ZeroMQ queues are short: 502/500 beyond them), so for its fan-out the
# subscribers are opened at PUSHPIN_RATE per second instead, with its publisher running
# meanwhile as the others' do.
# Installs nginx, libnginx-mod-nchan, wrk and pushpin from Debian when missing; Pushpin runs
# as the current user from a temporary directory (its own config, runtime and log dirs, its
# own zurl), never as the system service. Everything listens on 127.0.0.1 only. Bounded in
# time; every process it starts is stopped on exit. The binary is built in CARGO_TARGET_DIR
# (default ./target).
#
# PASSTHROUGH_ONLY=1 runs only the passthrough part, sse-edge, nginx and nginx-hdr (nginx set
# up to do sse-edge's default header work: request id, forwarding headers, no banner)
# alternating, ROUNDS times (no Pushpin, no fan-out), and prints each round's ratios and each
# proxy's CPU (user and system) per request. SSE_EDGE_BIN=path runs that
# sse-edge binary instead of building one (to measure an earlier build in the same way).
# SERVING_THREADS=N runs sse-edge with `[listen] serving_threads = N` (default: the config's
# default, one per core; 0 is the shared runtime). BASELINE_BIN=path adds, in passthrough-only
# mode, that build as a fourth proxy in each round (its own process on 18083, same config;
# the two builds take turns going first), so two builds are compared in the same rounds; the
# ratios sse-edge / baseline are printed.
# PASSTHROUGH_CONNECTIONS=N sets wrk's connections (default 64, which saturates 2 cores; fewer
# leave the box room, so a round's CPU per request depends less on who was preempted).
#
#   benches/compare.sh [SUBSCRIBERS=10000] [ROUNDS=2]  (env: HOLD=10 TICK_MS=50 PUSHPIN_RATE=250
#                      PASSTHROUGH_ONLY=0 SSE_EDGE_BIN= SERVING_THREADS= BROWSER_HEADERS=0
#                      BASELINE_BIN= PASSTHROUGH_CONNECTIONS=64)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
. benches/nginx.sh
subs=${1:-10000}
rounds=${2:-2}
hold=${HOLD:-10}
tick_ms=${TICK_MS:-50}
pushpin_rate=${PUSHPIN_RATE:-250}
pushpin_open_s=$(( (subs + pushpin_rate - 1) / pushpin_rate ))
passthrough_only=${PASSTHROUGH_ONLY:-0}
connections=${PASSTHROUGH_CONNECTIONS:-64}
if [ "$connections" -lt 2 ]; then
  echo "PASSTHROUGH_CONNECTIONS must be at least 2 (wrk runs two threads)" >&2
  exit 2
fi
# BROWSER_HEADERS=1: passthrough requests carry what a dashboard's browser sends (14 fields,
# cookies included, ~900 bytes) instead of wrk's bare `Host`.
wrk_headers=()
if [ "${BROWSER_HEADERS:-0}" = 1 ]; then
  wrk_headers=(
    -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    -H "Accept: application/json, text/plain, */*"
    -H "Accept-Language: en-GB,en;q=0.9,de;q=0.8"
    -H "Accept-Encoding: gzip, deflate, br, zstd"
    -H "Referer: https://dashboard.example.com/metrics?range=24h"
    -H "Origin: https://dashboard.example.com"
    -H "Cookie: session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxOTAwMDAwMDAwfQ.c2lnbmF0dXJl; theme=dark; _ga=GA1.2.1234567890.1700000000; csrftoken=Zm9vYmFyYmF6cXV4"
    -H "sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\""
    -H "sec-ch-ua-mobile: ?0"
    -H "sec-ch-ua-platform: \"Linux\""
    -H "Sec-Fetch-Site: same-origin"
    -H "Sec-Fetch-Mode: cors"
    -H "Sec-Fetch-Dest: empty"
  )
fi

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null \
  || [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan wrk >/dev/null
fi
if [ "$passthrough_only" != 1 ] && { ! command -v pushpin >/dev/null \
  || ! command -v condure >/dev/null || ! command -v zurl >/dev/null; }; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pushpin >/dev/null
fi
# Pushpin's fixed loopback ports (publish 5561; 5560, 5562, 5563 beside it) must be free: a
# system pushpin service started by the package would hold them.
for port in 5560 5561 5562 5563 18070 19100; do
  [ "$passthrough_only" = 1 ] && break
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "127.0.0.1:$port is taken (a pushpin system service? stop it first)" >&2
    exit 1
  fi
done
bin=$(sse_edge_bin)
bench_workspace
# An upper bound on the whole run, for the helper server that stops by itself too.
budget=$(( rounds * (3 * (hold + 60) + pushpin_open_s + 120) + 60 ))

# sse-edge in front of the demo origin (origin on 19000, proxy on 18080).
edge_config=benches/compare.toml
if [ -n "${SERVING_THREADS:-}" ]; then
  edge_config=$work/compare.toml
  sed "s/^\[listen\]\$/[listen]\nserving_threads = $SERVING_THREADS/" benches/compare.toml > "$edge_config"
fi
RUST_LOG=warn DASHBOARD_API_KEY=bench $bin demo --config "$edge_config" \
  --tick-ms "$tick_ms" --cold-start-ms 0 >/dev/null &
edge=$!; pids+=("$edge")
# sse-edge for passthrough, alone in its process, in front of the same origin (on 18082).
sed 's/127.0.0.1:18080/127.0.0.1:18082/; s/127.0.0.1:19901/127.0.0.1:19902/' "$edge_config" \
  > "$work/passthrough.toml"
RUST_LOG=warn DASHBOARD_API_KEY=bench $bin --config "$work/passthrough.toml" >/dev/null &
edge_pass=$!; pids+=("$edge_pass")
baseline=
[ "$passthrough_only" = 1 ] && baseline=${BASELINE_BIN:-}
if [ -n "$baseline" ]; then
  sed 's/127.0.0.1:18082/127.0.0.1:18083/; s/127.0.0.1:19902/127.0.0.1:19903/' \
    "$work/passthrough.toml" > "$work/baseline.toml"
  RUST_LOG=warn DASHBOARD_API_KEY=bench "$baseline" --config "$work/baseline.toml" >/dev/null &
  edge_baseline=$!; pids+=("$edge_baseline")
fi

# nginx + Nchan on 18090, proxying everything else to the same demo origin.
nginx_conf "$work" <<CONF
  upstream origin { server 127.0.0.1:19000; keepalive 64; }
  server {
    listen 127.0.0.1:18090 backlog=4096;
    # A new subscriber starts at the next message, as on the other two (Nchan's default,
    # oldest, replays up to 16 buffered messages, some of them from a previous round: their
    # ts_us made p99 latency read 66 s in one run).
    location = /sub { nchan_subscriber eventsource; nchan_channel_id bench; nchan_subscriber_first_message newest; }
    location = /pub { nchan_publisher; nchan_channel_id bench; nchan_message_buffer_length 16; }
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  # Beside the bare one above, the same proxy_pass doing sse-edge's header work (nginx.sh).
$(nginx_hdr_server 18091)
CONF
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
nginx_master=$!; pids+=("$nginx_master")

ticks() { # AWK_EXPR PID...: that sum of /proc/PID/stat fields over these processes (gone: 0)
  local expr=$1 total=0 t; shift
  for p in "$@"; do
    t=$(awk "{print $expr}" "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$(( total + t ))
  done
  echo "$total"
}
cpu_ticks() { ticks '$14 + $15' "$@"; } # user + system clock ticks
user_ticks() { ticks '$14' "$@"; }      # user clock ticks alone
passthrough() { # name url [proxy pids...]: requests/s, and the proxy's and the origin's CPU
  local name=$1 url=$2 out rps requests proxy_before user_before origin_before; shift 2
  proxy_before=$(cpu_ticks "$@"); user_before=$(user_ticks "$@"); origin_before=$(cpu_ticks "$edge")
  out=$(wrk -t2 -c"$connections" -d5s "${wrk_headers[@]}" "$url")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  printf '  %-8s passthrough %8.0f requests/s\n' "$name" "${rps:-0}"
  echo "$name ${rps:-0}" >> "$work/wrk.summary"
  if [ $# -gt 0 ]; then
    echo "$name ${requests:-0} $(( $(cpu_ticks "$@") - proxy_before )) $(( $(cpu_ticks "$edge") - origin_before )) $(( $(user_ticks "$@") - user_before ))" >> "$work/cpu.summary"
  fi
}

if [ "$passthrough_only" = 1 ]; then
  both_up() {
    curl -fs -m 1 -o /dev/null http://127.0.0.1:19901/healthz \
      && curl -fs -m 1 -o /dev/null http://127.0.0.1:19902/healthz \
      && curl -fs -m 1 -o /dev/null http://127.0.0.1:18090/api/v2/stream/status \
      && { [ -z "$baseline" ] || curl -fs -m 1 -o /dev/null http://127.0.0.1:19903/healthz; }
  }
  for _ in $(seq 100); do both_up 2>/dev/null && break; sleep 0.1; done
  both_up || { echo "sse-edge${baseline:+, the baseline ($baseline)} or nginx is not up" >&2; exit 1; }
  echo "passthrough only: sse-edge ($bin)${baseline:+ and baseline ($baseline)} vs nginx $(nginx -v 2>&1 | sed 's/.*\///') proxy_pass, $rounds round(s), $connections connections, $(nproc) cores, $(date -u +%F)"
  for round in $(seq "$rounds"); do
    echo "round $round"
    # The two builds take turns going first.
    if [ -n "$baseline" ] && [ $((round % 2)) = 0 ]; then
      passthrough baseline "http://127.0.0.1:18083/api/v2/stream/status" "$edge_baseline"
    fi
    passthrough sse-edge "http://127.0.0.1:18082/api/v2/stream/status" "$edge_pass"
    if [ -n "$baseline" ] && [ $((round % 2)) = 1 ]; then
      passthrough baseline "http://127.0.0.1:18083/api/v2/stream/status" "$edge_baseline"
    fi
    # shellcheck disable=SC2046
    passthrough nginx "http://127.0.0.1:18090/api/v2/stream/status" $(pgrep -P "$nginx_master")
    # shellcheck disable=SC2046
    passthrough nginx-hdr "http://127.0.0.1:18091/api/v2/stream/status" $(pgrep -P "$nginx_master")
  done
  # CPU per request of each proxy's own processes, and of the origin (the demo's process).
  python3 - "$work/wrk.summary" "$work/cpu.summary" "$(getconf CLK_TCK)" <<'PY'
import sys, statistics as st
rps = {}
for line in open(sys.argv[1]):
    name, value = line.split()
    rps.setdefault(name, []).append(float(value))
tick_us = 1e6 / float(sys.argv[3])
rows = [line.split() for line in open(sys.argv[2])]
per = lambda ticks, n: float(ticks) * tick_us / max(float(n), 1)  # CPU microseconds per request
cpu = lambda name: [per(r[2], r[1]) for r in rows if r[0] == name]
user = lambda name: st.median(per(r[4], r[1]) for r in rows if r[0] == name)
origin = [per(r[3], r[1]) for r in rows if r[0] == "nginx"]
edge = cpu("sse-edge")
for peer, what in (("nginx", "bare proxy_pass"), ("nginx-hdr", "proxy_pass with the same headers"),
                   ("baseline", "BASELINE_BIN, the build compared against")):
    ratios = [a / b for a, b in zip(rps.get("sse-edge", []), rps.get(peer, [])) if b > 0]
    if not ratios:
        continue
    print(f"passthrough sse-edge / {peer} ({what}) per round: " + " ".join(f"{r:.2f}x" for r in ratios)
          + f"; median {st.median(ratios):.2f}x")
    theirs = cpu(peer)
    print(f"  CPU per request, median: sse-edge {st.median(edge):.1f} us, {peer} {st.median(theirs):.1f} us "
          f"(origin {st.median(origin):.1f} us); sse-edge / {peer} per round: "
          + " ".join(f"{e / n:.2f}x" for e, n in zip(edge, theirs))
          + f"; median {st.median(e / n for e, n in zip(edge, theirs)):.2f}x (lower is better)")
    print(f"  of which user time, median: sse-edge {user('sse-edge'):.1f} us, {peer} {user(peer):.1f} us; "
          f"system time: sse-edge {st.median(edge) - user('sse-edge'):.1f} us, {peer} {st.median(theirs) - user(peer):.1f} us")
PY
  exit 0
fi

# Pushpin on 18070: its runner starts condure (client connections), zurl (requests to the
# origin), pushpin-proxy and pushpin-handler (channels; publish endpoint on 5561), all with
# files under $work/pushpin. Debian's internal.conf points the proxy at a system zurl in
# /var/run/zurl; the copy here points it at the runner's own zurl. Routes: /api/ to the demo
# origin (passthrough), the rest to the GRIP origin on 19100. message_rate (default 2,500)
# caps deliveries per second over all subscribers, and message_hwm (default 25,000) drops
# deliveries queued beyond it: both are raised so that the fan-out measures what Pushpin
# delivers, as nothing caps the other two. Logs: warnings only (nginx: access_log off).
pp=$work/pushpin
mkdir -p "$pp/lib/runner" "$pp/run" "$pp/log"
cp /usr/lib/pushpin/runner/*.template "$pp/lib/runner/"
sed 's#ipc:///var/run/zurl/#ipc://{rundir}/{ipc_prefix}#' /usr/lib/pushpin/internal.conf > "$pp/lib/internal.conf"
cat > "$pp/pushpin.conf" <<CONF
[global]
include={libdir}/internal.conf
libdir=$pp/lib
rundir=$pp/run
ipc_prefix=pushpin-
port_offset=0
stats_connection_ttl=120
[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:18070
logdir=$pp/log
log_level=1
client_buffer_size=8192
client_maxconn=50000
condure_bin=condure
zurl_bin=zurl
[proxy]
routesfile=routes
debug=false
auto_cross_origin=false
sig_iss=pushpin
sig_key=bench
updates_check=off
[handler]
push_in_spec=tcp://127.0.0.1:5560
push_in_sub_specs=tcp://127.0.0.1:5562
push_in_http_addr=127.0.0.1
push_in_http_port=5561
stats_spec=ipc://{rundir}/{ipc_prefix}stats
command_spec=tcp://127.0.0.1:5563
message_rate=1000000
message_hwm=1000000
connection_subscription_max=20
subscription_linger=60
CONF
cat > "$pp/routes" <<CONF
*,path_beg=/api/ 127.0.0.1:19000
* 127.0.0.1:19100
CONF
python3 benches/grip_origin.py serve 19100 "$budget" &
pids+=("$!")
start_pushpin() {
  pushpin --config "$pp/pushpin.conf" >> "$pp/log/runner.log" 2>&1 &
  pushpin=$!; pids+=("$pushpin")
}
start_pushpin

pushpin_ready() {
  curl -fs -m 1 -o /dev/null http://127.0.0.1:18070/healthz \
    && curl -fs -m 1 -o /dev/null -X POST -d '{"items":[]}' http://127.0.0.1:5561/publish/
}
ready() {
  curl -fs -m 1 -o /dev/null http://127.0.0.1:19901/healthz \
    && curl -fs -m 1 -o /dev/null -X POST -d '{}' http://127.0.0.1:18090/pub \
    && pushpin_ready
}
for _ in $(seq 100); do ready 2>/dev/null && break; sleep 0.1; done
if ! ready; then
  echo "not every peer is up; Pushpin's logs:" >&2
  tail -n 5 "$pp"/log/*.log >&2
  exit 1
fi
# Pushpin's runner stops everything when one of its processes exits (condure 1.9.1 has been
# seen to panic when thousands of streams close at once): say so, and start it again.
pushpin_up() {
  kill -0 "$pushpin" 2>/dev/null && return 0
  echo "  pushpin  had exited: $(grep -h -m1 -E 'panicked|Exited unexpectedly' "$pp"/log/*.log | head -n 1); restarting it"
  start_pushpin
  for _ in $(seq 100); do pushpin_ready 2>/dev/null && return 0; sleep 0.1; done
  echo "  pushpin  did not come back; skipped"
  return 1
}

rss_of() { # VmRSS of each process, in KiB, as "name=KiB" words (one that is gone counts 0)
  local kib
  for p in "$@"; do
    kib=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    printf '%s=%s ' "$(cat "/proc/$p/comm" 2>/dev/null || echo gone)" "${kib:-0}"
  done
}
nginx_workers() { pgrep -P "$nginx_master" | tr '\n' ' '; }
# Every Pushpin process: the runner and what it started (condure, zurl, proxy, handler).
pushpin_processes() { echo "$pushpin $(pgrep -P "$pushpin" | tr '\n' ' ')"; }

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

fanout() { # name url open-rate (0: all at once) rss-pids...
  local name=$1 url=$2 rate=$3; shift 3
  local before after pace=() open_s=0
  if [ "$rate" -gt 0 ]; then pace=(--rate "$rate"); open_s=$(( (subs + rate - 1) / rate )); fi
  before=$(rss_of "$@")
  $bin load "$url" --streams "$subs" --duration "$hold" "${pace[@]}" --json > "$work/load.json" &
  local load=$!
  sleep $(( open_s + hold / 2 + 3 ))
  after=$(rss_of "$@")
  wait "$load"
  python3 - "$name" "$before" "$after" "$subs" "$rate" "$work/load.json" <<'PY'
import json, sys
name, before, after, path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[6]
subs, rate = int(sys.argv[4]), int(sys.argv[5])
def kib(words):  # "name=KiB ..." -> {name: KiB}, same-named processes summed
    out = {}
    for word in words.split():
        process, value = word.rsplit("=", 1)
        out[process] = out.get(process, 0) + int(value)
    return out
before, after = kib(before), kib(after)
r = json.load(open(path)); l = r["latency"]
per = (sum(after.values()) - sum(before.values())) / max(r["opened"], 1)
paced = f" (paced {rate}/s)" if rate else ""
print(f"  {name:<8} fan-out  opened {r['opened']}/{subs}{paced}  {r['events_per_second']:>7.0f} events/s  "
      f"latency p50 {l['p50_ms']:6.1f} ms p99 {l['p99_ms']:7.1f} ms  "
      f"RSS {sum(before.values()) / 1024:5.1f} MiB + {per:5.1f} KiB/subscriber")
if len(after) > 1:
    print(f"  {name:<8} RSS by process, MiB at start + growth: " + ", ".join(
        f"{p} {before.get(p, 0) / 1024:.1f} + {(after[p] - before.get(p, 0)) / 1024:.1f}" for p in after))
if r["failed"]:
    print(f"  {name:<8} {r['failed']} failed, first: {r['first_failure']}")
with open(path + ".summary", "a") as out:
    out.write(f"{name} {r['events_per_second']} {l['p99_ms']} {l['p50_ms']} {per}\n")
PY
}

opening() { # name url: SUBSCRIBERS new streams at once, held 1 s
  $bin load "$2" --streams "$subs" --duration 1 --json > "$work/open.json"
  python3 - "$1" "$subs" "$work/open.json" <<'PY'
import json, sys
name, subs, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = json.load(open(path)); f = r["first_frame"]
print(f"  {name:<8} opening  {r['opened']}/{subs} at once in {r['open_seconds']:5.2f} s: "
      f"{r['opened_per_second']:6.0f} streams/s, {r['failed']} failed; "
      f"first frame p50 {f['p50_ms']:6.1f} ms p99 {f['p99_ms']:7.1f} ms"
      + (f"  (first failure: {r['first_failure']})" if r["failed"] else ""))
with open(path + ".summary", "a") as out:
    out.write(f"{name} {r['opened_per_second']} {r['opened']} {r['failed']}\n")
PY
  sleep 2  # let the closed streams go before the next measure
}

pushpin_version=$(dpkg-query -W -f '${Version}' pushpin 2>/dev/null || echo '?')
echo "sse-edge vs nginx $(nginx -v 2>&1 | sed 's/.*\///') + Nchan vs Pushpin $pushpin_version: $subs subscribers, data every ${tick_ms} ms, ${hold} s holds, Pushpin's subscribers opened at ${pushpin_rate}/s, $rounds round(s), $(nproc) cores, $(date -u +%F)"
for round in $(seq "$rounds"); do
  echo "round $round"
  fanout sse-edge "http://127.0.0.1:18080/api/v2/stream" 0 "$edge"
  publisher $(( hold + 8 )) & pub=$!
  # shellcheck disable=SC2046
  fanout nchan "http://127.0.0.1:18090/sub" 0 $(nginx_workers)
  wait "$pub" 2>/dev/null || true
  if pushpin_up; then
    python3 benches/grip_origin.py publish $(( pushpin_open_s + hold + 8 )) "$tick_ms" & pub=$!
    # shellcheck disable=SC2046
    fanout pushpin "http://127.0.0.1:18070/sub/bench" "$pushpin_rate" $(pushpin_processes)
    wait "$pub" 2>/dev/null || true
  fi
  opening sse-edge "http://127.0.0.1:18080/api/v2/stream"
  opening nchan "http://127.0.0.1:18090/sub"
  if pushpin_up; then opening pushpin "http://127.0.0.1:18070/sub/bench"; fi
  passthrough sse-edge "http://127.0.0.1:18082/api/v2/stream/status"
  passthrough nginx "http://127.0.0.1:18090/api/v2/stream/status"
  if pushpin_up; then passthrough pushpin "http://127.0.0.1:18070/api/v2/stream/status"; fi
done
python3 - "$work/load.json.summary" "$work/open.json.summary" "$work/wrk.summary" <<'PY'
import sys, statistics as st
def read(path):
    rows = {}
    for line in open(path):
        name, *values = line.split()
        rows.setdefault(name, []).append([float(v) for v in values])
    return rows
fan, opening, wrk = (read(p) for p in sys.argv[1:4])
med = lambda rows, i: st.median(r[i] for r in rows)
first = lambda rows, i: rows[0][i]  # memory: round 1 only (later rounds reuse freed memory)
measures = [  # label, (summary, column), reduce over rounds, note
    ("fan-out events/s", (fan, 0), med, ""),
    ("fan-out p50 latency", (fan, 2), med, "lower is better"),
    ("fan-out p99 latency", (fan, 1), med, "lower is better"),
    ("RSS per subscriber", (fan, 3), first, "round 1; lower is better"),
    ("streams opened/s, burst", (opening, 0), med, ""),
    ("passthrough requests/s", (wrk, 0), med, ""),
]
peers = [("nginx+Nchan", "nchan", "nginx"), ("Pushpin", "pushpin", "pushpin")]  # label, name, wrk name
def ratio(table, i, reduce, peer):
    ours, theirs = table.get("sse-edge"), table.get(peer[2] if table is wrk else peer[1])
    if not ours or not theirs or reduce(theirs, i) <= 0:
        return "-"
    return f"{reduce(ours, i) / reduce(theirs, i):.2f}x"
print(f"{'ratios (median over rounds), sse-edge / peer:':<48}" + "".join(f"{p[0]:>13}" for p in peers))
for label, (table, i), reduce, note in measures:
    cells = "".join(f"{ratio(table, i, reduce, p):>13}" for p in peers)
    print(f"  {label:<46}{cells}" + (f"  ({note})" if note else ""))
PY
