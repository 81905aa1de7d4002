#!/usr/bin/env bash
# One prepared GPU check (no internet needed), under 8 minutes on one H100/H200:
#   1. benchmarks/gpu_sketch.py: sketch throughput of the default (`grass` ρ 0.25 + energy), `grass` and `sparse`
#      (sparse JL) at ρ 0.1 and the paper's dense projection at k=32768 in bf16 on a random-weight model with
#      Qwen2.5-1.5B's config and the real Qwen2 tokenizer, vs a plain forward+backward and its (a′) ceiling
#      -> benchmarks/out/gpu_sketch.json;
#   2. benchmarks/gpu_curriculum.py: forward / fwdbwd / generate_hf rates (MFU) at Qwen2.5-1.5B's body, then a
#      reduced curriculum in bf16 on CUDA through the flows, every model task's ran_on checked
#      -> benchmarks/out/gpu_rates.json (`cropi plan` applies both files).
#   scripts/gpu_check.sh                 # on a GPU machine
#   scripts/gpu_check.sh --small         # CPU smoke run of the same two scripts (tiny bodies), a few minutes
# Extra arguments go to benchmarks/gpu_sketch.py (--help lists them). On the device machine (no prefect, trl, ...;
# no ../shared): run scripts/gpu_wheels.sh here first and carry .gpu — this script then unpacks .gpu/gpu.tar.xz
# (or takes .gpu/whl/*.whl), installs the wheels with `pip install --no-index --no-deps --target` into a folder
# named site-packages (datasets' fingerprinting pickles modules outside such a folder by value, and fails), puts it
# and this checkout on PYTHONPATH, and points CROPI_QWEN2_TOKENIZER at the carried tokenizer. The device call and
# what to do with its output: docs/scaling.md. Each part runs under its own time limit (GPU_CHECK_SKETCH_S,
# GPU_CHECK_CURRICULUM_S seconds; a stopped part keeps what it measured); GPU_CHECK_SKIP_SKETCH=1 runs part 2 alone.
# Where $OUT is set (the device machine), the JSON results and this script's log are copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  exec > >(tee "$OUT/gpu_check.log") 2>&1
fi
source scripts/env.sh
export PYTHONUNBUFFERED=1
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
small=0
[[ " $* " == *" --small "* ]] && small=1
t_start=$(date +%s)

site=/tmp/cropi-gpu/site-packages
if { [ -f .gpu/gpu.tar.xz ] || [ -d .gpu/whl ]; } && ! "$PY" -c "import prefect, trl, zarr" 2>/dev/null; then
  rm -rf /tmp/cropi-gpu
  mkdir -p /tmp/cropi-gpu
  whl=.gpu/whl
  if [ -f .gpu/gpu.tar.xz ]; then
    xz -dc .gpu/gpu.tar.xz | tar -xf - -C /tmp/cropi-gpu || { echo "gpu_check: cannot unpack .gpu/gpu.tar.xz" >&2; exit 3; }
    whl=/tmp/cropi-gpu/whl
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$site" "$whl"/*.whl || { echo "gpu_check: installing the carried wheels failed" >&2; exit 3; }
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  for tok in /tmp/cropi-gpu/qwen2-tokenizer "$PWD/.gpu/qwen2-tokenizer"; do
    if [ -d "$tok" ]; then export CROPI_QWEN2_TOKENIZER="${CROPI_QWEN2_TOKENIZER:-$tok}"; break; fi
  done
  echo "gpu_check: $(ls "$whl"/*.whl | wc -l) carried wheels installed in $site ($(( $(date +%s) - t_start ))s)"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # cropi need not be installed
fi
export PREFECT_HOME="${PREFECT_HOME:-$(mktemp -d /tmp/cropi-gpu-prefect.XXXXXX)}"

if [ "$small" = 0 ]; then
  "$PY" - <<'PY' || { echo "gpu_check: no CUDA device visible to torch (use --small for the CPU smoke run)" >&2; exit 2; }
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
PY
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" - <<'PY' || { echo "gpu_check: the Python environment is incomplete (see above); run scripts/gpu_wheels.sh and carry .gpu" >&2; exit 3; }
import importlib, sys
vers = []
for name in ("torch", "transformers", "trl", "prefect", "datasets", "zarr", "pydantic", "accelerate", "peft"):
    try:
        vers.append(f"{name} {importlib.import_module(name).__version__}")
    except ImportError as err:
        vers.append(f"{name} MISSING ({err})")
