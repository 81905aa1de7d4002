#!/usr/bin/env bash
# One prepared GPU check (no internet needed): sketch throughput of the default (`grass` ρ 0.25 + energy), `grass`
# and `sparse` (sparse JL) at ρ 0.1 and the paper's dense projection at k=32768 in bf16 on a random-weight model
# with Qwen2.5-1.5B's config and the real Qwen2 tokenizer, vs a plain forward+backward and its (a′) ceiling.
#   scripts/gpu_check.sh                 # on a GPU machine (~5 min on one H100/H200, most of it sparse's projection)
#   scripts/gpu_check.sh --small         # CPU smoke run of the same code path (tiny body, k=1024), ~1 min
# Extra arguments go to benchmarks/gpu_sketch.py (--help lists them). The tokenizer is looked up in
# --tokenizer DIR, $CROPI_QWEN2_TOKENIZER, ../shared/models/qwen2-tokenizer, shared/models/qwen2-tokenizer.
# Results: a markdown table on stdout and JSON in benchmarks/out/gpu_sketch[-small].json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [[ " $* " != *" --small "* ]]; then
  "$PY" - <<'PY' || { echo "gpu_check: no CUDA device visible to torch (use --small for the CPU smoke run)" >&2; exit 2; }
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
PY
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "$PY" benchmarks/gpu_sketch.py "$@"
