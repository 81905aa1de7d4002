"""`curriculum(config)`: the whole CROPI run as one Prefect flow.

datasets → stage-0 checkpoint (bootstrap of the embedded model) → offline rollouts of β (pool: K = rollout.num_generations,
each validation set: K = rollout.num_generations_val) → evaluation of θ_0 → for m in stages: `stage(m)` subflow → final report.
Every task is keyed by its storage artifact key, so a rerun recomputes nothing and a killed run resumes at the
first missing artifact (or gradient chunk).
"""

from __future__ import annotations

import json
import time
from typing import Any

from prefect import flow

from cropi_core.config import RunConfig
from flows.outputs import RunSummary, StageOutputs, Tally
from flows.runtime import Tracker, computed_seconds, failed_attempts, for_run, task_runner
from flows.stage import SCORED
from flows.stage import stage as stage_flow
from tasks import artifacts as A
from tasks import bootstrap as T_boot
from tasks import dataset as T_data
from tasks import evaluate as T_eval
from tasks import rollouts as T_roll
from tasks import selection as T_sel
from tasks.common import get_store, log, run_dir


@flow(name="cropi-curriculum", flow_run_name="curriculum-{config.name}")
def curriculum(config: RunConfig) -> RunSummary:
    """Run the multi-stage CROPI curriculum described by `config`; returns refs, per-stage outputs and counts."""
    cfg = config
    t0 = time.perf_counter()
    tr = Tracker(cfg)
    names = A.set_names(cfg)
    pool = tr.submit(T_data.dataset, cfg=cfg, role="pool", name="pool")
    vals = {n: tr.submit(T_data.dataset, cfg=cfg, role="val", name=n) for n in names["val"]}
    tests = {n: tr.submit(T_data.dataset, cfg=cfg, role=role, name=n)
             for role in ("test_targeted", "test_untargeted") for n in names[role]}

    base = tr.submit(T_boot.base_model, cfg=cfg)
    roll_pool = tr.submit(T_roll.rollouts, cfg=cfg, ckpt=base, data=pool, k=cfg.rollout.num_generations, label="pool")
    roll_val = {n: tr.submit(T_roll.rollouts, cfg=cfg, ckpt=base, data=d, k=cfg.rollout.num_generations_val, label=n.replace("/", "-"))
                for n, d in vals.items()}
    evals0 = {n: tr.submit(T_eval.evaluate, cfg=cfg, ckpt=base, data=d, name=n, stage=0) for n, d in tests.items()}

    tests_r = {n: f.result() for n, f in tests.items()}
    pool_r, roll_pool_r = pool.result(), roll_pool.result()
    roll_val_r = {n: f.result() for n, f in roll_val.items()}
    vals_r = {n: f.result() for n, f in vals.items()}
    ckpt = base.result()
    if cfg.runner.kind == "local":
        # θ_0's evaluations run on this flow's runner, stage 0 on its own: on one machine the two would share the
        # cores, and each task's recorded compute seconds (what `cropi compare` prices) would include the other's
        # work (stage 0's sketch was priced ≈ 1.9× its cost alone). On Ray they run on workers of their own.
        for f in evals0.values():
            f.result()
    stages: list[StageOutputs] = []
    counts = Tally()
    runner = task_runner(cfg)
    fixed = None
    behavior_pool, behavior_val = roll_pool_r, roll_val_r  # β's rollouts, until a refresh replaces them
    refreshes: list[dict[str, Any]] = []
    rescores: list[dict[str, Any]] = []
    schedule = rescore_schedule(cfg)
    for m in range(cfg.train.stages):
        if m > 0 and cfg.influence.refresh_ess > 0 and cfg.selection.method in SCORED and fixed is None:
            behavior_pool, behavior_val, ref = maybe_refresh(tr, cfg, m, ckpt, pool_r, vals_r, behavior_pool,
                                                               behavior_val)
            refreshes.append(ref)
        drift = None
        if m > 0 and schedule == "drift" and not gate_quiet(cfg, stages[-1]):
            drift, rec = drift_check(tr, cfg, m, ckpt, behavior_pool, stages[-1].selection)
            rescores.append(rec)
            fixed = None if rec["rescored"] else stages[-1].selection
        out = stage_flow.with_options(task_runner=runner)(
            config=cfg, stage=m, ckpt=ckpt, pool=pool_r, pool_rollouts=behavior_pool, val_rollouts=behavior_val,
            tests=tests_r, fixed_selection=fixed, previous_selection=stages[-1].selection if stages else None,
            drift=drift)
        counts = counts + out.counts
        if rescores and rescores[-1]["stage"] == m and rescores[-1]["rescored"]:
            rescores[-1].update(reliability=out.reliability, rescore_reliability=cfg.selection.rescore_reliability,
                                kept_unreliable=out.kept_unreliable)
        stages.append(out)
        ckpt = out.checkpoint
        if (schedule == "once" and fixed is None) or gate_quiet(cfg, out):
            fixed = out.selection

    from tasks.reports import final_report

    summary = RunSummary(name=cfg.name, base_checkpoint=base.result(), final_checkpoint=ckpt, pool=pool_r,
                         pool_rollouts=roll_pool_r, val_rollouts=roll_val_r, tests=tests_r,
                         evals0={n: f.result() for n, f in evals0.items()}, stages=stages, refreshes=refreshes,
                         rescores=rescores)
    summary.report = str(final_report(cfg, summary))
    summary.counts = counts + tr.tally()
    summary.flow_seconds = time.perf_counter() - t0
    return summary


