#!/usr/bin/env bash
# Creates .venv with the development requirements (once, and again when a requirements file changes).
# Sourced by demo.sh and test.sh; needs Python 3.11 or newer as python3 (or $PYTHON).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PYTHON_BIN=${PYTHON:-python3}
if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Python 3.11 or newer is needed as $PYTHON_BIN (set PYTHON to another interpreter)." >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON_BIN" -m venv "$VENV"
fi
STAMP="$VENV/.requirements"
if ! cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | cmp -s - "$STAMP"; then
    echo "Installing development requirements into .venv ..."
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements-dev.txt"
    cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" > "$STAMP"
fi
