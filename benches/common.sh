# Sourced by the bench scripts that drive one proxy: its admin endpoint and process figures.
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