def gate_quiet(cfg: RunConfig, out: StageOutputs) -> bool:
    """Stage `out` ran the conflict gate (selection.gate_probe) and it did not fire: its learnability selection is
    kept for every later stage (nothing in the pool conflicted with the target at θ_0, so no re-scoring). A stage
    whose probe ranking was too unreliable to decide on (selection.rescore_reliability) took no gate decision."""
    from tasks.selection import gate_fires

    return "gate" in out.shaping and not out.kept_unreliable and not gate_fires(cfg, out.shaping["gate"])


def rescore_schedule(cfg: RunConfig) -> str:
    """When the pool is re-scored: "every" stage (the paper), "once" (stage 0 only: method influence_once or
    selection.rescore once) or "drift" (`drift_check`); "every" for methods that score nothing."""
    if cfg.selection.method == "influence_once":
        return "once"
    return cfg.selection.rescore if cfg.selection.method in SCORED else "every"


def drift_check(tr: Tracker, cfg: RunConfig, m: int, ckpt, behavior_pool, previous) -> tuple[Any, dict[str, Any]]:
    """Before stage m ≥ 1 with selection.rescore = drift: θ_m's mean ESS/K and token KL on the stored responses of
    the previous stage's selection (a `health` artifact); re-score when ESS/K < drift_ess or KL > drift_kl.
    The selected prompts are the ones θ moved on, so their weights degenerate first; and when the check keeps
    the selection, this artifact IS the stage's own health report (same key): the check costs nothing more than a
    forward over ratio × pool responses, only when it fires. Returns (the health ref, the decision's record)."""
    from cropi_core.selection import drifted

    s = cfg.selection
    h = tr.submit(T_sel.health, cfg=cfg, ckpt=ckpt, pool_rollouts=behavior_pool, sel=previous, stage=m).result()
    meta = A.meta_of(cfg, h)
    ess, kl = meta.get("ess_frac"), meta.get("kl")
    fire = drifted(ess, kl, s.drift_ess, s.drift_kl)
    log(f"stage {m}: ESS/K {ess:.3f}, KL {kl:.4f} of θ_{m} on the previous selection → " + ("re-scoring the pool" if fire else
        f"keeping the previous selection (thresholds ESS/K < {s.drift_ess}" +
        (f", KL > {s.drift_kl}" if s.drift_kl is not None else "") + ")"))
    return h, {"stage": m, "ess_frac": ess, "kl": kl, "drift_ess": s.drift_ess, "drift_kl": s.drift_kl,
               "rescored": fire, "health": h.key}


