#!/usr/bin/env bash
# The real-browser test (issue 10): a page on another origin opens streams through sse-edge
# in headless Chromium (Debian's `chromium`, driven by Python Playwright). Installs what it
# needs from Debian and PyPI (no browser download: Playwright uses /usr/bin/chromium) and
# fails if any install fails. Usage: .ci/browser/run.sh [PATH_TO_SSE_EDGE]; without a path,
# builds the debug binary.
set -euo pipefail
cd "$(dirname "$0")/../.."

PLAYWRIGHT_VERSION=1.65.2
VENV="${SSE_EDGE_BROWSER_VENV:-$HOME/.cache/sse-edge-browser-venv}"

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    # CI runs as root; elsewhere, through sudo when there is one.
    local as_root=()
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
        as_root=(sudo -E)
    fi
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" apt-get install -y -q "$@"
}

if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (apt)"
    apt_install chromium
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "== installing python3-venv (apt)"
    apt_install python3 python3-venv
fi
if ! "$VENV/bin/python" -c "import playwright, sys; from importlib.metadata import version; sys.exit(version('playwright') != '$PLAYWRIGHT_VERSION')" >/dev/null 2>&1; then
    echo "== installing playwright $PLAYWRIGHT_VERSION (pip, in $VENV)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "playwright==$PLAYWRIGHT_VERSION"
fi

BIN="${1:-}"
if [ -z "$BIN" ]; then
    cargo build --locked --bin sse-edge
    BIN="${CARGO_TARGET_DIR:-target}/debug/sse-edge"
fi
echo "== browser test ($(chromium --version 2>/dev/null | head -1))"
timeout 180 "$VENV/bin/python" .ci/browser/test_browser.py "$BIN"
