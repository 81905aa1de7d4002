"""Projected off-policy gradients N×k into a chunked Zarr array: one task per row chunk, then finalize.

Each chunk task teacher-forces θ_m on its rows' stored β responses and writes the rows' sketches plus a
completion record; a rerun (or a retried / killed run) recomputes only chunks that are missing or corrupt.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from prefect import task

from cropi_core.config import RunConfig
from storage import ArtifactRef, StorageError, artifact_key
from tasks.common import GPU_TAG
from tasks.common import LEDGER, Timer, computed, get_store, key_policy, log, maybe_fault, parent_keys, storage_hit

ARRAY = "grads"


def _parents(ckpt: ArtifactRef, rollouts: ArtifactRef, calibration: ArtifactRef | None) -> list[str]:
    """The checkpoint, the rollouts, and (influence.allocation = energy) the calibration fixing the mask."""
    return parent_keys(ckpt, rollouts) + ([calibration.key] if calibration is not None else [])


def grads_key(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, calibration: ArtifactRef | None = None,
              **_: object) -> str:
    conf = {"influence": cfg.influence.hashable(), "temperature": behavior_temperature(cfg)}
    return artifact_key("grads", parents=_parents(ckpt, rollouts, calibration), config=conf)


def chunk_key(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, chunk: int,
              calibration: ArtifactRef | None = None, **_: object) -> str:
    return f"{grads_key(cfg, ckpt, rollouts, calibration)}-r{cfg.influence.chunk_rows}-c{chunk}"


# ---------------------------------------------------------------- calibration (influence.allocation = energy)
def calibration_key(cfg: RunConfig, ckpt: ArtifactRef, pool_rollouts: ArtifactRef, **_: object) -> str:
    inf = cfg.influence
    conf = {"calibration_prompts": inf.calibration_prompts, "aggregation": inf.aggregation,
            "temperature": behavior_temperature(cfg)}
    return artifact_key("calibration", parents=parent_keys(ckpt, pool_rollouts), config=conf)


@task(name="calibration", task_run_name="calibration-s{stage}", tags=[GPU_TAG], cache_policy=key_policy(calibration_key))
def calibration(cfg: RunConfig, ckpt: ArtifactRef, pool_rollouts: ArtifactRef, stage: int = 0) -> ArtifactRef:
    """Gradient energy per parameter at θ_m over the first `influence.calibration_prompts` scorable pool prompts
    (per-sequence ‖G‖², projection/jl.py:EnergyProbe). Pool and validation sketches of the stage read it, so both
    keep the same coordinates (energy_ratios)."""
    import torch

    from cropi_core.influence import sketch_prompts
    from cropi_core.projection.jl import EnergyProbe
    from tasks.bootstrap import load_checkpoint
    from tasks.rollouts import read_rollouts

    store = get_store(cfg)
    key = calibration_key(cfg, ckpt, pool_rollouts)
    if store.exists(key):
        return storage_hit("calibration", store.ref(key))
    inf = cfg.influence
    with Timer() as t:
        model, _ = load_checkpoint(cfg, ckpt)
        prompts = [p for p in read_rollouts(store, pool_rollouts.key) if p.k >= 2 and p.scorable][: inf.calibration_prompts]
        probe = EnergyProbe(model, dtype=torch.float64)
        energy = sketch_prompts(model, prompts, probe, aggregation=inf.aggregation,
                                micro_batch_tokens=inf.micro_batch_tokens, temperature=behavior_temperature(cfg)).sum(0)
        with store.writer("calibration", key, parents=parent_keys(ckpt, pool_rollouts),
                          config={"calibration_prompts": inf.calibration_prompts}, meta={"stage": stage,
                          "prompts": len(prompts), "run": cfg.name}) as w:
            w.put_json("energy.json", {n: float(e) for n, e in zip(probe.params, energy)})
    return computed("calibration", store.ref(key), [ckpt, pool_rollouts], store, t.seconds)


def param_ratios(cfg: RunConfig, model, calibration: ArtifactRef | None) -> dict[str, float] | None:
    """Per-parameter keep ratios from a calibration artifact (None: the uniform `sparse_ratio`)."""
    if calibration is None:
        return None
    from cropi_core.projection.jl import energy_ratios

    energy = get_store(cfg).read_json(calibration.key, "energy.json")
    numel = {n: p.numel() for n, p in model.named_parameters()}
    return energy_ratios(energy, {n: numel[n] for n in energy}, cfg.influence.sparse_ratio)


def behavior_temperature(cfg: RunConfig) -> float:
    """Temperature the stored log β were computed at (the rollout backend teacher-forces at the sampling
    temperature), so θ's log-probs are taken at the same temperature and ρ = 1 at θ = β."""
    return float(cfg.rollout.temperature)