def maybe_refresh(tr: Tracker, cfg: RunConfig, m: int, ckpt, pool, vals: dict, behavior_pool, behavior_val):
    """The behavior refresh before stage `m` (`influence.refresh_ess`): mean ESS/K of θ_m on every pool prompt's
    stored responses; below the threshold, new offline rollouts of the pool and of each validation set sampled
    from θ_m (cached artifacts whose parent is θ_m). Returns (pool rollouts, val rollouts, a record of the
    decision for the summary)."""
    h = tr.submit(T_sel.pool_health, cfg=cfg, ckpt=ckpt, pool_rollouts=behavior_pool, stage=m).result()
    ess = A.meta_of(cfg, h).get("ess_frac")
    # ("behaviour_checkpoint": the summary.json key as first written, like the stored array behavior_logprobs)
    rec: dict[str, Any] = {"stage": m, "ess_frac": ess, "threshold": cfg.influence.refresh_ess,
                           "behaviour_checkpoint": ckpt.key, "refreshed": False, "health": h.key}
    if ess is None or ess >= cfg.influence.refresh_ess:
        rec["pool_rollouts"] = behavior_pool.key
        return behavior_pool, behavior_val, rec
    pool_f = tr.submit(T_roll.rollouts, cfg=cfg, ckpt=ckpt, data=pool, k=cfg.rollout.num_generations, label=f"pool-refresh-s{m}")
    val_f = {n: tr.submit(T_roll.rollouts, cfg=cfg, ckpt=ckpt, data=d, k=cfg.rollout.num_generations_val,
                          label=f"{n.replace('/', '-')}-refresh-s{m}") for n, d in vals.items()}
    new_pool, new_val = pool_f.result(), {n: f.result() for n, f in val_f.items()}
    rec.update(refreshed=True, pool_rollouts=new_pool.key, val_rollouts={n: r.key for n, r in new_val.items()})
    log(f"stage {m}: behavior refresh (pool ESS/K {ess:.3f} < {cfg.influence.refresh_ess}): offline rollouts "
        f"resampled from checkpoint {ckpt.key[:12]}")
    return new_pool, new_val, rec


def run_curriculum(cfg: RunConfig) -> dict[str, Any]:
    """Run the flow with the configured task runner and write `<run folder>/summary.json`: what its task runs
    computed and reused (from their Prefect states, `Tracker.tally`), the attempts injected or transient faults
    cost (from the computed artifacts' compute records), wall time, and the targeted / untargeted accuracy per
    evaluation step (the report's first table). Returns the JSON-able summary."""
    from tasks.artifacts import metric_label
    from tasks.reports import accuracies, group_rows

    t0 = time.perf_counter()
    out = for_run(curriculum, cfg)(config=cfg)
    seconds = time.perf_counter() - t0
    store = get_store(cfg)
    summary = {
        "name": cfg.name, "seconds": seconds, "flow_seconds": out.flow_seconds, "counts": out.counts.counts(),
        "faults": failed_attempts(store, out.counts.computed), "computed": out.counts.computed,
        "compute_seconds": computed_seconds(store, out.counts.computed),
        "metric": metric_label(cfg), "accuracy": group_rows(accuracies(cfg, out)),
        "final_checkpoint": out.final_checkpoint.key, "base_checkpoint": out.base_checkpoint.key,
        "report": out.report,
        "stages": [{"stage": s.stage, "checkpoint": s.checkpoint.key, "selection": s.selection.key,
                    "selected_ids": A.read_selection(cfg, s.selection)["ids"],
                    "grads": {n: g.key for n, g in s.grads.items()},
                    "scores": s.scores.key if s.scores is not None else None, "reliability": s.reliability,
                    "kept_unreliable": s.kept_unreliable,
                    "shaping": {n: r.key for n, r in s.shaping.items()}} for s in out.stages],
        "pool_rollouts": out.pool_rollouts.key, "val_rollouts": {n: r.key for n, r in out.val_rollouts.items()},
        "refreshes": out.refreshes, "rescores": out.rescores,
    }
    (run_dir(cfg) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
