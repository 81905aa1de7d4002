"""POPI scores, the stage's selection, and off-policy health of the selected prompts."""

from __future__ import annotations

import numpy as np
from prefect import task

from cropi_core.config import RunConfig
from storage import ArtifactRef, artifact_key
from tasks.common import GPU_TAG
from tasks.common import Timer, computed, get_store, key_policy, parent_keys, storage_hit

RANDOM_METHODS = ("random", "pass_rate")


# ---------------------------------------------------------------- scores
def scores_key(cfg: RunConfig, pool_grads: ArtifactRef, val_grads: dict[str, ArtifactRef], **_: object) -> str:
    return artifact_key("scores", parents=[pool_grads.key] + [val_grads[n].key for n in sorted(val_grads)], config={})


@task(name="scores", task_run_name="scores-s{stage}", cache_policy=key_policy(scores_key))
def scores(cfg: RunConfig, pool_grads: ArtifactRef, val_grads: dict[str, ArtifactRef], stage: int = 0) -> ArtifactRef:
    """POPI cosine of every pool sketch to each validation set's mean sketch: float32 [n_val_sets, N]."""
    from cropi_core.scoring import popi
    from tasks.grads import read_grads

    store = get_store(cfg)
    key = scores_key(cfg, pool_grads, val_grads)
    if store.exists(key):
        return storage_hit("scores", store.ref(key))
    names = sorted(val_grads)
    with Timer() as t:
        g = read_grads(cfg, pool_grads)
        s = np.stack([popi(g, read_grads(cfg, val_grads[n])) for n in names]).astype(np.float32)
        meta = {"sets": names, "n": int(g.shape[0]), "scorable": int(np.isfinite(s[0]).sum()), "run": cfg.name,
                "stage": stage}
        with store.writer("scores", key, parents=[pool_grads.key] + [val_grads[n].key for n in names],
                          config={}, meta=meta) as w:
            w.put_array("popi", s)
            w.put_json("sets.json", names)
    return computed("scores", store.ref(key), [pool_grads, *[val_grads[n] for n in names]], store, t.seconds)


def read_scores(cfg: RunConfig, ref: ArtifactRef) -> tuple[list[str], np.ndarray]:
    store = get_store(cfg)
    return store.read_json(ref.key, "sets.json"), store.read_array(ref.key, "popi")


# ---------------------------------------------------------------- selection
def _sel_config(cfg: RunConfig, stage: int) -> dict:
    conf = {"selection": cfg.selection.hashable()}
    if cfg.selection.method == "full":  # mix_random does not apply: full data keeps its key whatever the share
        conf["selection"].pop("mix_random", None)
    if cfg.selection.method in RANDOM_METHODS or _mixes(cfg):
        conf["stage"] = stage  # a fresh random subset each stage
    return conf


def _mixes(cfg: RunConfig) -> bool:
    return cfg.selection.mix_random > 0 and cfg.selection.method != "full"


def selection_key(cfg: RunConfig, stage: int, pool: ArtifactRef, pool_rollouts: ArtifactRef,
                  scores: ArtifactRef | None = None, **_: object) -> str:
    return artifact_key("selection", parents=parent_keys(pool, scores if scores is not None else pool_rollouts),
                        config=_sel_config(cfg, stage))


@task(name="selection", task_run_name="selection-s{stage}", cache_policy=key_policy(selection_key))
def selection(cfg: RunConfig, stage: int, pool: ArtifactRef, pool_rollouts: ArtifactRef,
              scores: ArtifactRef | None = None) -> ArtifactRef:
    """Pick the stage's training prompts (`cropi_core.selection.select`), stored as indices + ids + stats."""
    from cropi_core.scoring import fuse_ranks
    from cropi_core.selection import mix_random, select
    from tasks.dataset import load_problems
    from tasks.rollouts import pass_rates

    store = get_store(cfg)
    key = selection_key(cfg, stage, pool, pool_rollouts, scores)
    if store.exists(key):
        return storage_hit("selection", store.ref(key))
    s = cfg.selection
    with Timer() as t:
        problems = load_problems(cfg, pool)
        p = pass_rates(store, pool_rollouts.key)
        score_lists = read_scores(cfg, scores)[1] if scores is not None else None
        seed = s.seed + (stage if s.method in RANDOM_METHODS else 0)
        idx = select(s.method, scores=score_lists, pass_rates=p, ratio=s.ratio, seed=seed, k_rrf=s.k_rrf,
                     n=len(problems))
        if _mixes(cfg):
            idx = mix_random(idx, len(problems), s.mix_random, seed=s.seed * 1000 + stage)
        idx = [int(i) for i in idx]
        payload = {"method": s.method, "stage": stage, "indices": idx, "ids": [problems[i].id for i in idx],
                   "offline_pass_rate": [float(p[i]) for i in idx]}
        if score_lists is not None:
            fused = fuse_ranks(list(score_lists), top_ratio=s.ratio, k_rrf=s.k_rrf)
            payload["fused"] = [float(fused[i]) for i in idx]
        domains: dict[str, int] = {}
        sources: dict[str, int] = {}
        for i in idx:
            domains[problems[i].domain] = domains.get(problems[i].domain, 0) + 1
            sources[problems[i].source] = sources.get(problems[i].source, 0) + 1
        meta = {"method": s.method, "stage": stage, "n": len(idx), "pool": len(problems), "domains": domains,
                "sources": sources, "offline_pass_rate": float(np.mean(p[idx])) if idx else 0.0, "run": cfg.name}
        parents = parent_keys(pool, scores if scores is not None else pool_rollouts)
        with store.writer("selection", key, parents=parents, config=_sel_config(cfg, stage), meta=meta) as w:
            w.put_json("selection.json", payload)
    return computed("selection", store.ref(key), [pool, scores if scores is not None else pool_rollouts], store,
                    t.seconds, {"n": len(idx)})