def sketch_dim(cfg: RunConfig, ckpt: ArtifactRef) -> int:
    """Columns of the gradient array: `influence.dim`, or the parameter count for the `exact` projector."""
    if cfg.influence.projector != "exact":
        return int(cfg.influence.dim)
    from safetensors import safe_open

    from tasks.bootstrap import checkpoint_path

    total = 0
    for f in sorted(Path(checkpoint_path(cfg, ckpt)).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():
                total += math.prod(st.get_slice(name).get_shape())
    return total


def num_chunks(cfg: RunConfig, n_rows: int) -> int:
    return max(1, -(-n_rows // cfg.influence.chunk_rows))


def staging(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, n_rows: int, dim: int, stage: int,
            calibration: ArtifactRef | None = None):
    store = get_store(cfg)
    return store.array(grads_key(cfg, ckpt, rollouts, calibration), ARRAY, kind="grads", shape=(n_rows, dim),
                       chunk_rows=cfg.influence.chunk_rows, dtype=cfg.influence.dtype,
                       parents=_parents(ckpt, rollouts, calibration),
                       config={"influence": cfg.influence.hashable(), "temperature": behavior_temperature(cfg)},
                       meta={"run": cfg.name, "stage": stage, "n": n_rows, "dim": dim})


@task(name="grads-chunk", task_run_name="grads-{label}-s{stage}-c{chunk}", tags=[GPU_TAG], cache_policy=key_policy(chunk_key))
def grads_chunk(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, chunk: int, n_rows: int, stage: int = 0,
                label: str = "pool", calibration: ArtifactRef | None = None) -> dict:
    """Sketch rows [chunk·c, (chunk+1)·c) of the rollouts at checkpoint `ckpt`; returns {"chunk", "rows", "computed"}."""
    store = get_store(cfg)
    key = grads_key(cfg, ckpt, rollouts, calibration)
    if store.exists(key):
        storage_hit("grads-chunk", store.ref(key))
        return {"chunk": chunk, "computed": False}
    dim = sketch_dim(cfg, ckpt)
    arr = staging(cfg, ckpt, rollouts, n_rows, dim, stage, calibration)
    lo, hi = arr.chunk_rows(chunk)
    if chunk not in arr.missing_chunks():
        log(f"grads {label} stage {stage}: chunk {chunk} already in storage")
        return {"chunk": chunk, "rows": [lo, hi], "computed": False}
    maybe_fault("grads")
    import torch

    from cropi_core.influence import sketch_prompts
    from cropi_core.projection import make_projector
    from tasks.bootstrap import load_checkpoint
    from tasks.rollouts import read_rollouts

    inf = cfg.influence
    with Timer() as t:
        model, _ = load_checkpoint(cfg, ckpt)
        prompts = read_rollouts(store, rollouts.key, (lo, hi))
        proj = make_projector(inf.projector, model, inf.dim, sparse_ratio=inf.sparse_ratio, transform=inf.transform,
                              sjl_s=inf.sjl_s, seed=inf.seed, dtype=getattr(torch, inf.dtype),
                              param_ratios=param_ratios(cfg, model, calibration))
        sk = sketch_prompts(model, prompts, proj, aggregation=inf.aggregation, micro_batch_tokens=inf.micro_batch_tokens,
                            temperature=behavior_temperature(cfg))
        arr.write_chunk(chunk, sk.float().numpy())
    LEDGER.add("grads-chunk", f"{key}:{chunk}", "computed", t.seconds)
    # the marker tests and the console progress watch for
    log(f"grads {label} stage {stage}: chunk {chunk + 1}/{arr.num_chunks} done (rows {lo}-{hi}, {t.seconds:.1f}s)")
    return {"chunk": chunk, "rows": [lo, hi], "computed": True}


@task(name="grads", task_run_name="grads-{label}-s{stage}-finalize", cache_policy=key_policy(grads_key))
def grads_finalize(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, chunks: list[dict], n_rows: int,
                   stage: int = 0, label: str = "pool", calibration: ArtifactRef | None = None) -> ArtifactRef:
    """Seal the gradient array once every chunk is complete and intact (StorageError names missing chunks)."""
    store = get_store(cfg)
    key = grads_key(cfg, ckpt, rollouts, calibration)
    if store.exists(key):
        return storage_hit("grads", store.ref(key))
    with Timer() as t:
        ref = staging(cfg, ckpt, rollouts, n_rows, sketch_dim(cfg, ckpt), stage, calibration).finalize()
    return computed("grads", ref, [ckpt, rollouts] + ([calibration] if calibration is not None else []), store, t.seconds,
                    {"chunks_computed": sum(bool(c.get("computed")) for c in chunks)})


def missing_chunks(cfg: RunConfig, ckpt: ArtifactRef, rollouts: ArtifactRef, n_rows: int, stage: int,
                   calibration: ArtifactRef | None = None) -> list[int]:
    """Chunks still to compute (none if the artifact is sealed)."""
    store = get_store(cfg)
    if store.exists(grads_key(cfg, ckpt, rollouts, calibration)):
        return []
    return staging(cfg, ckpt, rollouts, n_rows, sketch_dim(cfg, ckpt), stage, calibration).missing_chunks()


def read_grads(cfg: RunConfig, ref: ArtifactRef) -> np.ndarray:
    """The sealed N×k array as float32 (NaN rows = unscorable prompts)."""
    return get_store(cfg).read_array(ref.key, ARRAY).astype(np.float32)


__all__ = ["calibration", "grads_chunk", "grads_finalize", "grads_key", "missing_chunks", "num_chunks", "read_grads",
           "StorageError"]
