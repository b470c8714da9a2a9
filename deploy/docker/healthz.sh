#!/bin/bash
# sse-edge-healthz [PORT] [PATH]: exits 0 when http://127.0.0.1:PORT/PATH answers 200.
#
# The container health check (Dockerfile HEALTHCHECK, compose healthcheck, ECS healthCheck).
# The runtime image has no curl or wget; bash's /dev/tcp speaks the one HTTP/1.1 request this
# needs, so nothing is installed for it. `sse-edge probe` is no substitute: it checks event
# streams and exits 0 only for a `streaming` verdict. Defaults: the admin listener's /healthz.
# The listener must accept connections on 127.0.0.1 (admin = "0.0.0.0:PORT" or "127.0.0.1:PORT").
set -u
port=${1:-9901}
path=${2:-/healthz}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
IFS= read -r -t 5 status <&3 || { echo "no answer from 127.0.0.1:$port$path"; exit 1; }
case $status in
    "HTTP/1.1 200 "*) exit 0 ;;
esac
echo "127.0.0.1:$port$path: ${status%$'\r'}"
exit 1
