"""Less scoring work per stage: what each reduction costs in ranking quality, measured on a finished `cropi run`.

For every stage m of the run (its artifacts are read from storage; nothing is retrained):
  (a) K' < K: sketch the pool again at θ_m with only the first K' of the K stored responses per prompt (advantages
      from those K'; a prompt whose K' rewards are all equal becomes unscorable), POPI against the same
      validation sketches; precision@ratio of the resulting top set against the full-K one, and the sketch time
      relative to the full-K sketch (both timed here, process CPU time).
  (b) candidates: re-score only what `influence.candidates = c` would sketch — a seeded draw of ⌈c × selection
      size⌉ scorable pool prompts plus the previous stage's selection (`cropi_core.selection.draw_candidates`, the
      pipeline's own draw); the top set within those candidates vs the top set of the full re-scoring (scores read
      from the stage's own full sketch, so the comparison costs nothing to run), and the share of the scorable
      pool sketched (the cost, as unscorable prompts are never sketched).
  (c) all-equal offline rewards: prompts whose K offline rewards are all equal have A ≡ 0 and are never sketched
      (influence.py) — the share of the pool this skips, read from the rollouts.

    .venv/bin/python -m benchmarks.reductions --storage /tmp/store --run tiny   # a finished run's name
Writes <run folder>/reductions.{md,json}.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import typer

from cropi_core.config import load_config
from cropi_core.influence import sketch_prompts
from cropi_core.projection import make_projector
from cropi_core.rollout.types import PromptRollouts
from cropi_core.scoring import fuse_ranks, popi, top_count
from cropi_core.selection import draw_candidates

app = typer.Typer(add_completion=False)


def _top(fused: np.ndarray, n: int) -> set[int]:
    ok = np.where(np.isfinite(fused))[0]
    return set(ok[np.argsort(-fused[ok], kind="stable")[:n]].tolist())


def _fused(pool: np.ndarray, vals: list[np.ndarray], ratio: float, k_rrf: float) -> np.ndarray:
    return fuse_ranks([popi(pool, v) for v in vals], top_ratio=ratio, k_rrf=k_rrf)


def _first_k(p: PromptRollouts, k: int) -> PromptRollouts:
    return PromptRollouts(p.prompt_ids, p.response_ids[:k], p.behavior_logprobs[:k], p.rewards[:k], problem_id=p.problem_id)


@app.command()
def main(
    storage: str = typer.Option(..., help="storage root of the finished run"),
    run: str = typer.Option(..., help="run name (its runs/<name>/summary.json and config are read)"),
    config: Path = typer.Option(None, help="the run's config YAML (default: the embedded default)"),
    k_prime: list[int] = typer.Option([2, 4], help="responses per prompt to try for (a)"),
    candidates: list[float] = typer.Option([2.0, 3.0, 5.0], help="candidate multiples of the selection size for (b)"),
    seeds: int = typer.Option(5, help="seeds for the random candidate subsets"),
    stages: int = typer.Option(None, help="only the first N stages (K' sketches cost a pass over the pool each)"),
) -> None:
    from tasks.artifacts import load_checkpoint, param_ratios, pass_rates, read_rollouts
    from tasks.common import get_store, run_dir
    from tasks.recipes import behavior_temperature

    torch.set_num_threads(1)
    cfg = load_config(config)
    cfg.storage.root = storage
    cfg.name = run
    folder = run_dir(cfg)
    summary = json.loads((folder / "summary.json").read_text())
    store = get_store(cfg)
    arr = lambda key: store.read_array(key, "grads").astype(np.float32)  # noqa: E731
    inf = cfg.influence
    pool = read_rollouts(store, summary["pool_rollouts"])
    rates = pass_rates(store, summary["pool_rollouts"])
    n_pool = len(pool)
    n_sel = top_count(cfg.selection.ratio, n_pool)
    skipped = float(np.mean((rates == 0) | (rates == 1)))
    scorable = np.array([p.scorable for p in pool])  # bool[N]
    rows: list[dict] = []
    prev: set[int] | None = None
    ckpts = [summary["base_checkpoint"]] + [s["checkpoint"] for s in summary["stages"]]
    for m, st in enumerate(summary["stages"][: stages or None]):
        names = sorted(k for k in st["grads"] if k != "pool")
        vals = [arr(st["grads"][n]) for n in names]
        full = _fused(arr(st["grads"]["pool"]), vals, cfg.selection.ratio, cfg.selection.k_rrf)
        top = _top(full, n_sel)
        row: dict = {"stage": m, "pool": n_pool, "selected": n_sel, "unscorable_offline": skipped}
        # (b) candidate subsets (+ the previous stage's selection)
        for c in candidates:
            precs, shares = [], []
            for s in range(seeds):
                cand = draw_candidates(scorable, math.ceil(c * n_sel), sorted(prev or ()), seed=(s, m))
                masked = np.where(np.isin(np.arange(n_pool), cand), full, -np.inf)
                precs.append(len(_top(masked, n_sel) & top) / max(1, len(top)))
                shares.append(float(scorable[cand].sum()) / max(1, int(scorable.sum())))
            row[f"P(candidates {c:g}x)"] = float(np.mean(precs))
            row[f"scored share {c:g}x"] = float(np.mean(shares))  # of the scorable pool
        # (a) K' < K responses
        model, _ = load_checkpoint(cfg, store.ref(ckpts[m]))
        # the stage's own projection: the validation sketches were made with its calibration's masks, so a pool
        # re-sketch must use them too (without them "recomputed K" agreed with the stored top set only 56%)
        calib = next((k for k in store.manifest(st["grads"]["pool"]).parents
                      if store.manifest(k).kind == "calibration"), None)
        ratios = param_ratios(cfg, model, store.ref(calib)) if calib else None
        mk = lambda: make_projector(inf.projector, model, inf.sketch_dim, sparse_ratio=inf.sparse_ratio,  # noqa: E731
                                    transform=inf.transform, sjl_s=inf.sjl_s, seed=inf.seed,
                                    dtype=getattr(torch, inf.dtype), param_ratios=ratios)
        t = time.process_time()
        base_sk = sketch_prompts(model, pool, mk(), aggregation=inf.aggregation,
                                 temperature=behavior_temperature(cfg)).float().numpy()
        base_s = time.process_time() - t
        base_top = _top(_fused(base_sk, vals, cfg.selection.ratio, cfg.selection.k_rrf), n_sel)
        row["P(recomputed K, vs stored)"] = len(base_top & top) / max(1, len(top))
        for kp in k_prime:
            t = time.process_time()
            sk = sketch_prompts(model, [_first_k(p, kp) for p in pool], mk(), aggregation=inf.aggregation,
                                temperature=behavior_temperature(cfg)).float().numpy()
            row[f"time K'={kp} / K"] = (time.process_time() - t) / base_s
            row[f"P(K'={kp})"] = len(_top(_fused(sk, vals, cfg.selection.ratio, cfg.selection.k_rrf), n_sel) & top) / max(1, len(top))
        rows.append(row)
        prev = set(store.read_json(st["selection"], "selection.json")["indices"])
        typer.echo(json.dumps(row))
    cols = list(rows[0]) if rows else []
    md = [f"# Scoring reductions on run `{run}` (K = {cfg.rollout.num_generations}, projector {inf.projector})\n",
          "precision = |top set with the reduction ∩ top set of the full re-scoring| / |top set|; time = process CPU.\n",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |" for r in rows]
    (folder / "reductions.md").write_text("\n".join(md) + "\n")
    (folder / "reductions.json").write_text(json.dumps(rows, indent=1))
    typer.echo("\n".join(md))


if __name__ == "__main__":
    app()
