#!/usr/bin/env bash
# Cluster mode side by side, in one run: 1 and 3 sse-edge instances, each without and with
# [cluster] (a real redis-server on loopback), in front of the same demo origin
# (benches/latency.toml; the origin runs inside the first instance's `sse-edge demo`). For
# each of the four set-ups, clients spread evenly over the instances, the load from
# `sse-edge load` in its own processes:
#  a. latency: SUBSCRIBERS clients of /api/v2/stream, which long-polls the origin (wait_s)
#     while its data changes every TICK_MS: event latency origin change -> client, p50/p99;
#  b. origin load: SUBSCRIBERS clients over 100 stream keys polled every second: origin
#     requests per poll interval, summed over the instances (one per key is ideal: 100).
# Installs redis-server from Debian when missing. Loopback only; bounded in time; every
# process it starts is stopped on exit.
#
#   benches/cluster.sh [SUBSCRIBERS=3000]     (env: HOLD=10 TICK_MS=500)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
subs=${1:-3000}
hold=${HOLD:-10}
tick_ms=${TICK_MS:-500}
if ! command -v redis-server >/dev/null; then
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
cargo build --release --quiet --locked
bin=$PWD/target/release/sse-edge
work=$(mktemp -d)
pids=()
redis=
stop() { # the instances without the origin first, so none logs a refused poll
  local n
  for ((n = ${#pids[@]} - 1; n >= 0; n--)); do
    kill "${pids[n]}" 2>/dev/null || true
    wait "${pids[n]}" 2>/dev/null || true
  done
  pids=()
}
trap 'stop; [ -n "$redis" ] && kill "$redis" 2>/dev/null; rm -rf "$work"' EXIT
redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no --logfile "" >/dev/null &
redis=$!
for _ in $(seq 100); do redis-cli -p 16379 ping >/dev/null 2>&1 && break; sleep 0.1; done

# Ports apart from the other benches' (18080, 19000, 19901 and +100), so they can run at once.
# config N CLUSTER: instance N's file (N = 0, 1, 2 on ports 18280+N, admin 19921+N; the demo
# origin on 19200).
config() {
  local file=$work/proxy$1-$2.toml
  sed -e "s/127.0.0.1:18080/127.0.0.1:$((18280 + $1))/" -e "s/127.0.0.1:19901/127.0.0.1:$((19921 + $1))/" \
    -e "s/127.0.0.1:19000/127.0.0.1:19200/" benches/latency.toml > "$file"
  [ "$2" = yes ] && printf '\n[cluster]\nredis = "redis://127.0.0.1:16379"\nlease_ms = 2000\n' >> "$file"
  echo "$file"
}
# Instance N's admin endpoint, for common.sh's helpers.
healthy() { admin=http://127.0.0.1:$((19921 + $1)) wait_healthy; }
instance_metric() { admin=http://127.0.0.1:$((19921 + $1)) metric "$2"; }
start() { # instances cluster
  stop
  redis-cli -p 16379 flushall >/dev/null
  RUST_LOG=warn DASHBOARD_API_KEY=bench $bin demo --config "$(config 0 "$2")" \
    --tick-ms "$tick_ms" --cold-start-ms 0 >/dev/null 2>&1 &
  pids+=($!)
  healthy 0
  for n in $(seq 1 $(($1 - 1))); do
    RUST_LOG=warn DASHBOARD_API_KEY=bench $bin --config "$(config "$n" "$2")" >/dev/null 2>&1 &
    pids+=($!)
    healthy "$n"
  done
}
total() { local sum=0; for n in $(seq 0 $(($1 - 1))); do sum=$(python3 -c "print($sum + $(instance_metric "$n" "$2"))"); done; echo "$sum"; }
# run INSTANCES PATH KEYS NAME: SUBSCRIBERS clients spread over the instances.
run() {
  local loads=() n
  for n in $(seq 0 $(($1 - 1))); do
    $bin load "http://127.0.0.1:$((18280 + n))$2" --keys "$3" --streams $((subs / $1)) \
      --duration "$hold" --json > "$work/$4-$n.json" &
    loads+=($!)
  done
  for _ in $(seq 600); do [ "$(total "$1" sse_edge_streams_open)" = "$subs" ] && break; sleep 0.1; done
  sleep 2
  p0=$(total "$1" sse_edge_polls_total); t0=$(date +%s.%N)
  sleep $((hold - 4))
  p1=$(total "$1" sse_edge_polls_total); t1=$(date +%s.%N)
  for pid in "${loads[@]}"; do wait "$pid"; done
}

echo "sse-edge cluster: $subs subscribers, origin data every $tick_ms ms, $hold s holds, $(nproc) cores, $(date -u +%F)"
printf '%-26s | %-34s | %s\n' "set-up" "a. latency p50 / p99 (events/s)" "b. origin requests per 1 s interval, 100 keys"
for setup in "1 no" "1 yes" "3 no" "3 yes"; do
  set -- $setup
  start "$1" "$2"
  run "$1" /api/v2/stream 1 lat
  lat=$(python3 - "$work" "$1" <<'PY'
import json, sys
rs = [json.load(open(f"{sys.argv[1]}/lat-{n}.json")) for n in range(int(sys.argv[2]))]
samples = sum(r['latency']['count'] for r in rs)
# Each load process reports its own percentiles: weigh them by their sample counts.
p = lambda k: sum(r['latency'][k] * r['latency']['count'] for r in rs) / max(samples, 1)
print(f"{p('p50_ms'):.1f} / {p('p99_ms'):.1f} ms ({sum(r['events_per_second'] for r in rs):.0f}/s)")
PY
)
  run "$1" "/bench/{key}/stream" 100 keys
  polls=$(python3 -c "print(f'{($p1 - $p0) / ($t1 - $t0):.1f}')")
  name="$1 instance(s), $([ "$2" = yes ] && echo "Redis" || echo "no Redis")"
  printf '%-26s | %-34s | %s\n' "$name" "$lat" "$polls"
done

# c. takeover: 3 instances with Redis, clients of /api/v2/stream on all three; instance 1 (not
# the one hosting the demo origin) takes the lease first and is SIGKILLed; the time until the
# survivors poll again (one of them holds the lease) against lease_ms (2000 here).
start 3 yes
$bin load "http://127.0.0.1:18281/api/v2/stream" --streams 100 --duration 30 >/dev/null 2>&1 &
first=$!
for _ in $(seq 100); do [ "$(instance_metric 1 sse_edge_cluster_leases)" = 1 ] && break; sleep 0.1; done
others=()
for n in 0 2; do
  $bin load "http://127.0.0.1:$((18280 + n))/api/v2/stream" --streams 100 --duration 30 >/dev/null 2>&1 &
  others+=($!)
done
sleep 3
polls() { python3 -c "print($(instance_metric 0 sse_edge_polls_total) + $(instance_metric 2 sse_edge_polls_total))"; }
p0=$(polls)
kill -KILL "${pids[1]}"
t0=$(date +%s.%N)
wait "${pids[1]}" 2>/dev/null || true
gap=
for _ in $(seq 400); do
  if [ "$(python3 -c "print($(polls) > $p0)")" = True ]; then gap=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')"); break; fi
  sleep 0.05
done
echo "c. takeover after SIGKILL of the holder: the survivors poll again after ${gap:-more than 20} s (lease_ms 2000; attempts every 500 ms with jitter)"
kill "$first" "${others[@]}" 2>/dev/null || true
wait "$first" "${others[@]}" 2>/dev/null || true
