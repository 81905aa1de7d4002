#!/usr/bin/env bash
# The main job on the embedded default: tiny model, synthetic suite, CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec .venv/bin/cropi run "$@"
