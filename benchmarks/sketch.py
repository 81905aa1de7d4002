"""Sketching throughput: every projector vs a plain forward+backward and vs the paper's reference procedure.

Same model (a ≥ 20M-parameter Qwen2 by default), same batch of prompts × K responses (`--workload families`:
groups of four prompts sharing vocabulary and answer endings, so true gradient cosines are informative), one process:
  (a) plain forward+backward of the scoring loss over the whole batch (weights require grad, as in training);
  (a′) the same with frozen weights and the gradient started at the embedding output: forward + input-gradient
      backward only, what every hook-based sketch pays before its hooks — plain / (a′) is the ceiling of "× plain";
  (b) `sketch_prompts` with each projector: prompts/s, tokens/s, ratio to (a), peak RSS growth, bytes/prompt;
  (c) the paper's reference procedure (thu-coai/CROPI with TRAK's projector, PAPER.md §4): one prompt at a time,
      full flat gradient, fixed coordinate subset, dense Gaussian projection generated blockwise on the fly.
Slow methods (dense with a Gaussian matrix, reference) run on the first `--slow-prompts` prompts only; rates are
per prompt. Fidelity: cos MAE = mean |cos(sketch_i, sketch_j) − cos(g_i, g_j)| over the off-diagonal prompt pairs,
against the exact per-prompt gradients g (the `exact` projector, float32), with a "sketch" of pure noise as the
floor every informative sketch must beat.

    .venv/bin/python benchmarks/sketch.py                    # table on stdout, JSON in benchmarks/out/
    .venv/bin/python benchmarks/sketch.py --model tiny --prompts 4 --k 4 --resp-len 24 --dim 256   # smoke run
    .venv/bin/python benchmarks/sketch.py --repeats 3 --kinds grass-r25+energy,grass   # × plain as median (min–max) of 3 rounds
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import math
import os
import platform
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from cropi_core.influence import (PromptRollouts, _micro_batches, _pad, _sequences, _token_logprobs, gradient_energy,
                                  sketch_prompts)
from cropi_core.objective import group_advantages
from cropi_core.projection import make_projector
from cropi_core.projection.jl import energy_ratios

MODELS = {
    "20m": dict(vocab_size=16000, hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                num_key_value_heads=2),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}


class PeakRSS:
    """Peak resident-set growth over a block, sampled every 5 ms by a thread (torch allocations included)."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.delta = self.peak - self.base


