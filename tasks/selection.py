"""POPI scores, the stage's selection, and off-policy health of the selected prompts."""

from __future__ import annotations

import math

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from cropi_core.config import RunConfig
from storage import ArtifactRef
from tasks.artifacts import (count_by, load_checkpoint, load_problems, pass_rates, ran_on, read_grads, read_rollouts,
                             read_scores, selected_indices)
from tasks.common import GPU_TAG, get_store
from tasks.recipes import RANDOM_METHODS, RECIPES, behavior_temperature, mixes_random, produce

SCORES, SELECTION, HEALTH, POOL_HEALTH, CANDIDATES, PROBE, GATE = (
    RECIPES[k] for k in ("scores", "selection", "health", "pool_health", "candidates", "probe", "gate"))
scores_key, selection_key, health_key, pool_health_key = SCORES.key, SELECTION.key, HEALTH.key, POOL_HEALTH.key


# ---------------------------------------------------------------- candidates (influence.candidates)
@task(name="candidates", task_run_name="candidates-s{stage}", cache_policy=NO_CACHE)
def candidates(cfg: RunConfig, pool_rollouts: ArtifactRef, previous: ArtifactRef | None = None,
               stage: int = 0) -> ArtifactRef:
    """The pool rows the stage sketches: a seeded random draw of ⌈candidates × selection size⌉ scorable prompts
    (fresh each stage) ∪ the previous stage's selection, sorted; every other row is left unscored."""
    def payload(w) -> dict:
        from cropi_core.scoring import top_count
        from cropi_core.selection import draw_candidates, learnability_candidates

        recs = read_rollouts(w.store, pool_rollouts.key)
        scorable = np.array([p.scorable for p in recs])  # the rows sketch_prompts sketches
        prev = selected_indices(cfg, previous) if previous is not None else []
        n_draw = math.ceil(cfg.influence.candidates * top_count(cfg.selection.ratio, len(recs)))
        if cfg.influence.candidates_by == "learnability":
            idx = learnability_candidates(pass_rates(w.store, pool_rollouts.key), scorable, n_draw, prev)
        else:
            idx = draw_candidates(scorable, n_draw, prev, seed=(cfg.selection.seed, stage))
        w.put_json("candidates.json", {"stage": stage, "indices": idx})
        return {"stage": stage, "n": len(idx), "pool": len(recs), "scorable": int(scorable.sum()),
                "drawn": min(n_draw, int(scorable.sum())), "previous": len(prev), "by": cfg.influence.candidates_by,
                "run": cfg.name}

    return produce(CANDIDATES, "candidates", cfg, {"pool_rollouts": pool_rollouts, "previous": previous, "stage": stage},
                   payload)


# ---------------------------------------------------------------- the conflict gate (selection.gate_probe)
@task(name="probe", task_run_name="probe-s{stage}", cache_policy=NO_CACHE)
def probe(cfg: RunConfig, pool_rollouts: ArtifactRef, stage: int = 0) -> ArtifactRef:
    """The pool rows the conflict gate sketches first: a seeded random draw of gate_probe scorable prompts (a
    candidates artifact: the pool sketch over them leaves every other row unscored)."""
    def payload(w) -> dict:
        from cropi_core.selection import draw_candidates

        recs = read_rollouts(w.store, pool_rollouts.key)
        scorable = np.array([p.scorable for p in recs])  # the rows sketch_prompts sketches
        idx = draw_candidates(scorable, cfg.selection.gate_probe, (), seed=(cfg.selection.seed, stage, 4241))
        w.put_json("candidates.json", {"stage": stage, "indices": idx})
        return {"stage": stage, "n": len(idx), "pool": len(recs), "scorable": int(scorable.sum()), "by": "probe",
                "run": cfg.name}

    return produce(PROBE, "probe", cfg, {"pool_rollouts": pool_rollouts, "stage": stage}, payload)


