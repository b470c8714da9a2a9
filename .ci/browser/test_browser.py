"""The real-browser test of issue 10, run by .ci/browser/run.sh.

A page served from one origin (http://localhost:PAGE) opens event streams through sse-edge on
another (http://127.0.0.1:PROXY) in a real headless Chromium, driven by Playwright:
- CORS: the listed page origin reads the stream; the same page served from an unlisted origin
  cannot (EventSource fails and closes).
- A refused stream (max_streams = 1) gets `200 text/event-stream` with `retry:` and an
  `unavailable` event, stays in CONNECTING, reconnects by itself, and streams once the other
  stream leaves.
- The same stream over TLS (https, the self-signed pair `sse-edge demo` writes), so the
  edge's own TLS stream meets a real browser's TLS stack.

Usage: test_browser.py PATH_TO_SSE_EDGE_BINARY. Every wait is bounded; exits non-zero on any
failure.
"""

import functools
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

from playwright.sync_api import sync_playwright

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 20_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"sse-edge exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"sse-edge did not listen on {port} within {seconds} s")


def config(proxy_port, tls_port, origin_port, page_port, tmp):
    return f"""
[listen]
http = "127.0.0.1:{proxy_port}"
https = "127.0.0.1:{tls_port}"

[tls]
cert = "{tmp}/localhost.pem"
key = "{tmp}/localhost-key.pem"

[upstream]
url = "http://127.0.0.1:{origin_port}"

[sse]
retry_ms = 500
max_streams = 1
first_poll_wait_ms = 2000

[cors]
allow_origins = ["http://localhost:{page_port}"]

[[stream]]
path = "/api/v2/stream"
  [[stream.source]]
  poll = "/api/v2/metrics?hours=24"
  every_ms = 200
  event = "metrics"
  headers = {{ authorization = "Bearer ${{DASHBOARD_API_KEY}}" }}
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves this folder (the page) without a log line per request."""

    def log_message(self, *args):
        pass


def serve_page(port):
    handler = functools.partial(QuietHandler, directory=HERE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check(page, expression, what):
    try:
        page.wait_for_function(expression, timeout=WAIT_MS)
    except Exception:
        log = page.evaluate("window.log")
        sys.exit(f"FAILED: {what} (page log: {log})")
    print(f"ok: {what}")


def main():
    binary = os.path.abspath(sys.argv[1])
    proxy_port, origin_port, page_port = free_port(), free_port(), free_port()
    tls_port = free_port()
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "browser.toml")
        with open(path, "w") as f:
            f.write(config(proxy_port, tls_port, origin_port, page_port, tmp))
        env = dict(os.environ, DASHBOARD_API_KEY="browser-test", RUST_LOG="warn")
        proxy = subprocess.Popen(
            [binary, "--config", path, "demo", "--tick-ms", "300", "--cold-start-ms", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        server = serve_page(page_port)
        try:
            wait_for_port(proxy_port, proxy)
            wait_for_port(tls_port, proxy)
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
                )
                page = browser.new_page()

                # An unlisted origin (127.0.0.1 is not localhost) cannot read the stream.
                page.goto(f"http://127.0.0.1:{page_port}/page.html?proxy={proxy_url}")
                check(page, "window.a.readyState === 2", "an unlisted origin is refused by CORS")

                page.goto(f"http://localhost:{page_port}/page.html?proxy={proxy_url}")
                check(page, "window.counts.a >= 1", "a listed origin reads the stream (CORS)")
                page.evaluate("window.openB()")
                check(
                    page,
                    "window.log.filter(e => e[0] === 'unavailable' && e[1] === 'too_many_streams').length >= 2",
                    "a refused stream is told why, and reconnects by itself",
                )
                state = page.evaluate("window.b.readyState")
                if state == 2:
                    sys.exit("FAILED: the refused EventSource gave up (CLOSED)")
                page.evaluate("window.a.close()")
                check(
                    page,
                    "window.log.some(e => e[0] === 'metrics') && window.b.readyState === 1",
                    "once capacity frees, the refused stream streams",
                )
                page.evaluate("window.b.close()")

                context = browser.new_context(ignore_https_errors=True)
                tls_page = context.new_page()
                tls_page.goto(
                    f"http://localhost:{page_port}/page.html?proxy=https://localhost:{tls_port}"
                )
                check(tls_page, "window.counts.a >= 2", "a stream over TLS delivers events")
                browser.close()
        finally:
            server.shutdown()
            proxy.terminate()
            try:
                proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proxy.kill()
    print("browser test passed")


if __name__ == "__main__":
    main()
