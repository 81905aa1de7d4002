"""vLLM (CPU, `vllm serve` from .vllm-venv) vs HF generate: rollout tokens/s on SmolLM2-135M-Instruct, same prompts.

    bash scripts/vllm_env.sh                                   # once: the vLLM venv
    .venv/bin/python -m benchmarks.vllm_rates --prompts 16 --k 4 --max-new-tokens 32 --dtype float32

Both backends run cropi's rollout code (`HFBackend.sample` and `VLLMServerBackend.sample` on the same synthetic
`add` prompts with the chat template, temperature 0.7): K samples per prompt, rewards, and log β teacher-forced by
the HF model. Reported per backend: response tokens, generation seconds (HF: `generate` calls; vLLM: the HTTP
requests, server already up), generation tokens/s, total seconds with teacher forcing, pass rate; for vLLM the
server's start-up seconds too. One run, no repetitions: on a shared machine, read the ratios, not the absolutes.
Prints one JSON object (and writes it to --out when given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


def prompts(n: int):
    """The first n `add` test prompts of configs/smollm2-synthetic.yaml, and that config's data section."""
    from cropi_core.config import load_config
    from cropi_core.data.splits import build_splits

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "smollm2-synthetic.yaml")
    problems = build_splits(cfg.data).test_untargeted["test/add"]
    if n > len(problems):
        raise SystemExit(f"--prompts {n}: the add test set has {len(problems)} prompts")
    return problems[:n], cfg.data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2, help="torch threads of HF, and OMP threads of vLLM")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from cropi_core.config import resolve_alias
    from cropi_core.models.gguf import convert_gguf
    from cropi_core.rollout.hf import HFBackend
    from cropi_core.rollout.vllm_http import VLLMServerBackend
    from tasks.vllm_server import start_vllm_server
    from transformers import AutoModelForCausalLM, AutoTokenizer

    problems, data = prompts(args.prompts)
    work = Path(tempfile.mkdtemp(prefix="cropi-vllm-bench-"))
    folder, gguf = resolve_alias("smollm2-135m-instruct")
    t0 = time.perf_counter()
    ckpt = convert_gguf(folder, gguf, work / "smollm2")
    convert_s = time.perf_counter() - t0
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    kw = dict(temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=0,
              template=data.template, instruction=data.instruction, batch_size=64, progress=False)

    def summary(backend, recs) -> dict:
        s = dict(backend.last_stats)
        s["generate_tokens_per_s"] = s["response_tokens"] / max(s["generate_s"], 1e-9)
        s["pass_rate"] = float(sum(float(r.rewards.sum()) for r in recs) / sum(r.k for r in recs))
        return s

    hf = HFBackend(model, tok)
    out = {"model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantised)", "dtype": args.dtype, "prompts": len(problems),
           "k": args.k, "max_new_tokens": args.max_new_tokens, "threads": args.threads, "convert_s": convert_s,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"}
    out["hf"] = summary(hf, hf.sample(problems, args.k, **kw))
    t0 = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    server = start_vllm_server(ckpt, dtype=args.dtype, threads=args.threads)
    start_s = time.perf_counter() - t0
    try:
        vb = VLLMServerBackend(model, tok, url=server.url)
        out["vllm"] = {**summary(vb, vb.sample(problems, args.k, **kw)), "server_start_s": start_s}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)  # the converted checkpoint (~0.5 GB)
    out["load_average_end"] = os.getloadavg()[0]
    out["ratio_generate_tokens_per_s"] = out["vllm"]["generate_tokens_per_s"] / out["hf"]["generate_tokens_per_s"]
    out["ratio_total_s_hf_over_vllm"] = out["hf"]["total_s"] / out["vllm"]["total_s"]
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