def make_batch(n: int, k: int, prompt_len: int, resp_len: int, vocab: int, seed: int) -> list[PromptRollouts]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p = torch.randint(0, vocab, (int(torch.randint(prompt_len // 2, prompt_len * 3 // 2 + 1, (1,), generator=g)),),
                          generator=g)
        rs = [torch.randint(0, vocab, (int(t),), generator=g)
              for t in torch.randint(resp_len // 2, resp_len * 3 // 2 + 1, (k,), generator=g)]
        lbs = [-3 * torch.rand(r.shape, generator=g) for r in rs]
        rewards = torch.zeros(k)
        rewards[: 1 + i % (k - 1)] = 1  # always scorable
        out.append(PromptRollouts(p, rs, lbs, rewards, problem_id=f"bench/{i}"))
    return out


def make_family_batch(n: int, k: int, prompt_len: int, resp_len: int, vocab: int, seed: int,
                      families: int | None = None, end_len: int = 8, noise: float = 0.2) -> list[PromptRollouts]:
    """Prompts whose gradients correlate, as real pools' do (a domain's prompts share words and answer format).

    Prompt i belongs to family i % F (F = n // 4, at least 2: four prompts per family). A family has its own 64-token sub-vocabulary, a prompt template and a
    response template, each copied with a share `noise` of positions replaced at random, and two `end_len`-token
    endings: rewarded responses end with the family's "good" ending, unrewarded ones with its "bad" one. The
    advantage-weighted gradient Σ A_j ∇log π(y_j) of a prompt then points along its family's good-minus-bad
    direction, so prompt pairs of one family have clearly positive cosines and pairs across families ≈ 0 — unlike
    uniform random tokens, where every true cosine is ≈ 0 and a sketch of pure noise scores about as well.
    """
    g = torch.Generator().manual_seed(seed)
    families = families or max(2, n // 4)
    longest = resp_len * 3 // 2

    def jitter(template: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
        swap = torch.rand(template.shape, generator=g) < noise
        return torch.where(swap, sub[torch.randint(0, len(sub), template.shape, generator=g)], template)

    fam = []
    for _ in range(families):
        sub = torch.randperm(vocab, generator=g)[:64]
        pick = lambda m: sub[torch.randint(0, len(sub), (m,), generator=g)]  # noqa: E731
        fam.append((sub, pick(prompt_len), pick(longest), pick(end_len), pick(end_len)))
    out = []
    for i in range(n):
        sub, prompt, body, good, bad = fam[i % families]
        rewards = torch.zeros(k)
        rewards[: 1 + i % (k - 1)] = 1
        lens = torch.randint(max(resp_len // 2, end_len + 1), longest + 1, (k,), generator=g)
        rs = [torch.cat([jitter(body[: int(t) - end_len], sub), good if rewards[j] > 0 else bad])
              for j, t in enumerate(lens)]
        lbs = [-3 * torch.rand(r.shape, generator=g) for r in rs]
        out.append(PromptRollouts(jitter(prompt, sub), rs, lbs, rewards, problem_id=f"bench/{i}"))
    return out


def resp_tokens(prompts) -> int:
    return sum(r.numel() for p in prompts for r in p.response_ids)


def all_tokens(prompts) -> int:
    return sum(p.num_tokens for p in prompts)


def plain_fwd_bwd(model, prompts, micro_batch_tokens: int) -> None:
    """(a): the same loss and packing as sketch_prompts, but ordinary training-style backward into .grad."""
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)
    for batch in _micro_batches(_sequences(prompts, "seq_mean_token_mean", torch.float32), micro_batch_tokens):
        ids, attn, pos, logbeta, mask, _ = _pad(batch, torch.device("cpu"), torch.float32)
        coef = torch.tensor([s.coef for s in batch])
        logp = _token_logprobs(model, ids, attn, 1.0, pos)
        (coef[:, None] * torch.exp(logp - logbeta) * mask).sum().backward()
    model.zero_grad(set_to_none=True)


def backbone_fwd_bwd(model, prompts, micro_batch_tokens: int) -> None:
    """(a′): the same loss and packing, weights frozen and the gradient started at the embedding output — the
    forward and the input-gradient backward that every hook-based sketch runs before its hooks do any work. Plain
    (a) adds the weight-gradient GEMMs to it, so plain / (a′) bounds what any such sketch can reach vs plain."""
    for p in model.parameters():
        p.requires_grad_(False)
    h = model.get_input_embeddings().register_forward_hook(lambda mod, args, out: out.detach().requires_grad_(True))
    try:
        with torch.enable_grad():
            for batch in _micro_batches(_sequences(prompts, "seq_mean_token_mean", torch.float32), micro_batch_tokens):
                ids, attn, pos, logbeta, mask, _ = _pad(batch, torch.device("cpu"), torch.float32)
                coef = torch.tensor([s.coef for s in batch])
                logp = _token_logprobs(model, ids, attn, 1.0, pos)
                (coef[:, None] * torch.exp(logp - logbeta) * mask).sum().backward()
    finally:
        h.remove()


def reference_sketch(model, prompts, dim: int, ratio: float, seed: int) -> torch.Tensor:
    """(c): per prompt — its K responses through the model, full flat gradient, subset, on-the-fly dense JL."""
    params = [p for p in model.parameters()]
    n = sum(p.numel() for p in params)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[: max(1, int(round(ratio * n)))].sort().values
    chunk = max(1, (1 << 22) // dim)
    out = torch.zeros(len(prompts), dim)
    for p in params:
        p.requires_grad_(True)
    for b, pr in enumerate(prompts):
        model.zero_grad(set_to_none=True)
        adv = group_advantages(pr.rewards)
        seqs = [torch.cat([pr.prompt_ids, r]) for r in pr.response_ids]
        length = max(s.numel() for s in seqs)
        ids = torch.stack([torch.nn.functional.pad(s, (0, length - s.numel())) for s in seqs])
        attn = torch.stack([(torch.arange(length) < s.numel()).long() for s in seqs])
        logp = _token_logprobs(model, ids, attn, 1.0)
        loss = 0.0
        for k, r in enumerate(pr.response_ids):
            p0 = pr.prompt_ids.numel()
            rho = torch.exp(logp[k, p0 - 1 : p0 - 1 + r.numel()] - pr.behavior_logprobs[k])
            loss = loss - adv[k] * rho.mean() / pr.k
        loss.backward()
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        kept = flat[idx]
        gen = torch.Generator().manual_seed(seed + 1)
        for s in range(0, kept.numel(), chunk):
            c = min(chunk, kept.numel() - s)
            out[b] += kept[s : s + c] @ (torch.randn(c, dim, generator=gen) / math.sqrt(dim))
    model.zero_grad(set_to_none=True)
    return out.half()


def build(a: dict):
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**MODELS[a["model"]], max_position_embeddings=512, tie_word_embeddings=False,
                                         attn_implementation="eager")).eval()
    make = make_family_batch if a.get("workload") == "families" else make_batch
    prompts = make(a["prompts"], a["k"], a["prompt_len"], a["resp_len"], model.config.vocab_size, seed=0)
    return model, prompts


# method -> (projector kind, sparse ratio ("r" = --ratio), transform, sjl hashes, slow?)
SPECS = {
    "grass": ("grass", "r", "sjl", 2, False), "grass-s1": ("grass", "r", "sjl", 1, False),
    "grass-s4": ("grass", "r", "sjl", 4, False), "grass-gauss": ("grass", "r", "gaussian", 2, True),
    "sparse": ("sparse", "r", "sjl", 2, False), "sparse-gauss": ("sparse", "r", "gaussian", 2, True),
    "dense": ("dense", 1.0, "sjl", 2, False), "dense-gauss": ("dense", 1.0, "gaussian", 2, True),
    "grass-r15": ("grass", 0.15, "sjl", 2, False), "grass-r20": ("grass", 0.2, "sjl", 2, False),
    "grass-r25": ("grass", 0.25, "sjl", 2, False), "grass-r50": ("grass", 0.5, "sjl", 2, False),
    "exact": ("exact", 1.0, "sjl", 2, False),
}
# "<method>+energy": the same projector with influence.allocation=energy — per-parameter keep ratios from the
# gradient energy of the batch's first CALIBRATION_PROMPTS prompts (as the flow's calibration artifact measures it,
# once per stage); its cost is reported in its own column, not in the sketch rate
CALIBRATION_PROMPTS = 4


def run_one(kind: str, a: dict, seed: int = 0) -> tuple[dict, int, int, "torch.Tensor | None"]:
    """One method on the shared batch, in this (fresh) process: its row of the table and its sketch rows
    (`seed`: the projector's, or the noise's)."""
    model, prompts = build(a)
    n_params = sum(p.numel() for p in model.parameters())
    slow = prompts[: a["slow_prompts"]]
    mbt, dim, ratio = a["micro_batch_tokens"], a["dim"], a["ratio"]
    if kind == "plain":
        name, ps, bpp, d = "(a) plain fwd+bwd", prompts, 0, 0
        fn = lambda ps: plain_fwd_bwd(model, ps, mbt)  # noqa: E731
    elif kind == "backbone":
        name, ps, bpp, d = "(a′) fwd+bwd, input gradients only (the ceiling of any hook-based sketch)", prompts, 0, 0
        fn = lambda ps: backbone_fwd_bwd(model, ps, mbt)  # noqa: E731
    elif kind == "reference":
        name, ps, bpp, d = f"(c) reference ρ={ratio:g} (TRAK-style dense)", slow, 2 * dim, dim
        fn = lambda ps: reference_sketch(model, ps, dim, ratio, 0)  # noqa: E731
    elif kind == "noise":
        name, ps, bpp, d = "noise (random rows)", prompts, 2 * dim, dim
        fn = lambda ps: torch.randn(len(ps), dim, generator=torch.Generator().manual_seed(1 + seed))  # noqa: E731
    else:
        base, _, alloc = kind.partition("+")
        pk, pr, tr, sh, is_slow = SPECS[base]
        pr = ratio if pr == "r" else pr
        ps = slow if is_slow else prompts
        param_ratios = None
        if alloc == "energy":
            c0 = time.process_time()
            param_ratios = energy_ratios(gradient_energy(model, prompts[:CALIBRATION_PROMPTS], micro_batch_tokens=mbt),
                                         {n: p.numel() for n, p in model.named_parameters()}, pr)
            calib_s = time.process_time() - c0
        proj = make_projector(pk, model, dim, sparse_ratio=pr, transform=tr, sjl_s=sh, param_ratios=param_ratios, seed=seed,
                              dtype=torch.float32 if pk == "exact" else torch.float16)
        name = f"(b) {pk}" + (f" ρ={pr:g}" if pk in ("sparse", "grass") else "") + (
            "" if pk == "exact" else f" {tr}" + (f" s={sh}" if tr == "sjl" else "")) + (
            f" + energy ({CALIBRATION_PROMPTS} calibration prompts, {calib_s:.1f}s)" if alloc else "")
        bpp, d = proj.bytes_per_prompt(), proj.dim
        fn = lambda ps: sketch_prompts(model, ps, proj, micro_batch_tokens=mbt)  # noqa: E731
    with PeakRSS() as mem:
        t, c = time.perf_counter(), time.process_time()
        sk = fn(ps)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    # rates from process CPU time: with one torch thread it is the compute itself, and unlike wall time it does
    # not grow when other jobs share the cores (a 2-core machine under load gives a process ~10-50% of a core)
    dt = cpu if a["clock"] == "cpu" else wall
    row = dict(method=name, key=kind, prompts=len(ps), seconds=dt, wall_s=wall, cpu_s=cpu, prompts_per_s=len(ps) / dt,
               tokens_per_s=all_tokens(ps) / dt, peak_rss_mb=mem.delta / 2**20, bytes_per_prompt=bpp, dim=d)
    return row, n_params, torch.get_num_threads(), (None if sk is None else sk.float())


def cosines(x: torch.Tensor) -> torch.Tensor:
    """[n, n] cosine similarities of the rows (float64)."""
    x = x.double()
    x = x / x.norm(dim=1, keepdim=True)
    return x @ x.T


def cos_mae(sketch: torch.Tensor, exact_cos: torch.Tensor) -> float:
    """Mean |cos(sketch_i, sketch_j) − cos(g_i, g_j)| over off-diagonal pairs of the sketch's first rows."""
    n = sketch.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    return float((cosines(sketch) - exact_cos[:n, :n]).abs()[off].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="20m")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--slow-prompts", type=int, default=4, help="prompts for the dense-matrix methods and reference")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--resp-len", type=int, default=96)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--workload", choices=("random", "families"), default="families",
                    help="prompts: 'families' (groups of 4 sharing vocabulary and answer endings: informative cosines) "
                         "or 'random' uniform tokens (true cosines ≈ 0: cos MAE cannot separate a sketch from noise)")
    ap.add_argument("--ratio", type=float, default=0.1, help="sparse ratio for grass/sparse/reference")
    ap.add_argument("--micro-batch-tokens", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="rates from process CPU time (default; robust to other jobs, meaningful with 1 thread) or wall")
    ap.add_argument("--kinds", default="grass,grass-s1,grass-s4,grass-r25,grass-r50,sparse,sparse-gauss,dense,"
                                        "grass+energy,sparse+energy,reference,noise",
                    help=f"comma list of {', '.join(SPECS)} (any of them +energy), reference, noise (exact always runs, "
                         "for cos MAE)")
    ap.add_argument("--mae-seeds", type=int, default=1,
                    help="projector seeds the cos MAE is averaged over (rates: seed 0 only); 28 prompt pairs of one "
                         "seed move it by about ±0.002")
    ap.add_argument("--repeats", type=int, default=1,
                    help="timing rounds: every method is timed once per round, rounds interleaved (so drift of the "
                         "machine hits every method alike); × plain is the median over rounds of the ratio to that "
                         "round's plain run, with its min–max. A single round moved a method by up to ±0.2 on a shared VM")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "sketch.json")
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error(f"--repeats must be ≥ 1, got {a.repeats}")
    if a.threads:
        torch.set_num_threads(a.threads)
    kinds = ["plain", "backbone", "exact"] + [k.strip() for k in a.kinds.split(",")
                                              if k.strip() and k.strip() not in ("exact", "backbone")]
    n_params = None
    rows: list[dict] = []
    exact_cos = None
    # each method in a fresh process: peak RSS growth is then that method's own, not what earlier ones left
    ctx = multiprocessing.get_context("spawn")
    for k in kinds:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            row, n_params, threads, sk = ex.submit(run_one, k, vars(a)).result()
        if k == "exact":
            exact_cos = cosines(sk)
            off = ~torch.eye(exact_cos.shape[0], dtype=torch.bool)
            print(f"  exact cosines: mean |cos| {float(exact_cos[off].abs().mean()):.4f} over off-diagonal pairs "
                  f"({a.workload} workload)", flush=True)
        row["cos_mae"] = None if sk is None or exact_cos is None or sk.shape[0] < 2 else cos_mae(sk, exact_cos)
        if row["cos_mae"] is not None and k not in ("exact", "reference") and a.mae_seeds > 1:
            maes = [row["cos_mae"]]
            for seed in range(1, a.mae_seeds):  # the same method with other projector seeds: fidelity only
                with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
                    maes.append(cos_mae(ex.submit(run_one, k, vars(a), seed).result()[3], exact_cos))
            row.update(cos_mae=float(np.mean(maes)), cos_mae_std=float(np.std(maes)), cos_mae_seeds=maes)
        row["rounds_s"] = [row["seconds"]]
        rows.append(row)
        mae = "" if row["cos_mae"] is None else f", cos MAE {row['cos_mae']:.4f}" + (
            f" ± {row['cos_mae_std']:.4f} ({a.mae_seeds} seeds)" if "cos_mae_std" in row else "")
        print(f"  {row['method']}: {row['seconds']:.1f}s on {row['prompts']} prompts{mae}", flush=True)
    for rnd in range(1, a.repeats):  # timing only: the sketches (hence cos MAE) are the same bits every round
        for k, row in zip(kinds, rows):
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
                row["rounds_s"].append(ex.submit(run_one, k, vars(a)).result()[0]["seconds"])
        print(f"  round {rnd + 1}/{a.repeats}: " + ", ".join(f"{k} {r['rounds_s'][-1]:.1f}s" for k, r in zip(kinds, rows)),
              flush=True)
    batch = build(vars(a))[1]
    plain_rate = all_tokens(batch) / np.asarray(rows[0]["rounds_s"])  # [repeats] tokens/s of plain, per round
    ref = next((r for r in rows if r["method"].startswith("(c)")), None)
    for r in rows:
        tok = all_tokens(batch[: r["prompts"]])
        ratios = tok / np.maximum(np.asarray(r["rounds_s"]), 1e-9) / plain_rate  # [repeats] × plain, per round
        r["seconds"] = float(np.median(r["rounds_s"]))
        r["prompts_per_s"], r["tokens_per_s"] = r["prompts"] / r["seconds"], tok / r["seconds"]
        r["vs_plain"], r["vs_plain_range"] = float(np.median(ratios)), [float(ratios.min()), float(ratios.max())]
    for r in rows:
        r["vs_reference"] = r["prompts_per_s"] / ref["prompts_per_s"] if ref else None

    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"sketch benchmark — {a.model} ({n_params / 1e6:.1f}M params), dim {a.dim}, "
                      f"{threads} thread(s), {a.clock} clock; {a.prompts} prompts × {a.k} responses, "
                      f"{all_tokens(batch)} tokens"
                      + (f"; medians of {a.repeats} interleaved rounds" if a.repeats > 1 else ""))
    fmt_x = lambda r: f"{r['vs_plain']:.2f}" + (  # noqa: E731
        f" ({r['vs_plain_range'][0]:.2f}–{r['vs_plain_range'][1]:.2f})" if a.repeats > 1 else "")
    fmt_mae = lambda r: "" if r["cos_mae"] is None else f"{r['cos_mae']:.4f}" + (  # noqa: E731
        f" ± {r['cos_mae_std']:.4f}" if "cos_mae_std" in r else "")
    for c in ("method", "prompts", "s", "prompts/s", "tokens/s", "× (a)", "× (c)", "cos MAE", "peak RSS MB",
              "bytes/prompt"):
        tab.add_column(c, justify="left" if c == "method" else "right")
    for r in rows:
        tab.add_row(r["method"], str(r["prompts"]), f"{r['seconds']:.1f}", f"{r['prompts_per_s']:.3f}",
                    f"{r['tokens_per_s']:.0f}", fmt_x(r),
                    "" if r["vs_reference"] is None else f"{r['vs_reference']:.1f}", fmt_mae(r),
                    f"{r['peak_rss_mb']:.0f}", f"{r['bytes_per_prompt']:,}")
    Console(width=200).print(tab)
    print("\n| method | prompts | s | prompts/s | tokens/s | × (a) | × (c) | cos MAE | peak RSS MB | bytes/prompt |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        vc = "" if r["vs_reference"] is None else f"{r['vs_reference']:.1f}"
        print(f"| {r['method']} | {r['prompts']} | {r['seconds']:.1f} | {r['prompts_per_s']:.3f} | {r['tokens_per_s']:.0f} "
              f"| {fmt_x(r)} | {vc} | {fmt_mae(r)} | {r['peak_rss_mb']:.0f} | {r['bytes_per_prompt']:,} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(args={k: str(v) for k, v in vars(a).items()}, n_params=n_params, threads=threads,
                cpu=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                load_avg=os.getloadavg(), torch=torch.__version__, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    a.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
