#!/usr/bin/env bash
# `fivetran debug` for your own database: tools/debug.sh --configuration configuration.json [--state ...].
# Sets up .venv when needed, runs the SDK from it (its pipreqs on PATH) on a copy of the files that `fivetran deploy`
# ships, so its dependency check sees only the connector, and writes files/ (warehouse.db, state.json) in the
# current directory.
set -euo pipefail
WORKDIR=$(pwd)
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$WORKDIR"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$VENV/bin/python" -m tools.fivetran_cli "${FIVETRAN_COMMAND:-debug}" "$@"
