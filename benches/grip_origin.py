#!/usr/bin/env python3
"""The GRIP side of benches/compare.sh's Pushpin peer. Python 3 standard library only.

  grip_origin.py serve PORT SECONDS
      An HTTP/1.1 origin on 127.0.0.1:PORT, for at most SECONDS. `GET /sub/<channel>` answers
      `text/event-stream` with `Grip-Hold: stream` and `Grip-Channel: <channel>`, and a first
      frame (an SSE comment, so it is no event), which Pushpin sends to the client before
      holding the stream open on the channel. `GET /healthz` answers 200 (a readiness check
      through Pushpin). Anything else is 404. Keep-alive; one coroutine per connection.

  grip_origin.py publish SECONDS TICK_MS [URL] [CHANNEL]
      For SECONDS, every TICK_MS on a fixed schedule, POSTs one item to Pushpin's HTTP
      publish endpoint (default http://127.0.0.1:5561/publish/, channel `bench`) over a
      keep-alive connection: an `http-stream` format whose content is the SSE event
      `data: {"ts_us":<unix microseconds>}`, the same document the Nchan publisher POSTs,
      so `sse-edge load` measures latency (publish -> client) the same way for every peer.
"""
import asyncio
import http.client
import json
import re
import sys
import time
import urllib.parse

CHANNEL = re.compile(r"^[A-Za-z0-9_.~-]{1,128}$")
FIRST_FRAME = b": connected\n\n"
MAX_HEAD = 16384


def response(status, headers, body):
    head = [f"HTTP/1.1 {status}"]
    head += [f"{name}: {value}" for name, value in headers]
    head += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(head).encode() + body


def answer(method, target):
    path = urllib.parse.urlsplit(target).path
    if method != "GET":
        return response("405 Method Not Allowed", [("Allow", "GET")], b"")
    if path == "/healthz":
        return response("200 OK", [("Content-Type", "text/plain")], b"ok\n")
    if path.startswith("/sub/") and CHANNEL.match(path[5:]):
        return response(
            "200 OK",
            [
                ("Content-Type", "text/event-stream"),
                ("Cache-Control", "no-cache"),
                ("Grip-Hold", "stream"),
                ("Grip-Channel", path[5:]),
            ],
            FIRST_FRAME,
        )
    return response("404 Not Found", [("Content-Type", "text/plain")], b"not found\n")


async def connection(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                break
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                break
            method, target, version = parts
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(min(length, 1 << 20))
            writer.write(answer(method, target))
            await writer.drain()
            if version != "HTTP/1.1" or headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(port, seconds):
    server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=4096, limit=MAX_HEAD)
    async with server:
        await asyncio.sleep(seconds)


def publish(seconds, tick_ms, url, channel):
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("publish: loopback URLs only")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=5)
    tick = tick_ms / 1000
    start = time.monotonic()
    sent = failed = 0
    first_error = None
    while time.monotonic() - start < seconds:
        event = 'data: {"ts_us":%d}\n\n' % (time.time_ns() // 1000)
        body = json.dumps({"items": [{"channel": channel, "formats": {"http-stream": {"content": event}}}]})
        try:
            conn.request("POST", parts.path or "/publish/", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                raise RuntimeError(f"publish answered {reply.status}")
        except (OSError, http.client.HTTPException, RuntimeError) as error:
            failed += 1
            first_error = first_error or str(error)
            conn.close()
        sent += 1
        time.sleep(max(0.0, start + sent * tick - time.monotonic()))
    if failed:
        print(f"publish: {failed} of {sent} failed, first: {first_error}", file=sys.stderr)


def main(argv):
    if len(argv) >= 3 and argv[0] == "serve":
        asyncio.run(serve(int(argv[1]), float(argv[2])))
    elif len(argv) >= 3 and argv[0] == "publish":
        url = argv[3] if len(argv) > 3 else "http://127.0.0.1:5561/publish/"
        channel = argv[4] if len(argv) > 4 else "bench"
        publish(float(argv[1]), float(argv[2]), url, channel)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
