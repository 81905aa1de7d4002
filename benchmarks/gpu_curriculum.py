"""The first GPU session's check: a reduced CROPI curriculum on a random-initialised model at Qwen2.5-1.5B's body,
in bfloat16 on CUDA, through the real flows; then micro-benchmarks of the same model that `cropi plan` reads.

    python benchmarks/gpu_curriculum.py                          # GPU: 1.5B body, model.device cuda (scripts/gpu_check.sh)
    python benchmarks/gpu_curriculum.py --small --device cpu     # CPU: a tiny body, same code path (tests/test_gpu_check.py)
    python benchmarks/gpu_curriculum.py --check-only --storage S --device cuda   # only the ran_on check of a store

1. Micro-benchmarks (first, so a curriculum that overruns its time still leaves them): tokens/s of a no-grad
   teacher-forced forward (`teacher_force_pairs`: log β, health), a training-style forward+backward (the scoring
   loss into .grad, weights requiring grad: calibration, sketches' base; benchmarks/gpu_sketch.py's plain
   fwd+bwd) and `model.generate` decoding (the HF rollout backend's call: sampled, forced to --gen-len new
   tokens; the prefill is timed apart and left out, as `cropi plan` prices the prefill at the forward rate),
   with achieved FLOP/s (cropi_core.plan's FLOP count for the model's shape) and, on a GPU, MFU against the
   bf16 peak rates.json gives for it. Written as JSON (default benchmarks/out/gpu_rates.json; --small:
   gpu_rates-small.json) that `cropi plan` applies (cropi_core.plan.apply_measurements): on the matching GPU
   it replaces the assumed MFU of forward / fwdbwd / generate_hf; a CPU result becomes a measured CPU model.
2. The curriculum: the embedded model path (`model.name_or_path: tiny`, `build_tiny` with the char tokenizer)
   at the chosen shape, no warm-up (random weights), `model.dtype` bfloat16, `model.device` --device,
   `train.mixed_precision` bf16; 2 stages × 2 GRPO steps, 24 pool prompts, 8 validation and 16 test prompts,
   every stage scored (calibration, grads, scores, selection, online rollouts, health, train, evaluation), run
   by `flows.curriculum.run_curriculum` (what `cropi run` calls) on a temporary storage root with a temporary
   PREFECT_HOME. Rewards: `last_number` against a digit, which random text hits ~5% of the time per response,
   so with 16 (pool) / 32 (validation) responses most prompts have mixed rewards and POPI has something to score.
   Then every model task's artifact must record meta["ran_on"] == {"dtype": "bfloat16", "device": <device>}
   (trained checkpoints: {"dtype": "bfloat16", "device": <device>, "weights": "float32"}: autocast over float32
   master weights). Each difference is one `violation:` line and the exit code is 1.

Nothing is downloaded; the device machine needs the wheels scripts/gpu_wheels.sh prepares (prefect, trl, zarr, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent
# The device machine runs from a checkout with cropi not installed: the repository root goes first, and this
# script's own folder (sys.path[0] when run as a file) goes, or benchmarks/storage.py would shadow the storage package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "benchmarks")]
for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

# Qwen/Qwen2.5-1.5B's body (config.json: hidden 1536, 28 layers, 12 heads, 2 KV heads, MLP 8960) on the embedded
# model's char vocabulary; --small: a body that trains in seconds on a CPU.
SHAPES = {
    "qwen2.5-1.5b-body": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                              intermediate_size=8960, max_position_embeddings=1024),
    "small": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, max_position_embeddings=1024),
}
MODEL_KINDS = ("rollouts", "calibration", "grads", "health", "evaluation")  # meta["ran_on"] = {dtype, device}
INSTRUCTION = "Answer in \\boxed{}."


# ---------------------------------------------------------------------------------------------- the curriculum
def write_data(folder: Path, seed: int = 0) -> dict[str, Path]:
    """pool (24), targeted (16: 8 validation + 8 test) and untargeted (8) JSONL files, golds single digits."""
    import random

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    out = {}
    for name, n in (("pool", 24), ("target", 16), ("other", 8)):
        rows = [{"question": f"Pick a {name} digit, number {i}.", "answer": str(rng.randrange(10))} for i in range(n)]
        out[name] = folder / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def curriculum_config(data: dict[str, Path], shape: dict, dtype: str, device: str, name: str) -> dict:
    """The reduced curriculum as a RunConfig dict (written as YAML next to the data: `cropi run --config` runs it)."""
    spec = {"format": "jsonl", "verifier": "last_number"}
    return {
        "name": name,
        "model": {"name_or_path": "tiny", "tiny": shape, "dtype": dtype, "device": device},
        "bootstrap": {"enabled": False},  # random weights: the shape is what is measured
        "data": {
            "synthetic": None, "template": "plain_boxed", "instruction": INSTRUCTION,
            "pool": [{"name": "pool", "path": str(data["pool"]), **spec}],
            "targeted": [{"name": "target", "path": str(data["target"]), "val_size": 8, **spec}],
            "untargeted": [{"name": "other", "path": str(data["other"]), **spec}],
        },
        "rollout": {"num_generations": 16, "num_generations_val": 32, "max_new_tokens": 12, "temperature": 1.0},
        "influence": {"projector": "grass", "allocation": "energy", "sketch_dim": 256, "chunk_rows": 256,
                      "calibration_prompts": 8},
        "selection": {"ratio": 0.25, "fusion": "none", "rescore": "every", "gate_probe": None},  # both stages score
        # save_steps past the stage's steps: no mid-stage trainer checkpoint (weights + AdamW: 15 GB at 1.5B)
        "train": {"stages": 2, "steps_per_stage": 2, "save_steps": 100, "prompts_per_step": 2, "num_generations": 4,
                  "max_new_tokens": 12, "temperature": 1.0,
                  "mixed_precision": "bf16" if dtype == "bfloat16" else "no"},
        "eval": {"max_new_tokens": 12, "n_samples": 4},
        "runner": {"retries": 0},
    }


def expected_ran_on(cfg) -> tuple[dict, dict]:  # noqa: ANN001
    """(what every model task must record, what a trained checkpoint must record) for this config."""
    from cropi_core.models.loading import resolve_device

    device = resolve_device(cfg.model.device).type
    task = {"dtype": cfg.model.dtype, "device": device}
    train = {"dtype": "bfloat16" if cfg.train.mixed_precision == "bf16" else "float32", "device": device,
             "weights": "float32"}
    return task, train


def check_ran_on(store, task: dict, train: dict) -> tuple[list[str], list[tuple[str, int, str]]]:  # noqa: ANN001
    """(one line per violation, a (kind, artifacts, ran_on values) row per kind) over every model task's artifact:
    MODEL_KINDS record `task`, trained checkpoints (meta stage > 0) `train`; a kind with no artifact is a violation."""
    bad: list[str] = []
    rows: list[tuple[str, int, str]] = []
    for kind in (*MODEL_KINDS, "checkpoint"):
        found = store.find(kind)
        if kind == "checkpoint":
            found = [m for m in found if (m.meta or {}).get("stage", 0) > 0]
        want = train if kind == "checkpoint" else task
        label = "checkpoint (trained)" if kind == "checkpoint" else kind
        if not found:
            bad.append(f"violation: no {label} artifact in {store.root}: the curriculum did not run that task")
        seen = []
        for m in found:
            got = (m.meta or {}).get("ran_on")
            seen.append(json.dumps(got, sort_keys=True))
            if got != want:
                bad.append(f"violation: {label} {m.key[:12]} (stage {(m.meta or {}).get('stage', '?')}) "
                           f"ran_on {json.dumps(got, sort_keys=True)}, expected {json.dumps(want, sort_keys=True)}")
        rows.append((label, len(found), ", ".join(sorted(set(seen))) or "-"))
    return bad, rows


def run_curriculum_check(a, shape_name: str, work: Path, storage: Path) -> dict:  # noqa: ANN001
    """Write data + config, run the curriculum through the flows, check every artifact's ran_on."""
    import yaml

    from flows.inputs import prepare

    data = write_data(work / "data")
    name = "gpu-curriculum" + ("-small" if a.small else "")
    cfg_path = work / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(curriculum_config(data, SHAPES[shape_name], a.dtype, a.device, name),
                                       sort_keys=False))
    print(f"\ncurriculum: {cfg_path} (= cropi run --config {cfg_path} --storage {storage}), PREFECT_HOME "
          f"{os.environ.get('PREFECT_HOME')}", flush=True)
    t0 = time.perf_counter()
    error = None
    try:
        cfg = prepare(cfg_path, None, str(storage), None)
        from flows.curriculum import run_curriculum

        summary = run_curriculum(cfg)
        print(f"curriculum done in {summary['seconds']:.1f}s: report {summary['report']}", flush=True)
    except KeyboardInterrupt:  # scripts/gpu_check.sh's time limit (SIGINT; SIGTERM is turned into the same)
        error = (f"violation: the curriculum was stopped by a signal (a time limit) after "
                 f"{time.perf_counter() - t0:.0f}s; what it had stored is checked below")
    except Exception as err:  # noqa: BLE001 -- reported as a violation line, with its traceback above it
        traceback.print_exc()
        error = f"violation: the curriculum failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
    if error:
        from cropi_core.config import load_config

        cfg = load_config(cfg_path, {"storage.root": str(storage)}, check_files=False)
    seconds = time.perf_counter() - t0
    bad, rows = check_store(cfg)
    if error:
        bad.insert(0, error)
    return {"config": str(cfg_path), "storage": str(storage), "seconds": seconds, "violations": bad,
            "kinds": [{"kind": k, "artifacts": n, "ran_on": r} for k, n, r in rows], "ok": not bad}