@task(name="gate", task_run_name="gate-s{stage}", cache_policy=NO_CACHE)
def gate(cfg: RunConfig, scores: ArtifactRef, stage: int = 0) -> ArtifactRef:
    """`cropi_core.selection.conflict_gate` on the probe's scores: whether the stage ranks the whole pool by
    influence (fires) or is method learnability's stage (quiet)."""
    def payload(w) -> dict:
        from cropi_core.selection import conflict_gate

        d = conflict_gate(read_scores(cfg, scores)[1], cfg.selection.gate_score, cfg.selection.gate_share)
        w.put_json("gate.json", {"fires": d.fires, "probed": d.probed, "share": d.share,
                                 "threshold": d.threshold, "conflicting": d.conflicting})
        return {"stage": stage, "fires": d.fires, "probed": d.probed, "conflicting": len(d.conflicting),
                "share": d.share, "threshold": d.threshold, "run": cfg.name}

    return produce(GATE, "gate", cfg, {"scores": scores}, payload)


def gate_fires(cfg: RunConfig, ref: ArtifactRef) -> bool:
    return bool(get_store(cfg).read_json(ref.key, "gate.json")["fires"])


# ---------------------------------------------------------------- scores
@task(name="scores", task_run_name="scores-s{stage}", cache_policy=NO_CACHE)
def scores(cfg: RunConfig, pool_grads: ArtifactRef, val_grads: dict[str, ArtifactRef], stage: int = 0,
           ess: ArtifactRef | None = None) -> ArtifactRef:
    """Influence of every pool sketch on each validation set's mean sketch under `influence.score` (the paper's POPI
    cosine by default): float32 [n_val_sets, N], stored as "popi" whatever the rule. `ess`: a pool-health artifact
    of θ_m; each prompt's scores are multiplied by its (ESS/K)^influence.ess_power."""
    def payload(w) -> dict:
        from cropi_core.scoring import ess_weighted, influence_scores

        names = sorted(val_grads)
        g = read_grads(cfg, pool_grads)
        rule, alpha, gamma = cfg.influence.score, cfg.influence.norm_power, cfg.influence.ess_power
        s = np.stack([influence_scores(g, read_grads(cfg, val_grads[n]), rule, alpha) for n in names])
        extra = {}
        if ess is not None:
            ess_frac = np.asarray(w.store.read_json(ess.key, "health.json")["ess_frac"], dtype=np.float64)
            s = ess_weighted(s, ess_frac, gamma)
            extra = {"ess_power": gamma, "mean_ess_frac": float(np.nanmean(ess_frac))}
        if rule != "cosine" and np.isfinite(s).any():  # inner products of fp16 sketches can pass float32's range
            s = s / np.nanmax(np.abs(s))  # one positive scale for every list: ranks unchanged
        s = s.astype(np.float32)
        w.put_array("popi", s)
        w.put_json("sets.json", names)
        return {"sets": names, "n": int(g.shape[0]), "scorable": int(np.isfinite(s[0]).sum()), "run": cfg.name,
                "stage": stage, **({"score": rule} if rule != "cosine" else {}), **extra}

    return produce(SCORES, "scores", cfg, {"pool_grads": pool_grads, "val_grads": val_grads, "ess": ess}, payload)


def reliability(cfg: RunConfig, pool_grads: ArtifactRef, val_grads: dict[str, ArtifactRef]) -> float:
    """`cropi_core.scoring.split_half_reliability` of the stage's influence ranking, from the sketches its scores were
    computed from (no gradient pass: milliseconds of numpy, so a plain call in the flow, not a task with an
    artifact; NaN when it cannot be measured)."""
    from cropi_core.scoring import split_half_reliability

    vals = [read_grads(cfg, val_grads[n]) for n in sorted(val_grads)]
    return split_half_reliability(read_grads(cfg, pool_grads), vals, cfg.influence.score, cfg.influence.norm_power,
                                  seed=cfg.influence.seed)


