#!/usr/bin/env bash
# `fivetran deploy` of the connector: tools/deploy.sh --api-key K --destination D --connection C
#   --configuration configuration.json --python-version 3.11
# As tools/debug.sh: from .venv (pipreqs on PATH), on a copy of only the files the deploy zip holds.
set -euo pipefail
FIVETRAN_COMMAND=deploy exec "$(dirname "${BASH_SOURCE[0]}")/debug.sh" "$@"
