"""Paper-scale cost model: GPU-hours per stage and to reach full data's final accuracy, with the reference
sketch and with ours, from costs measured here.

Measured in this process (CPU here; the same script measures a GPU when one is visible), on one model:
  gen     tokens/s of sampling (HF `generate`, T = 0.5, a batch of prompts)
  fwdbwd  tokens/s of a plain teacher-forced forward+backward (what a GRPO update costs per token)
  sketch  tokens/s of `sketch_prompts` per projector (grass = the default, sparse:gaussian = the paper's recipe)
Their ratios sketch/fwdbwd are what transfers to another scale (both are forward+backward-shaped GEMM work);
generation does not transfer from a CPU (on a GPU it is memory-bound), so the GPU's generation and training
throughputs are explicit inputs (--gpu-gen-tok-s, --gpu-mfu, --gpu-tflops), to be replaced by measured ones.

The paper's recipe (PAPER.md §6–7): pool 55k prompts, K = 8 offline responses each, Qwen2.5-1.5B, 10 GRPO steps
per stage of 128 prompts × 8 responses, full data reaches its 1k-step accuracy ... CROPI reaches full data's
1.75k-step accuracy in ~660 steps (2.66×). Per stage CROPI re-scores the whole pool. The reference sketch's cost
is the paper's own measurement (~1.5 s per prompt at 1.5B, ratio 0.1, one prompt at a time).

    .venv/bin/python -m benchmarks.cost_model                 # measure on the 20M model, print the model
    .venv/bin/python -m benchmarks.cost_model --model tiny    # quick
    # a measured setting: the share of the pool it sketches per scoring stage, how often it re-scores, its speed-up
    .venv/bin/python -m benchmarks.cost_model --scored-share 0.3 --rescore-rate 0.5 --default-step-speedup 2.0
Writes benchmarks/out/cost_model.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.sketch import MODELS, all_tokens, build, plain_fwd_bwd
from cropi_core.influence import sketch_prompts
from cropi_core.projection import make_projector

OUT = Path(__file__).parent / "out"


def measure(a: argparse.Namespace) -> dict:
    args = dict(model=a.model, threads=a.threads, prompts=a.prompts, k=a.k, prompt_len=32, resp_len=a.resp_len)
    model, prompts = build(args)
    toks = all_tokens(prompts)
    out: dict = {"model": a.model, "params": sum(p.numel() for p in model.parameters()), "tokens": toks}

    def rate(fn) -> float:
        fn(prompts[:1])  # warm-up
        t = time.perf_counter()
        fn(prompts)
        return toks / (time.perf_counter() - t)

    out["fwdbwd_tok_s"] = rate(lambda ps: plain_fwd_bwd(model, ps, 4096))
    for spec in a.projectors:
        kind, _, tr = spec.partition(":")
        proj = make_projector(kind, model, a.dim, sparse_ratio=a.ratio, transform=tr or "sjl")
        out[f"sketch_tok_s[{spec}]"] = rate(lambda ps: sketch_prompts(model, ps, proj, micro_batch_tokens=4096))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (a.prompts, 32), generator=g)
    with torch.no_grad():
        model.generate(ids[:1], max_new_tokens=4, do_sample=True, temperature=0.5, pad_token_id=0)
        t = time.perf_counter()
        model.generate(ids, max_new_tokens=a.resp_len, min_new_tokens=a.resp_len, do_sample=True, temperature=0.5,
                       pad_token_id=0)
        out["gen_tok_s"] = a.prompts * a.resp_len / (time.perf_counter() - t)
    return out


def predict(m: dict, a: argparse.Namespace) -> dict:
    """GPU-hours of the paper's recipe from the measured sketch/fwd+bwd ratios and the GPU assumptions."""
    P = 1.54e9  # Qwen2.5-1.5B parameters
    seq = a.prompt_tokens + a.response_tokens  # tokens per teacher-forced sequence
    train_flops_tok = 6 * P  # forward + backward (weights and activations)
    gpu_flops = a.gpu_tflops * 1e12 * a.gpu_mfu
    fwdbwd_s_tok = train_flops_tok / gpu_flops
    step_tokens = a.prompts_per_step * a.k * seq
    # a GRPO step: generate the group, then policy fwd+bwd and the reference model's forward (2P per token)
    step_s = a.prompts_per_step * a.k * a.response_tokens / a.gpu_gen_tok_s + step_tokens * (6 + 2) * P / gpu_flops
    pool_tokens = a.pool * a.k * seq
    offline_s = a.pool * a.k * a.response_tokens / a.gpu_gen_tok_s + pool_tokens * 2 * P / gpu_flops  # + log β
    ours = {k.split("[")[1][:-1]: m["fwdbwd_tok_s"] / v for k, v in m.items() if k.startswith("sketch_tok_s[")}
    scoring = {f"ours: {spec} (time {r:.2f}× fwd+bwd)": pool_tokens * fwdbwd_s_tok * r for spec, r in ours.items()}
    scoring["reference (paper, 1.5 s/prompt)"] = a.pool * a.reference_s_per_prompt
    E = a.steps_per_stage
    full_steps = a.full_steps
    cropi_steps = full_steps / a.step_speedup
    rows = []
    # (share of the pool sketched when a stage scores, share of stages that score, step speed-up, label)
    settings = [(1.0, 1.0, a.step_speedup, 0.0, "whole pool, every stage (paper)"),
                (a.candidate_fraction, 1.0, a.step_speedup, 0.0, f"{a.candidate_fraction:.0%} candidates, every stage")]
    if a.scored_share is not None:  # a measured setting (the new default): its share, re-scoring rate and speed-up
        settings.append((a.scored_share, a.rescore_rate, a.default_step_speedup or a.step_speedup, a.check_share,
                         f"{a.scored_share:.0%} of the pool, {a.rescore_rate:.0%} of stages"
                         + (f", {a.default_step_speedup:g}× steps" if a.default_step_speedup else "")))
    check_s = pool_tokens * 2 * P / gpu_flops  # one forward over every pool response (a drift check's unit)
    for name, sc in scoring.items():
        for frac, rate, speedup, check, label in settings:
            stages = full_steps / speedup / E
            # stage 0 always scores; later stages score at `rate` and, with a drift check, pay its forward pass
            later = max(0.0, stages - 1)
            scored_stages = 1 + rate * later
            total_h = (scored_stages * sc * frac + later * check * check_s + stages * E * step_s) / 3600
            rows.append({"sketch": name, "scored per stage": label, "scoring h/stage": sc * frac / 3600,
                         "training h/stage": E * step_s / 3600, "stage h": total_h / stages,
                         "CROPI h to A* (excl. offline)": total_h,
                         "CROPI h to A* (incl. offline)": total_h + offline_s / 3600})
    # scoring budget per stage at which CROPI only breaks even with full data on the clock (excl. offline)
    breakeven_h = full_steps * step_s / 3600 / (cropi_steps / E) - E * step_s / 3600
    # the measured setting: the largest share of later stages that may re-score and still break even, per sketch
    max_rate = {}
    if a.scored_share is not None:
        stages = full_steps / (a.default_step_speedup or a.step_speedup) / E
        later = max(1e-9, stages - 1)
        for name, sc in scoring.items():
            room = full_steps * step_s - later * a.check_share * check_s - stages * E * step_s - sc * a.scored_share
            max_rate[name] = room / (later * sc * a.scored_share)
    return {"full_h_to_A*": full_steps * step_s / 3600, "breakeven_scoring_h_per_stage": breakeven_h,
            "max_rescore_rate": max_rate, "offline_h": offline_s / 3600, "step_s": step_s,
            "cropi_steps": cropi_steps, "rows": rows, "sketch_vs_fwdbwd": ours}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="20m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--resp-len", type=int, default=96)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--projectors", nargs="+", default=["grass", "sparse", "sparse:gaussian"])
    ap.add_argument("--sketch-time", nargs="+", default=None, metavar="SPEC=RATIO",
                    help="sketch time per token as a multiple of a plain fwd+bwd, e.g. grass=0.93 (measured by "
                         "benchmarks/sketch.py: 1 / its '× plain'); nothing is measured then")
    ap.add_argument("--from-sketch", type=Path, default=None,
                    help="take the sketch/fwd+bwd ratios from a benchmarks/sketch.py JSON instead of measuring")
    # the paper's recipe
    ap.add_argument("--pool", type=int, default=55_000)
    ap.add_argument("--prompt-tokens", type=int, default=150)
    ap.add_argument("--response-tokens", type=int, default=700, help="mean response length (max 2048)")
    ap.add_argument("--prompts-per-step", type=int, default=128)
    ap.add_argument("--steps-per-stage", type=int, default=10)
    ap.add_argument("--full-steps", type=float, default=1750, help="steps full data needs to reach A*")
    ap.add_argument("--step-speedup", type=float, default=2.66, help="CROPI's step-level speed-up (paper)")
    ap.add_argument("--candidate-fraction", type=float, default=0.3, help="share of the pool re-scored per stage")
    ap.add_argument("--scored-share", type=float, default=None,
                    help="measured share of the pool a scoring stage sketches (the cascade's candidates / pool)")
    ap.add_argument("--rescore-rate", type=float, default=1.0,
                    help="measured share of stages after the first that re-score (1 = every stage; drift: fired/checked)")
    ap.add_argument("--check-share", type=float, default=0.0,
                    help="share of the pool's responses a drift check runs a forward over before each later stage "
                         "(selection.rescore drift: the previous selection, i.e. the selection ratio)")
    ap.add_argument("--default-step-speedup", type=float, default=None,
                    help="step speed-up measured for that setting (default: --step-speedup)")
    ap.add_argument("--reference-s-per-prompt", type=float, default=1.5)
    # GPU assumptions (replace with measured ones)
    ap.add_argument("--gpu-tflops", type=float, default=989.0, help="bf16 dense peak (H100/H200 SXM)")
    ap.add_argument("--gpu-mfu", type=float, default=0.35, help="model FLOPs utilisation of fwd+bwd")
    ap.add_argument("--gpu-gen-tok-s", type=float, default=20_000.0, help="batched sampling tokens/s (vLLM, 1.5B)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.sketch_time:  # time ratios given directly (e.g. docs/sketch-engine.md's benchmarks/sketch.py medians): nothing measured
        m = {"model": "given", "params": float("nan"), "fwdbwd_tok_s": 1.0, "gen_tok_s": float("nan")}
        for item in a.sketch_time:
            spec, _, r = item.partition("=")
            m[f"sketch_tok_s[{spec}]"] = 1.0 / float(r)
    elif a.from_sketch:  # ratios from a benchmarks/sketch.py run (same machine, one run) instead of measuring here
        rows = {r["key"]: r for r in json.loads(a.from_sketch.read_text())["rows"] if r.get("key")}
        plain = next(r for r in json.loads(a.from_sketch.read_text())["rows"] if r["method"].startswith("(a)"))
        keymap = {"grass": "grass", "sparse": "sparse", "sparse:gaussian": "sparse-gauss"}
        m = {"model": f"{a.from_sketch.name}", "params": json.loads(a.from_sketch.read_text())["meta"]["n_params"],
             "fwdbwd_tok_s": plain["tokens_per_s"], "gen_tok_s": float("nan")}
        for spec in a.projectors:
            if keymap.get(spec) in rows:
                m[f"sketch_tok_s[{spec}]"] = rows[keymap[spec]]["tokens_per_s"]
    else:
        m = measure(a)
    pred = predict(m, a)
    OUT.mkdir(parents=True, exist_ok=True)
    measured = ("Sketch time per token given (--sketch-time), not measured" if a.sketch_time else
                f"Measured on `{a.model}` ({m['params'] / 1e6:.1f}M params, {a.threads} CPU thread(s)): fwd+bwd "
                f"{m['fwdbwd_tok_s']:.0f} tok/s, generation {m['gen_tok_s']:.0f} tok/s (not used: GPU assumption below)")
    lines = [f"# Cost model: the paper's recipe on one GPU\n",
             f"{measured}; sketch time per token as a "
             "multiple of a plain fwd+bwd: " + ", ".join(f"{k} {v:.2f}×" for k, v in pred["sketch_vs_fwdbwd"].items()) + ".\n",
             f"GPU assumptions: {a.gpu_tflops:g} TFLOPS × MFU {a.gpu_mfu:g}, sampling {a.gpu_gen_tok_s:g} tok/s. Recipe: "
             f"pool {a.pool}, K = {a.k}, {a.prompt_tokens}+{a.response_tokens} tokens per sequence, "
             f"{a.prompts_per_step} prompts × {a.k} per step ({pred['step_s']:.0f} s/step), {a.steps_per_stage} steps "
             f"per stage; full data reaches A* in {a.full_steps:g} steps = **{pred['full_h_to_A*']:.1f} GPU-h**; CROPI "
             f"in {pred['cropi_steps']:.0f} steps ({a.step_speedup}×); offline rollouts once: {pred['offline_h']:.1f} GPU-h.\n",
             "| sketch | scored per stage | scoring h/stage | training h/stage | CROPI GPU-h to A* excl. offline | "
             "incl. offline | wall speed-up vs full (excl. / incl.) |", "|---|---|---|---|---|---|---|"]
    for r in pred["rows"]:
        x, i = r["CROPI h to A* (excl. offline)"], r["CROPI h to A* (incl. offline)"]
        lines.append(f"| {r['sketch']} | {r['scored per stage']} | {r['scoring h/stage']:.2f} | "
                     f"{r['training h/stage']:.3f} | {x:.1f} | {i:.1f} | {pred['full_h_to_A*'] / x:.2f}× / "
                     f"{pred['full_h_to_A*'] / i:.2f}× |")
    lines.append(f"\nBreak-even: CROPI matches full data on the clock (excl. offline) only if scoring costs at most "
                 f"**{pred['breakeven_scoring_h_per_stage']:.2f} GPU-h per stage** "
                 f"({pred['breakeven_scoring_h_per_stage'] * 3600 / a.pool * 1000:.1f} ms per pool prompt).")
    for name, r in pred["max_rescore_rate"].items():
        lines.append(f"Measured setting with {name}: it breaks even with full data (excl. offline) while at most "
                     f"**{max(0.0, r):.1%}** of the later stages re-score" + (" (not even with none)" if r < 0 else "") + ".")
    md = "\n".join(lines) + "\n"
    (OUT / "cost_model.md").write_text(md)
    (OUT / "cost_model.json").write_text(json.dumps({"measured": m, "predicted": pred, "args": {k: str(v) for k, v in vars(a).items()}}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