# ---------------------------------------------------------------- selection
@task(name="selection", task_run_name="selection-s{stage}", cache_policy=NO_CACHE)
def selection(cfg: RunConfig, stage: int, pool: ArtifactRef, pool_rollouts: ArtifactRef,
              scores: ArtifactRef | None = None) -> ArtifactRef:
    """Pick the stage's training prompts (`cropi_core.selection.select`), stored as indices + ids + stats."""
    def payload(w) -> dict:
        from cropi_core.selection import influence_ranking, mix_random, select

        s = cfg.selection
        problems = load_problems(cfg, pool)
        p = pass_rates(w.store, pool_rollouts.key)
        score_lists = read_scores(cfg, scores)[1] if scores is not None else None
        seed = s.seed + (stage if s.method in RANDOM_METHODS else 0)
        idx = select(s.method, scores=score_lists, pass_rates=p, ratio=s.ratio, seed=seed, k_rrf=s.k_rrf,
                     n=len(problems), fusion=s.fusion if score_lists is not None else "none", k_fusion=s.k_fusion)
        if mixes_random(cfg):
            idx = mix_random(idx, len(problems), s.mix_random, seed=s.seed * 1000 + stage)
        idx = [int(i) for i in idx]
        out = {"method": s.method, "stage": stage, "indices": idx, "ids": [problems[i].id for i in idx],
               "offline_pass_rate": [float(p[i]) for i in idx]}
        if score_lists is not None:
            fused = influence_ranking(score_lists, p, fusion=s.fusion, ratio=s.ratio, k_rrf=s.k_rrf,
                                      k_fusion=s.k_fusion)
            out["fused"] = [float(fused[i]) for i in idx]
        w.put_json("selection.json", out)
        return {"method": s.method, "stage": stage, "n": len(idx), "pool": len(problems),
                "domains": count_by(problems[i].domain for i in idx),
                "sources": count_by(problems[i].source for i in idx),
                "offline_pass_rate": float(np.mean(p[idx])) if idx else 0.0, "run": cfg.name}

    params = {"stage": stage, "pool": pool, "pool_rollouts": pool_rollouts, "scores": scores}
    return produce(SELECTION, "selection", cfg, params, payload)


# ---------------------------------------------------------------- off-policy health
def _health(cfg: RunConfig, w, ckpt: ArtifactRef, pool_rollouts: ArtifactRef, sel: ArtifactRef | None,
            stage: int) -> dict:
    """ESS and token KL of θ on the stored responses of the selected prompts (all prompts when `sel` is None)."""
    from cropi_core.health import offpolicy_health

    model, _ = load_checkpoint(cfg, ckpt)
    recs = read_rollouts(w.store, pool_rollouts.key)
    if sel is not None:
        recs = [recs[i] for i in selected_indices(cfg, sel)]
    h = offpolicy_health(model, recs, micro_batch_tokens=cfg.influence.micro_batch_tokens,
                         temperature=behavior_temperature(cfg))
    summary = h.summary()
    w.put_json("health.json", {k: [float(x) for x in getattr(h, k)] for k in summary})
    return {"stage": stage, "n": len(recs), "run": cfg.name, **({} if sel is not None else {"prompts": "all"}),
            **summary, "ran_on": ran_on(model)}


@task(name="health", task_run_name="health-s{stage}", tags=[GPU_TAG], cache_policy=NO_CACHE)
def health(cfg: RunConfig, ckpt: ArtifactRef, pool_rollouts: ArtifactRef, sel: ArtifactRef, stage: int = 0) -> ArtifactRef:
    """ESS of sequence-level importance weights and token KL(π_θ‖β) on the selected prompts' stored responses."""
    return produce(HEALTH, "health", cfg, {"ckpt": ckpt, "pool_rollouts": pool_rollouts, "sel": sel},
                   lambda w: _health(cfg, w, ckpt, pool_rollouts, sel, stage))


@task(name="pool-health", task_run_name="pool-health-s{stage}", cache_policy=NO_CACHE)
def pool_health(cfg: RunConfig, ckpt: ArtifactRef, pool_rollouts: ArtifactRef, stage: int = 0) -> ArtifactRef:
    """`health` on EVERY pool prompt's stored responses (not only a selection): the mean ESS/K that
    `influence.refresh_ess` compares against before a stage is scored."""
    return produce(POOL_HEALTH, "health", cfg, {"ckpt": ckpt, "pool_rollouts": pool_rollouts},
                   lambda w: _health(cfg, w, ckpt, pool_rollouts, None, stage))
