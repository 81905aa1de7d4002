"""Projected off-policy gradients N×k into a chunked Zarr array: one task per row chunk, then finalize.

Each chunk task teacher-forces θ_m on its rows' stored β responses and writes the rows' sketches plus a
completion record; a rerun (or a retried / killed run) recomputes only chunks that are missing or corrupt.
"""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from cropi_core.config import RunConfig
from storage import ArtifactRef
from tasks.artifacts import GRADS, load_checkpoint, param_ratios, ran_on, read_candidates, read_rollouts, sketch_dim
from tasks.common import (GPU_TAG, NO_RETRY_TAG, Timer, compute_record, computed, get_store, log, machine, maybe_fault,
                          reused, storage_hit)
from tasks.recipes import RECIPES, behavior_temperature, produce

R = RECIPES["grads"]
grads_key = R.key


def chunk_key(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, chunk: int,
              calibration: ArtifactRef | None = None, candidates: ArtifactRef | None = None, **_: object) -> str:
    """The name of one row chunk of a gradient artifact at `influence.chunk_rows` (pinned, with every key function,
    by tests/test_recipe_keys.py); a chunk's task result names it `<grads key>:<chunk>`."""
    key = grads_key(cfg, ckpt=ckpt, rollouts=rollouts, calibration=calibration, candidates=candidates)
    return f"{key}-r{cfg.influence.chunk_rows}-c{chunk}"


# ---------------------------------------------------------------- calibration (influence.allocation = energy)
CALIBRATION = RECIPES["calibration"]
calibration_key = CALIBRATION.key


@task(name="calibration", task_run_name="calibration-s{stage}", tags=[GPU_TAG], cache_policy=NO_CACHE)
def calibration(cfg: RunConfig, ckpt: ArtifactRef, pool_rollouts: ArtifactRef, stage: int = 0) -> ArtifactRef:
    """Gradient energy per parameter at θ_m over the first `influence.calibration_prompts` scorable pool prompts
    (per-sequence ‖G‖², projection/jl.py:EnergyProbe). Pool and validation sketches of the stage read it, so both
    keep the same coordinates (energy_ratios)."""
    def payload(w) -> dict:
        from cropi_core.influence import gradient_energy

        inf = cfg.influence
        model, _ = load_checkpoint(cfg, ckpt)
        prompts = [p for p in read_rollouts(w.store, pool_rollouts.key) if p.scorable]
        prompts = prompts[: inf.calibration_prompts]
        w.put_json("energy.json", gradient_energy(model, prompts, aggregation=inf.aggregation,
                                                  micro_batch_tokens=inf.micro_batch_tokens,
                                                  temperature=behavior_temperature(cfg)))
        return {"stage": stage, "prompts": len(prompts), "run": cfg.name, "ran_on": ran_on(model)}

    return produce(CALIBRATION, "calibration", cfg, {"ckpt": ckpt, "pool_rollouts": pool_rollouts}, payload)


# ---------------------------------------------------------------- the chunked array
def staging(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, n_rows: int, stage: int,
            calibration: ArtifactRef | None = None, candidates: ArtifactRef | None = None):
    """The gradient artifact's staging array (its manifest records the recipe's parents and config)."""
    params = {"ckpt": ckpt, "rollouts": rollouts, "calibration": calibration, "candidates": candidates}
    dim = sketch_dim(cfg, ckpt)
    return get_store(cfg).array(grads_key(cfg, **params), GRADS, kind=R.kind, shape=(n_rows, dim),
                                chunk_rows=cfg.influence.chunk_rows, dtype=cfg.influence.dtype,
                                parents=[p.key for p in R.parent_refs(params)], config=R.config(cfg),
                                format_version=R.version, meta={"run": cfg.name, "stage": stage, "n": n_rows, "dim": dim})


