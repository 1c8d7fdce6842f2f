#!/usr/bin/env bash
# The connector end to end on a throwaway local PostgreSQL with sample data: fivetran debug, then a summary.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m tools.demo