print(f"gpu_check: Python {sys.version.split()[0]}; " + ", ".join(vers))
import cropi_core, flows.curriculum  # noqa: F401,E401 -- everything the curriculum imports
sys.exit(any("MISSING" in v and not v.startswith("peft") for v in vers))
PY

rc=0
if [ -z "${GPU_CHECK_SKIP_SKETCH:-}" ]; then
  rm -f "benchmarks/out/gpu_sketch$([ "$small" = 1 ] && echo -small).json"  # the table at the end: this run's only
  echo "== 1/2 benchmarks/gpu_sketch.py (limit ${GPU_CHECK_SKETCH_S:-200}s)"
  timeout -s INT -k 15 "${GPU_CHECK_SKETCH_S:-200}" "$PY" benchmarks/gpu_sketch.py "$@" || rc=$?
fi
rm -f "benchmarks/out/gpu_rates$([ "$small" = 1 ] && echo -small).json"
echo "== 2/2 benchmarks/gpu_curriculum.py (limit ${GPU_CHECK_CURRICULUM_S:-220}s)"
cur=()
[ "$small" = 1 ] && cur=(--small --device cpu)
limit=${GPU_CHECK_CURRICULUM_S:-220}
timeout -s INT -k 15 "$((limit + 15))" "$PY" benchmarks/gpu_curriculum.py "${cur[@]}" --time-limit "$limit" || rc=$?

suffix=""
[ "$small" = 1 ] && suffix="-small"
"$PY" - "benchmarks/out/gpu_sketch$suffix.json" "benchmarks/out/gpu_rates$suffix.json" "$t_start" <<'PY' || true
# both tables again, at the end of the log (the curriculum's task logs push them out of a short tail)
import json, sys
from pathlib import Path

sketch, rates = (Path(p) for p in sys.argv[1:3])
earlier = lambda p: " (from an earlier run)" if p.stat().st_mtime < float(sys.argv[3]) else ""  # noqa: E731
f = lambda v, fmt: "" if v is None else format(v, fmt)  # noqa: E731
if sketch.is_file():
    d = json.loads(sketch.read_text())
    m = d["meta"]
    print(f"\n== sketch throughput ({sketch}{earlier(sketch)}): {m.get('gpu') or m.get('device')}, {m['n_params'] / 1e6:.0f}M params, "
          f"k={m['dim']}, {m['tokens']} tokens" + ("" if m.get("complete", True) else f" — {m.get('stopped')}"))
    print("| method | prompts | s | tokens/s | × plain | peak GB |\n|---|---|---|---|---|---|")
    for r in d["rows"]:
        print(f"| {r['method']} | {f(r['prompts'], 'd')} | {f(r['seconds'], '.2f')} | {r['tokens_per_s']:.0f} | "
              f"{f(r.get('vs_plain'), '.3f')} | {f(r['peak_mem_gb'], '.2f')} |")
if rates.is_file():
    d = json.loads(rates.read_text())
    m = d["meta"]
    print(f"\n== rates ({rates}): {m.get('gpu') or 'cpu'}, {m['shape_name']}, {m['n_params'] / 1e6:.1f}M params, {m['dtype']}")
    print("| op | tokens/s | TFLOP/s | MFU |\n|---|---|---|---|")
    for op, r in d["ops"].items():
        print(f"| {op} | {r['tokens_per_s']:.0f} | {r['flops_per_s'] / 1e12:.4g} | {f(r['mfu'] and 100 * r['mfu'], '.1f')} |")
    c = d.get("curriculum")
    if c:
        print(f"\n== curriculum ran_on check ({c['seconds']:.0f}s): " + ("ok" if c["ok"] else f"{len(c['violations'])} violation(s)"))
        print("| artifact kind | artifacts | ran_on |\n|---|---|---|")
        for k in c["kinds"]:
            print(f"| {k['kind']} | {k['artifacts']} | {k['ran_on']} |")
        for v in c["violations"]:
            print(v)
    else:
        print("\n== curriculum: no result recorded (see the log above)")
PY
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp benchmarks/out/gpu_sketch"$suffix".json benchmarks/out/gpu_rates"$suffix".json "$OUT"/ 2>/dev/null || true
fi
echo "gpu_check: done in $(( $(date +%s) - t_start ))s, exit code $rc"
exit "$rc"
