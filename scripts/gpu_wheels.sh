#!/usr/bin/env bash
# Prepare .gpu/ (ignored by git) for one device call of scripts/gpu_check.sh: the device machine has torch and
# transformers but not prefect, trl, zarr, pydantic, ...; it cannot reach a package index and does not get ../shared.
#   scripts/gpu_wheels.sh           # .gpu/gpu.tar.xz (wheels for CPython 3.12 manylinux x86_64 + the Qwen2 tokenizer)
#   scripts/gpu_wheels.sh --check   # the same, then an emulated device run here (see below)
# What is carried: every distribution cropi's own requirements pull in (their closure over this venv, extras that
# cropi does not ask for left out), at this venv's version, minus those the device image already has (DEVICE below,
# from the device docs' package list, read there on 2026-11-17) — except FORCE: packages the image has at another
# version than the one cropi's tests run with here — plus EXTRA. torch stays the device's own (its CUDA build), and
# cropi itself travels as the working tree. The device call is
#   run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=540)     (docs/scaling.md)
# Everything that travels (working tree + .gpu) must stay under the device's 64 MiB: the wheels alone are ~66 MB,
# so they travel re-zipped without compression inside one xz archive (~36 MB: xz compresses across files, a wheel's
# zip only within each); gpu_check.sh unpacks it and pip-installs the unchanged wheels (their RECORD hashes hold).
# --check: a CPython 3.11 wheelhouse of the same names and versions, installed with the same pip command into a
# folder, next to a stand-in for the device image (links to this venv's copies of the DEVICE packages, the image's
# own versions of the packages the docs give versions for), under `python -S` (no site-packages of its own); then
# benchmarks/gpu_curriculum.py --small --device cpu runs there. A missing wheel or a version clash shows up here,
# before the device is asked (this found greenlet missing, benchmarks/storage.py shadowing the storage package, and
# the image's transformers 5.17 lacking TrainingArguments(activation_checkpointing=)). GPU_EMU_KEEP=1 keeps the
# emulated environment (its folder is printed); GPU_EMU_ONLY=1 builds it without running the curriculum.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SHARED=${CROPI_SHARED:-../shared}
LIMIT_MIB=${GPU_CARRY_LIMIT_MIB:-60}  # of the device's 64 MiB, with room for what the session adds later
check=0
[ "${1:-}" = "--check" ] && check=1