def read_selection(cfg: RunConfig, ref: ArtifactRef) -> dict:
    return get_store(cfg).read_json(ref.key, "selection.json")


def selected_indices(cfg: RunConfig, ref: ArtifactRef) -> list[int]:
    return list(read_selection(cfg, ref)["indices"])


# ---------------------------------------------------------------- off-policy health
def health_key(cfg: RunConfig, ckpt: ArtifactRef, pool_rollouts: ArtifactRef, sel: ArtifactRef, **_: object) -> str:
    from tasks.grads import behavior_temperature

    return artifact_key("health", parents=[ckpt.key, pool_rollouts.key, sel.key],
                        config={"temperature": behavior_temperature(cfg)})


@task(name="health", task_run_name="health-s{stage}", tags=[GPU_TAG], cache_policy=key_policy(health_key))
def health(cfg: RunConfig, ckpt: ArtifactRef, pool_rollouts: ArtifactRef, sel: ArtifactRef, stage: int = 0) -> ArtifactRef:
    """ESS of sequence-level importance weights and token KL(π_θ‖β) on the selected prompts' stored responses."""
    from cropi_core.health import offpolicy_health
    from tasks.bootstrap import load_checkpoint
    from tasks.grads import behavior_temperature
    from tasks.rollouts import read_rollouts

    store = get_store(cfg)
    key = health_key(cfg, ckpt, pool_rollouts, sel)
    if store.exists(key):
        return storage_hit("health", store.ref(key))
    with Timer() as t:
        model, _ = load_checkpoint(cfg, ckpt)
        recs = read_rollouts(store, pool_rollouts.key)
        idx = selected_indices(cfg, sel)
        h = offpolicy_health(model, [recs[i] for i in idx], micro_batch_tokens=cfg.influence.micro_batch_tokens,
                             temperature=behavior_temperature(cfg))
        summary = h.summary()
        meta = {"stage": stage, "n": len(idx), "run": cfg.name, **summary}
        with store.writer("health", key, parents=[ckpt.key, pool_rollouts.key, sel.key],
                          config={"temperature": behavior_temperature(cfg)}, meta=meta) as w:
            w.put_json("health.json", {k: [float(x) for x in getattr(h, k)] for k in summary})
    return computed("health", store.ref(key), [ckpt, pool_rollouts, sel], store, t.seconds)


def pool_health_key(cfg: RunConfig, ckpt: ArtifactRef, pool_rollouts: ArtifactRef, **_: object) -> str:
    from tasks.grads import behavior_temperature

    return artifact_key("health", parents=[ckpt.key, pool_rollouts.key],
                        config={"temperature": behavior_temperature(cfg), "prompts": "all"})


@task(name="pool-health", task_run_name="pool-health-s{stage}", cache_policy=key_policy(pool_health_key))
def pool_health(cfg: RunConfig, ckpt: ArtifactRef, pool_rollouts: ArtifactRef, stage: int = 0) -> ArtifactRef:
    """`health` on EVERY pool prompt's stored responses (not only a selection): the mean ESS/K that
    `influence.refresh_ess` compares against before a stage is scored."""
    from cropi_core.influence import offpolicy_health
    from tasks.bootstrap import load_checkpoint
    from tasks.grads import behavior_temperature
    from tasks.rollouts import read_rollouts

    store = get_store(cfg)
    key = pool_health_key(cfg, ckpt, pool_rollouts)
    if store.exists(key):
        return storage_hit("health", store.ref(key))
    conf = {"temperature": behavior_temperature(cfg), "prompts": "all"}
    with Timer() as t:
        model, _ = load_checkpoint(cfg, ckpt)
        recs = read_rollouts(store, pool_rollouts.key)
        h = offpolicy_health(model, recs, micro_batch_tokens=cfg.influence.micro_batch_tokens,
                             temperature=behavior_temperature(cfg))
        summary = h.summary()
        meta = {"stage": stage, "n": len(recs), "run": cfg.name, "prompts": "all", **summary}
        with store.writer("health", key, parents=[ckpt.key, pool_rollouts.key], config=conf, meta=meta) as w:
            w.put_json("health.json", {k: [float(x) for x in getattr(h, k)] for k in summary})
    return computed("health", store.ref(key), [ckpt, pool_rollouts], store, t.seconds)


def read_health(cfg: RunConfig, ref: ArtifactRef) -> dict:
    """The summary numbers (meta) of a `health` artifact: ess_frac, kl, ..."""
    return dict(get_store(cfg).manifest(ref.key).meta)
