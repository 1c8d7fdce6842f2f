#!/usr/bin/env bash
# Lint, then the whole test suite against a real server: the system PostgreSQL and PostgreSQL 12 (Greenplum 7's
# base), both started here; or only the database named by GREENPLUM_TEST_DSN when it is set.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
if [ -n "${GREENPLUM_TEST_DSN:-}" ]; then
    exec "$VENV/bin/python" -m pytest "$@"
fi
echo "== tests on the system PostgreSQL =="
GREENPLUM_TEST_PG=system "$VENV/bin/python" -m pytest "$@"
echo "== tests on PostgreSQL 12 (embedded) =="
GREENPLUM_TEST_PG=embedded "$VENV/bin/python" -m pytest "$@"