list=$("$PY" - <<'PY'
from importlib.metadata import distribution, distributions
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as cn

# the device image's Python packages (device docs, "Python packages already there", 2026-11-17)
DEVICE = set(map(cn, """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split()))
# there at other versions (transformers 5.17, huggingface_hub 1.33, accelerate 1.15 as read on the image): carry the
# ones cropi's tests run with here (cropi passes TrainingArguments(activation_checkpointing=), new in transformers
# 5.2x; transformers 5.25 needs huggingface_hub >= 2.4)
FORCE = set(map(cn, ["transformers", "huggingface-hub", "accelerate"]))
# the image's peft is imported by TRL's GRPOTrainer whenever it is installed, so it must import with the carried
# transformers: carry one that does (--check imports it with trl)
EXTRA = {"peft": "0.21.2"}
NEVER = set(map(cn, ["torch", "cropi"]))
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
       "platform_machine": "x86_64", "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "os_name": "posix"}

installed = {cn(d.metadata["Name"]): d for d in distributions()}
need: dict[str, set[str]] = {}
todo = [Requirement(r) for r in distribution("cropi").requires or []]
while todo:
    req = todo.pop()
    if req.marker is not None and not req.marker.evaluate({**ENV, "extra": ""}):
        continue
    name = cn(req.name)
    if name not in installed:
        raise SystemExit(f"gpu_wheels: {req} is required but not installed in this venv (make test sets it up)")
    extras = set(req.extras)
    if name in need and extras <= need[name]:
        continue
    need[name] = need.get(name, set()) | extras
    for r in installed[name].requires or []:
        rr = Requirement(r)
        if rr.marker is None or any(rr.marker.evaluate({**ENV, "extra": e}) for e in ["", *need[name]]):
            rr.marker = None  # evaluated here, with this package's extras (e.g. greenlet of sqlalchemy[asyncio])
            todo.append(rr)
carry = sorted((n for n in need if n not in NEVER and (n not in DEVICE or n in FORCE)))
for n in carry:
    print(f"{installed[n].metadata['Name']}=={installed[n].version}")
for n, v in EXTRA.items():
    print(f"{n}=={v}")
PY
)
echo "gpu_wheels: $(echo "$list" | wc -l) distributions to carry: $(echo $list)"

platforms=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux1_x86_64 linux_x86_64; do
  platforms+=(--platform "$p")
done
download() {  # download PYVER DEST: every wheel of $list for CPython PYVER (3.12: the device's)
  rm -rf "$2.new"
  mkdir -p "$2.new"
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$1" --implementation cp "${platforms[@]}" \
    -d "$2.new" $list
  rm -rf "$2"
  mv "$2.new" "$2"
}
stage=$(mktemp -d /tmp/cropi-gpu-wheels.XXXXXX)
trap 'rm -rf "$stage"' EXIT
download 3.12 "$stage/whl"
n_whl=$(ls "$stage"/whl/*.whl | wc -l)
[ "$n_whl" -eq "$(echo "$list" | wc -l)" ] || { echo "gpu_wheels: $n_whl wheels for $(echo "$list" | wc -l) names" >&2; exit 1; }
whl_bytes=$(du -sb "$stage/whl" | cut -f1)
"$PY" - "$stage/whl" <<'PY'
# re-zip every wheel without compression (same members, same bytes: pip checks them against RECORD as before)
import sys, zipfile
from pathlib import Path

for w in sorted(Path(sys.argv[1]).glob("*.whl")):
    tmp = w.with_suffix(".stored")
    with zipfile.ZipFile(w) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            out = zipfile.ZipInfo(info.filename, info.date_time)
            out.external_attr, out.compress_type = info.external_attr, zipfile.ZIP_STORED
            dst.writestr(out, data)
    tmp.replace(w)
PY
# benchmarks/gpu_sketch.py tokenizes with the real Qwen2 tokenizer (gpu_check.sh points CROPI_QWEN2_TOKENIZER at it)
if [ -d "$SHARED/models/qwen2-tokenizer" ]; then
  cp -r "$SHARED/models/qwen2-tokenizer" "$stage/qwen2-tokenizer"
  chmod -R u+w "$stage/qwen2-tokenizer"
else
  echo "gpu_wheels: $SHARED/models/qwen2-tokenizer not found: gpu_sketch.py will stop on the device" >&2
fi
echo "$list" > "$stage/whl/wheels.txt"
rm -rf .gpu
mkdir -p .gpu
tar -cf - -C "$stage" --sort=name whl $( [ -d "$stage/qwen2-tokenizer" ] && echo qwen2-tokenizer) \
  | xz -9 -T0 > .gpu/gpu.tar.xz.tmp
mv .gpu/gpu.tar.xz.tmp .gpu/gpu.tar.xz
n_tar=$(xz -dc .gpu/gpu.tar.xz | tar -tf - | grep -c '\.whl$')
[ "$n_tar" -eq "$n_whl" ] || { echo "gpu_wheels: .gpu/gpu.tar.xz holds $n_tar wheels, not $n_whl" >&2; exit 1; }
cp "$stage/whl/wheels.txt" .gpu/wheels.txt

# what travels: tracked + untracked-not-ignored files of the working tree, and .gpu
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null \
        | awk '{s+=$1} END {print s+0}')
gpu=$(du -sb .gpu | cut -f1)
total_mib=$(( (tree + gpu) / 1048576 ))
echo "gpu_wheels: .gpu/gpu.tar.xz $((gpu / 1048576)) MiB ($n_whl wheels, $((whl_bytes / 1048576)) MiB as downloaded," \
     "+ tokenizer), working tree $((tree / 1048576)) MiB: ${total_mib} MiB travel with carry [\".gpu\"] (limit 64 MiB)"
[ "$total_mib" -lt "$LIMIT_MIB" ] || { echo "gpu_wheels: over ${LIMIT_MIB} MiB" >&2; exit 1; }

[ "$check" = 1 ] || exit 0
# ---- --check: the device's environment, emulated here with CPython 3.11 wheels of the same names and versions
emu=$(mktemp -d /tmp/cropi-gpu-emu.XXXXXX)
[ -n "${GPU_EMU_KEEP:-}" ] || trap 'rm -rf "$emu" "$stage"' EXIT
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
download "$pyver" "$emu/whl"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$emu/carried/site-packages" "$emu/whl"/*.whl
# the image's versions where the device docs give them and they differ from this venv's (pure Python or 3.11 wheels)
PINNED="transformers==5.17.0 huggingface-hub==1.33.0 accelerate==1.15.0 tokenizers==0.23.2"
list="$PINNED" download "$pyver" "$emu/pinned"
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$emu/image/site-packages" "$emu/pinned"/*.whl
CARRIED="$list $PINNED" "$PY" - "$emu/image/site-packages" <<'PY'
# links to this venv's copies of the device image's packages (DEVICE in the list above, not carried or pinned ones)
import os, sys
from importlib.metadata import distributions
from pathlib import Path
from packaging.utils import canonicalize_name as cn

src = Path(sys.argv[1])
src.mkdir(parents=True, exist_ok=True)
carried = {cn(n.split("==")[0]) for n in os.environ["CARRIED"].split()}
text = Path("scripts/gpu_wheels.sh").read_text()
device = set(map(cn, text.split('DEVICE = set(map(cn, """')[1].split('"""')[0].split()))
for d in distributions():
    name = cn(d.metadata["Name"])
    if name not in device or name in carried:
        continue
    tops = {Path(str(f)).parts[0] for f in d.files or [] if not str(f).startswith("..")}
    for t in tops:
        p = Path(d.locate_file(t))
        if p.exists() and not (src / t).exists():
            (src / t).symlink_to(p)
PY
echo "gpu_wheels --check: emulated device image in $emu; running gpu_curriculum.py --small --device cpu there"
base=$("$PY" -c 'import sys; print(sys.base_prefix)')/bin/python3
[ -n "${GPU_EMU_ONLY:-}" ] && { echo "$emu"; exit 0; }
PYTHONPATH="$emu/carried/site-packages:$emu/image/site-packages:$PWD" PREFECT_HOME="$emu/prefect" CROPI_STORAGE="$emu/store" \
  "$base" -S benchmarks/gpu_curriculum.py --small --device cpu --storage "$emu/store" --out "$emu/rates.json"
echo "gpu_wheels --check: ok"