@task(name="grads-chunk", task_run_name="grads-{label}-s{stage}-c{chunk}", tags=[GPU_TAG], cache_policy=NO_CACHE)
def grads_chunk(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, chunk: int, n_rows: int, stage: int = 0,
                label: str = "pool", calibration: ArtifactRef | None = None,
                candidates: ArtifactRef | None = None) -> dict:
    """Sketch rows [chunk·c, (chunk+1)·c) of the rollouts at checkpoint `ckpt` (with `candidates`: only the
    candidate rows among them, the others NaN = unscored); returns {"chunk", "key", "rows", "computed"}. The chunk's
    completion record keeps its compute record (seconds, machine, attempt), which `grads_finalize` sums."""
    store = get_store(cfg)
    key = grads_key(cfg, ckpt=ckpt, rollouts=rollouts, calibration=calibration, candidates=candidates)
    name = f"{key}:{chunk}"
    if store.exists(key):
        return reused("grads-chunk", f"chunk {chunk} of sealed grads {key}", {"chunk": chunk, "key": name,
                                                                               "computed": False})
    arr = staging(cfg, ckpt, rollouts, n_rows, stage, calibration, candidates)
    lo, hi = arr.chunk_rows(chunk)
    if arr.chunk_complete(chunk):
        return reused("grads-chunk", f"grads {label} stage {stage} chunk {chunk} ({key[:12]})",
                      {"chunk": chunk, "key": name, "rows": [lo, hi], "computed": False})
    maybe_fault("grads")
    import torch

    from cropi_core.influence import sketch_prompts
    from cropi_core.projection import make_projector

    inf = cfg.influence
    rows = list(range(lo, hi)) if candidates is None else [i for i in read_candidates(store, candidates) if lo <= i < hi]
    model = None
    with Timer() as t:
        out = np.full((hi - lo, arr.shape[1]), np.nan, dtype=np.float32)  # [rows of the chunk, k]
        if rows:
            model, _ = load_checkpoint(cfg, ckpt)
            prompts = read_rollouts(store, rollouts.key, (lo, hi))
            proj = make_projector(inf.projector, model, inf.sketch_dim, sparse_ratio=inf.sparse_ratio,
                                  transform=inf.transform, sjl_s=inf.sjl_s, seed=inf.seed,
                                  dtype=getattr(torch, inf.dtype), param_ratios=param_ratios(cfg, model, calibration))
            sk = sketch_prompts(model, [prompts[i - lo] for i in rows], proj, aggregation=inf.aggregation,
                                micro_batch_tokens=inf.micro_batch_tokens, temperature=behavior_temperature(cfg))
            out[np.asarray(rows) - lo] = sk.float().numpy()  # [len(rows), k] into their rows
    used = ran_on(model) if model is not None else None
    arr.write_chunk(chunk, out, meta={"compute": compute_record(t.seconds, "grads-chunk", used)})
    # the marker tests and the console progress watch for
    scored = "" if candidates is None else f", {len(rows)} candidates"
    log(f"grads {label} stage {stage}: chunk {chunk + 1}/{arr.num_chunks} done (rows {lo}-{hi}{scored}, {t.seconds:.1f}s)")
    return {"chunk": chunk, "key": name, "rows": [lo, hi], "computed": True, **({"ran_on": used} if used else {})}


def chunks_compute(st, finalize_seconds: float) -> dict:
    """The compute record of a sealed gradient array: the seconds of every chunk (from their completion records,
    whichever process or earlier, killed run wrote them) plus finalizing's; `partial` when a chunk's record has
    no seconds (written before they were recorded). `machine`: the one every chunk ran on, or all of them."""
    per = [st.chunk_meta(i).get("compute") or {} for i in range(st.num_chunks)]
    machines = [c["machine"] for c in per if c.get("machine")] or [machine()]
    distinct = [m for i, m in enumerate(machines) if m not in machines[:i]]
    rec = compute_record(finalize_seconds + sum(float(c.get("seconds") or 0.0) for c in per), "grads",
                         finalize_seconds=round(finalize_seconds, 3),
                         chunks=[{k: c.get(k) for k in ("seconds", "attempt", "flow_run")} for c in per])
    rec["machine"] = distinct[0] if len(distinct) == 1 else distinct
    if any(c.get("seconds") is None for c in per):
        rec["partial"] = True
    return rec


@task(name="grads", task_run_name="grads-{label}-s{stage}-finalize", tags=[NO_RETRY_TAG], cache_policy=NO_CACHE)
def grads_finalize(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, chunks: list[dict], n_rows: int,
                   stage: int = 0, label: str = "pool", calibration: ArtifactRef | None = None,
                   candidates: ArtifactRef | None = None) -> ArtifactRef:
    """Seal the gradient array once every chunk is complete and intact (StorageError names missing chunks); its
    manifest's compute record sums the chunks' seconds (`chunks_compute`)."""
    store = get_store(cfg)
    params = {"ckpt": ckpt, "rollouts": rollouts, "calibration": calibration, "candidates": candidates}
    key = grads_key(cfg, **params)
    if store.exists(key):
        return storage_hit("grads", store.ref(key))
    with Timer() as t:
        st = staging(cfg, ckpt, rollouts, n_rows, stage, calibration, candidates)
        seen = [c["ran_on"] for c in chunks if c.get("ran_on")]
        if seen:  # chunks computed by an earlier (killed) attempt left no record of theirs
            st.meta["ran_on"] = seen[0] if all(s == seen[0] for s in seen) else seen
        ref = st.finalize(meta=lambda: {"compute": chunks_compute(st, t.elapsed())})
    return computed("grads", ref, R.parent_refs(params), store, store.manifest(ref.key).meta)


def missing_chunks(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, n_rows: int, stage: int,
                   calibration: ArtifactRef | None = None, candidates: ArtifactRef | None = None,
                   **_: object) -> list[int]:
    """Chunks still to compute (none if the artifact is sealed)."""
    if get_store(cfg).exists(grads_key(cfg, ckpt=ckpt, rollouts=rollouts, calibration=calibration,
                                       candidates=candidates)):
        return []
    return staging(cfg, ckpt, rollouts, n_rows, stage, calibration, candidates).missing_chunks()
