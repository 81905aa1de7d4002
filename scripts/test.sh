#!/usr/bin/env bash
# The test suite, offline, with a throwaway Prefect home. Extra args go to pytest (e.g. -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export PREFECT_HOME="${PREFECT_HOME:-$(mktemp -d -t cropi-prefect-XXXX)}"
exec .venv/bin/python -m pytest "$@"