def check_store(cfg) -> tuple[list[str], list[tuple[str, int, str]]]:  # noqa: ANN001
    from tasks.common import get_store

    task, train = expected_ran_on(cfg)
    return check_ran_on(get_store(cfg), task, train)


# ---------------------------------------------------------------------------------------------- micro-benchmarks
def sync(device) -> None:  # noqa: ANN001
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(a, shape_name: str, device, rates_table: dict) -> dict:  # noqa: ANN001
    """forward / fwdbwd / generate_hf tokens/s of the curriculum's model (same shape, dtype, attention) on `device`."""
    import torch
    from transformers import Qwen2ForCausalLM

    from benchmarks.gpu_sketch import plain_fwd_bwd
    from benchmarks.sketch import make_batch
    from cropi_core.config import RunConfig, TinyModelConfig
    from cropi_core.models.tiny import tiny_config
    from cropi_core.models.tokenizer import build_char_tokenizer
    from cropi_core.plan import forward_flops, tiny_shape
    from cropi_core.rollout.logprobs import teacher_force_pairs

    small = a.small
    n, k = a.prompts or (4 if small else 32), a.k or (4 if small else 8)
    plen, rlen = a.prompt_len or (24 if small else 128), a.resp_len or (32 if small else 512)
    glen, mbt = a.gen_len or (16 if small else 128), a.micro_batch_tokens or (512 if small else 8192)
    dtype = getattr(torch, a.dtype)
    tok = build_char_tokenizer()
    tiny = TinyModelConfig(**SHAPES[shape_name])
    shape = tiny_shape(RunConfig(model={"tiny": tiny.model_dump()}))
    t0 = time.perf_counter()
    torch.manual_seed(a.seed)
    with torch.device(device):  # initialised on the device: seconds instead of a minute on the CPU at 1.3B
        model = Qwen2ForCausalLM(tiny_config(tiny, tok)).to(dtype).eval()
    sync(device)
    vocab = model.config.vocab_size
    print(f"model: Qwen2 {shape_name} (char vocabulary {vocab}), {shape.params / 1e6:.1f}M params ({a.dtype}, "
          f"{model.config._attn_implementation} attention) on {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}; built in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)
    prompts = make_batch(n, k, plen, rlen, vocab, seed=a.seed)
    seqs = [p.prompt_ids.numel() + r.numel() for p in prompts for r in p.response_ids]
    tokens = sum(seqs)
    fwd_flops = sum(forward_flops(shape, 1, s) for s in seqs)
    rows: dict[str, dict] = {}

    def timed(fn, warm) -> float:
        warm()
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t

    # (1) training-style forward+backward into .grad (weights require grad), micro-batched like sketches
    dt = timed(lambda: plain_fwd_bwd(model, prompts, mbt, device), lambda: plain_fwd_bwd(model, prompts[:1], mbt, device))
    rows["fwdbwd"] = dict(what="forward+backward, weights requiring grad (scoring loss; gpu_sketch's plain (a))",
                          tokens=tokens, seconds=dt, flops=3 * fwd_flops)
    # (2) no-grad teacher forcing (log β of rollouts, health), batch 64 as the rollout backends
    pairs = [(p.prompt_ids, r) for p in prompts for r in p.response_ids]
    with torch.no_grad():
        dt = timed(lambda: teacher_force_pairs(model, pairs, temperature=1.0, batch_size=64),
                   lambda: teacher_force_pairs(model, pairs[:4], temperature=1.0, batch_size=64))
    rows["forward"] = dict(what="teacher_force_pairs, no grad, batch 64", tokens=tokens, seconds=dt, flops=fwd_flops)
    # (3) HF generate: n prompts x k samples, forced to glen new tokens; the prefill (+1 token) timed apart
    g = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(3, vocab, (n, plen), generator=g).to(device)
    kw = dict(do_sample=True, temperature=1.0, num_return_sequences=k, pad_token_id=tok.pad_token_id,
              attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        model.generate(ids[:1], max_new_tokens=2, min_new_tokens=2, **{**kw, "attention_mask": kw["attention_mask"][:1]})
        t1 = timed(lambda: model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw), lambda: None)
        tg = timed(lambda: model.generate(ids, max_new_tokens=glen, min_new_tokens=glen, **kw), lambda: None)
    b = n * k
    rows["generate_hf"] = dict(what=f"model.generate, {n} prompts x {k} samples, {plen} prompt + {glen} new tokens "
                                    f"(decode only: minus a 1-token generate, {t1:.2f}s)",
                               tokens=b * (glen - 1), seconds=max(1e-9, tg - t1),
                               flops=forward_flops(shape, b, plen + glen) - forward_flops(shape, b, plen + 1))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    dev_key = gpu_key(gpu, rates_table) if gpu else None
    peak = rates_table["devices"][dev_key]["peak_flops"]["value"] if dev_key else None
    command = "python benchmarks/gpu_curriculum.py " + " ".join(sys.argv[1:])
    where = (f"{gpu}" if gpu else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} "
             "torch thread(s)") + f", torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    for op, r in rows.items():
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        r["flops_per_s"] = r["flops"] / r["seconds"]
        r["mfu"] = r["flops_per_s"] / peak if peak else None
        r["status"] = "measured"
        r["source"] = (f"{command} ({shape_name}, {shape.params / 1e6:.1f}M params, {a.dtype}): {r['what']}; "
                       f"{r['tokens_per_s']:.0f} tokens/s on {where}")
    meta = dict(small=small, device=device.type, gpu=gpu, device_key=dev_key or ("cpu" if device.type == "cpu" else None),
                peak_flops=peak, dtype=a.dtype, shape_name=shape_name, shape=SHAPES[shape_name], n_params=shape.params,
                matmul_params=shape.matmul_params, prompts=n, k=k, prompt_len=plen, resp_len=rlen, gen_len=glen,
                micro_batch_tokens=mbt, threads=torch.get_num_threads(), command=command, torch=torch.__version__,
                host=platform.node(), time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    return {"meta": meta, "ops": rows}


def gpu_key(name: str, rates_table: dict) -> str | None:
    """rates.json's device key for a CUDA device name ("NVIDIA H100 80GB HBM3" -> "h100"), None if no key matches."""
    return next((k for k in rates_table["devices"] if k != "cpu" and k.upper() in name.upper()), None)


def print_bench(result: dict) -> None:
    m = result["meta"]
    print(f"\nmicro-benchmarks: {m['shape_name']} ({m['n_params'] / 1e6:.1f}M params, {m['dtype']}) on "
          f"{m['gpu'] or 'cpu'}" + (f"; MFU vs {m['peak_flops'] / 1e12:.0f} TFLOP/s bf16 peak ({m['device_key']}, "
                                    "benchmarks/rates.json)" if m["peak_flops"] else ""))
    print("| op | tokens | s | tokens/s | achieved TFLOP/s | MFU |\n|---|---|---|---|---|---|")
    for op, r in result["ops"].items():
        mfu = "" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        print(f"| {op} | {r['tokens']} | {r['seconds']:.3f} | {r['tokens_per_s']:.0f} | {r['flops_per_s'] / 1e12:.4g} "
              f"| {mfu} |")


def print_curriculum(c: dict) -> None:
    print(f"\ncurriculum: {c['seconds']:.1f}s; ran_on recorded by each model task's artifacts ({c['storage']})")
    print("| artifact kind | artifacts | ran_on |\n|---|---|---|")
    for r in c["kinds"]:
        print(f"| {r['kind']} | {r['artifacts']} | {r['ran_on']} |")
    for line in c["violations"]:
        print(line)
    print("curriculum check: " + ("ok, every model task ran as configured" if c["ok"] else
                                  f"{len(c['violations'])} violation(s)"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="small body (CPU test); benchmark sizes shrink accordingly")
    ap.add_argument("--device", default="cuda", help="cuda (default) | cpu | auto (model.device of the curriculum)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                    help="model.dtype (bfloat16 also sets train.mixed_precision bf16)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on a CPU (default 1, as rates.json's CPU rates)")
    ap.add_argument("--storage", type=Path, default=None, help="storage root (default: a temporary folder, removed)")
    ap.add_argument("--work", type=Path, default=None,
                    help="folder for the curriculum's data files and config YAML (default: a temporary folder, removed)")
    ap.add_argument("--out", type=Path, default=None,
                    help="rates JSON (default benchmarks/out/gpu_rates.json; --small gpu_rates-small.json)")
    ap.add_argument("--skip-bench", action="store_true", help="only the curriculum")
    ap.add_argument("--skip-curriculum", action="store_true", help="only the micro-benchmarks")
    ap.add_argument("--check-only", action="store_true",
                    help="only check the ran_on records already in --storage (its config: --small/--dtype/--device)")
    ap.add_argument("--prompts", type=int, default=None, help="benchmark prompts (default 32; --small 4)")
    ap.add_argument("--k", type=int, default=None, help="responses per prompt (default 8; --small 4)")
    ap.add_argument("--prompt-len", type=int, default=None, help="mean prompt tokens (default 128; --small 24)")
    ap.add_argument("--resp-len", type=int, default=None, help="mean response tokens (default 512; --small 32)")
    ap.add_argument("--gen-len", type=int, default=None, help="generated tokens (default 128; --small 16)")
    ap.add_argument("--micro-batch-tokens", type=int, default=None, help="forward+backward micro-batch (default 8192: eager attention at 1.5B stays ~40 GB; --small 512)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds from start: then the ran_on check runs on what is stored, the JSON is written and "
                         "the script exits 124 (scripts/gpu_check.sh sets it inside its own limit)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    if "PREFECT_HOME" not in os.environ:  # before prefect is imported: nothing of this run outlives it
        os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="cropi-gpu-prefect-")
    import torch

    from cropi_core.models.loading import resolve_device

    device = resolve_device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available() and not a.check_only:
        print("gpu_curriculum: no CUDA device visible to torch (use --small --device cpu for the CPU run)", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(a.threads or 1)
    shape_name = "small" if a.small else "qwen2.5-1.5b-body"
    out_path = a.out or ROOT / "benchmarks" / "out" / ("gpu_rates-small.json" if a.small else "gpu_rates.json")
    rates_table = json.loads((ROOT / "benchmarks" / "rates.json").read_text())

    if a.check_only:
        if a.storage is None:
            ap.error("--check-only needs --storage")
        from cropi_core.config import RunConfig

        cfg = RunConfig(model={"dtype": a.dtype, "device": a.device},
                        train={"mixed_precision": "bf16" if a.dtype == "bfloat16" else "no"}, storage={"root": str(a.storage)})
        bad, rows = check_store(cfg)
        print_curriculum({"seconds": 0.0, "storage": str(a.storage), "violations": bad, "ok": not bad,
                          "kinds": [{"kind": k, "artifacts": n, "ran_on": r} for k, n, r in rows]})
        return 1 if bad else 0

    result: dict = {}
    if not a.skip_bench:
        result = bench(a, shape_name, device, rates_table)
        print_bench(result)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2))
        print(f"wrote {out_path} (cropi plan reads it: cropi_core.plan.apply_measurements)", flush=True)
    if a.skip_curriculum:
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="cropi-gpu-curriculum-"))
    storage = a.storage or tmp / "store"
    if a.time_limit:
        start_watchdog(a, storage, result, out_path, a.time_limit - (time.perf_counter() - T0))
    try:
        os.environ.setdefault("CROPI_CACHE", str(tmp / "cache"))
        c = run_curriculum_check(a, shape_name, a.work or tmp, storage)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # what --storage / --work name stays
    print_curriculum(c)
    if result:
        result["curriculum"] = c
        out_path.write_text(json.dumps(result, indent=2))
    if "stopped by a signal" in " ".join(c["violations"]):  # task threads may still run: do not wait for them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(124)
    return 0 if c["ok"] else 1


def _interrupt(signum, frame) -> None:  # noqa: ANN001
    raise KeyboardInterrupt


def start_watchdog(a, storage: Path, result: dict, out_path: Path, seconds: float) -> None:  # noqa: ANN001
    """At the deadline, whatever the flow is doing (a signal does not reach code waiting inside Prefect): check what
    is stored, print it, write the JSON and exit 124 without waiting for the task threads."""
    import threading

    def deadline() -> None:
        from cropi_core.config import RunConfig

        cfg = RunConfig(model={"dtype": a.dtype, "device": a.device}, storage={"root": str(storage)},
                        train={"mixed_precision": "bf16" if a.dtype == "bfloat16" else "no"})
        try:
            bad, rows = check_store(cfg)
        except Exception as err:  # noqa: BLE001 -- the storage may be mid-write; say so and still exit
            bad, rows = [f"violation: the stored artifacts could not be read: {type(err).__name__}: {err}"], []
        bad.insert(0, f"violation: the curriculum was stopped at its time limit ({a.time_limit:.0f}s from start); "
                      "what it had stored is checked below")
        c = {"config": None, "storage": str(storage), "seconds": time.perf_counter() - T0, "violations": bad,
             "kinds": [{"kind": k, "artifacts": n, "ran_on": r} for k, n, r in rows], "ok": False}
        print_curriculum(c)
        if result:
            result["curriculum"] = c
            out_path.write_text(json.dumps(result, indent=2))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(124)

    t = threading.Timer(max(1.0, seconds), deadline)
    t.daemon = True
    t.start()


if __name__ == "__main__":
    sys.exit(main())
