# Sourced by the bench scripts: the binary under test, a scratch folder cleaned up on exit,
# and, for the scripts that drive one proxy on the default ports, its admin endpoint and
# process figures.

# Prints the sse-edge binary to measure: SSE_EDGE_BIN when set (an earlier build, measured
# the same way), else a release build made now in CARGO_TARGET_DIR (default ./target).
sse_edge_bin() {
  if [ -n "${SSE_EDGE_BIN:-}" ]; then
    echo "$SSE_EDGE_BIN"
  else
    cargo build --release --quiet >&2
    echo "${CARGO_TARGET_DIR:-$PWD/target}/release/sse-edge"
  fi
}

# Makes $work (a scratch folder) and $pids (processes to stop); on exit every process in
# $pids is stopped and $work removed.
bench_workspace() {
  work=$(mktemp -d)
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

admin=http://127.0.0.1:19901

# Waits (at most 10 s) until the proxy answers its health check.
wait_healthy() {
  for _ in $(seq 100); do curl -fs "$admin/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the proxy did not become healthy within 10 s" >&2
  return 1
}

# The sum of a metric's samples over all its label sets (an unlabelled metric has one).
metric() {
  curl -fs "$admin/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {print s + 0}'
}

# Resident memory of a process, in KiB.
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
