"""`cropi select` / `cropi score` as a Prefect flow: POPI scoring and selection for an outside trainer.

checkpoint θ (HF folder / GGUF) ─┐
behavior β (default θ) ──────────┼▶ offline rollouts of β (cropi-generated, cached as in `cropi run`, or imported
pool + validation files ─────────┘   from a verl dump / plain JSONL with log β teacher-forced)
  → projected grads at θ (pool + each validation set, chunked) → POPI scores → selection (top ratio, RRF)
  → export: scores table (parquet + CSV), the selected subset in the input's own format, manifest.json

Stage 0 of `cropi run` is the same DAG with the same tasks (`flows.stage.stage_sketches`, `tasks.selection`), so on
the same data, checkpoint and config both pick the same ids, and a rerun with another ratio recomputes only the
selection (no sketch). Multi-stage with an outside trainer: pass the trainer's stage-m checkpoint as θ and the
stage-0 model as β; the offline rollouts and every sketch already computed are reused.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel

from cropi_core.config import RunConfig
from flows.outputs import SelectOutputs
from flows.runtime import Tracker, for_run
from flows.stage import stage_sketches
from storage import ArtifactRef
from tasks import artifacts as A
from tasks import byot as T_byot
from tasks import rollouts as T_roll
from tasks import selection as T_sel
from tasks.common import get_store


class InputSet(BaseModel):
    """A pool or validation set file (verl parquet, JSONL, or a datasets.save_to_disk folder)."""

    name: str
    path: str


class RolloutsInput(BaseModel):
    """An imported rollouts file / folder: format "verl" (rollout_data_dir dumps) or "plain"."""

    path: str
    format: str


class SelectJob(BaseModel):
    """What `cropi select` was asked to do (the RunConfig holds rollout / influence / selection settings)."""

    checkpoint: str
    gguf_file: str | None = None
    behavior: str | None = None  # default: the checkpoint (stage 0: θ = β)
    behavior_gguf_file: str | None = None
    pool: InputSet
    val: list[InputSet]
    pool_rollouts: RolloutsInput | None = None
    val_rollouts: dict[str, RolloutsInput] = {}
    verifier: str = "math"
    out: str
    write_subset: bool = True
    stage: int = 0


@flow(name="cropi-select", flow_run_name="select-{config.name}")
def select_flow(config: RunConfig, job: SelectJob) -> SelectOutputs:
    """Score (and select from) the pool at `job.checkpoint`; returns the refs of every artifact involved."""
    cfg = config
    tr = Tracker(cfg)
    ckpt_f = tr.submit(T_byot.import_checkpoint, cfg=cfg, path=job.checkpoint, gguf_file=job.gguf_file, label="theta")
    if job.behavior is None or (job.behavior == job.checkpoint and job.behavior_gguf_file == job.gguf_file):
        beh_f = ckpt_f
    else:
        beh_f = tr.submit(T_byot.import_checkpoint, cfg=cfg, path=job.behavior, gguf_file=job.behavior_gguf_file,
                          label="behavior")
    pool_f = tr.submit(T_byot.import_dataset, cfg=cfg, path=job.pool.path, name=job.pool.name,
                       verifier=job.verifier, role="pool")
    val_f = {v.name: tr.submit(T_byot.import_dataset, cfg=cfg, path=v.path, name=v.name,
                               verifier=job.verifier, role="val") for v in job.val}

    def rollouts_of(data_f, k: int, spec: RolloutsInput | None, label: str):
        if spec is None:
            return tr.submit(T_roll.rollouts, cfg=cfg, ckpt=beh_f, data=data_f, k=k, label=label)
        return tr.submit(T_byot.import_rollouts, cfg=cfg, ckpt=beh_f, data=data_f, path=spec.path, fmt=spec.format,
                         label=label)

    roll_pool_f = rollouts_of(pool_f, cfg.rollout.num_generations, job.pool_rollouts, "pool")
    roll_val_f = {n: rollouts_of(f, cfg.rollout.num_generations_val, job.val_rollouts.get(n), n) for n, f in val_f.items()}
    ckpt, beh = ckpt_f.result(), beh_f.result()
    T_byot.check_same_tokenizer(cfg, ckpt, beh)
    pool, roll_pool = pool_f.result(), roll_pool_f.result()
    roll_val = {f"val/{n}": f.result() for n, f in roll_val_f.items()}

    stage = job.stage
    g_pool, g_val, _ = stage_sketches(tr, cfg, stage, ckpt, roll_pool, roll_val)
    scores = tr.submit(T_sel.scores, cfg=cfg, pool_grads=g_pool, val_grads=g_val, stage=stage).result()
    sel = tr.submit(T_sel.selection, cfg=cfg, stage=stage, pool=pool, pool_rollouts=roll_pool, scores=scores).result()
    return SelectOutputs(checkpoint=ckpt, behavior=beh, pool=pool, val={n: f.result() for n, f in val_f.items()},
                         pool_rollouts=roll_pool, val_rollouts=roll_val, grads={"pool": g_pool, **g_val}, scores=scores,
                         selection=sel, counts=tr.tally())


# ---------------------------------------------------------------- export
def scores_table(cfg: RunConfig, refs: SelectOutputs, pool_set) -> dict[str, list]:
    """Columns id, row (1-based input row), popi_<val set>..., fused, rank, selected. `fused` is the ranking the
    selection used: with selection.fusion learnability_rrf (the default) the reciprocal-rank fusion of the POPI
    ranking and the p(1−p) ranking of the offline pass rates (NaN where POPI is); with fusion none the paper's
    RRF of the validation sets' top lists at the selection ratio."""
    import numpy as np

    from cropi_core.scoring import rank_order
    from cropi_core.selection import influence_ranking

    names, popi = A.read_scores(cfg, refs.scores)
    lists = [np.asarray(s, dtype=np.float64) for s in popi]
    sc = cfg.selection
    p = A.pass_rates(get_store(cfg), refs.pool_rollouts.key) if sc.fusion != "none" else None
    fused = influence_ranking(lists, p, fusion=sc.fusion, ratio=sc.ratio, k_rrf=sc.k_rrf, k_fusion=sc.k_fusion)
    order = rank_order(fused)
    rank = np.argsort(order) + 1  # the inverse permutation: 1-based rank of each row
    chosen = set(A.selected_indices(cfg, refs.selection))
    table: dict[str, list] = {"id": [p.id for p in pool_set.problems], "row": [r + 1 for r in pool_set.rows]}
    for n, s in zip(names, lists):
        table[f"popi_{n.removeprefix('val/')}"] = [None if not np.isfinite(x) else float(x) for x in s]
    table["fused"] = [None if not np.isfinite(x) else float(x) for x in fused]
    table["rank"] = [int(x) for x in rank]
    table["selected"] = [i in chosen for i in range(len(fused))]
    return table


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def config_today(section) -> dict[str, Any]:
    """A config section's output-determining fields (`hashable()`, what artifact keys hash) under today's field names:
    `hashable()` keeps the names the keys were first computed with (rollout.k_train, influence.dim, ...)."""
    return {type(section).RENAMED.get(k, k): v for k, v in section.hashable().items()}


def _rollouts_input(spec: RolloutsInput) -> dict[str, str]:
    """An imported rollouts file / folder as the manifest records it: absolute path, format, content hash."""
    path = Path(spec.path)
    return {"path": str(path.resolve()), "format": spec.format, "sha256": _sha256(path)}


def unscorable(cfg: RunConfig, rollouts: ArtifactRef) -> dict[str, int]:
    """Pool prompts POPI cannot score (all K rewards equal: no policy gradient), by why: every response right
    ("all_right", reward ≥ 1), every one wrong ("all_wrong", reward ≤ 0), or another reward shared by all
    ("all_equal"); plus "k", the most responses any prompt has."""
    import numpy as np

    out = {"all_right": 0, "all_wrong": 0, "all_equal": 0, "k": 0}
    for r in get_store(cfg).read_ragged(rollouts.key, "rewards"):
        r = np.asarray(r, dtype=np.float64)
        out["k"] = max(out["k"], int(r.size))
        if r.size and (r != r[0]).any():
            continue
        first = float(r[0]) if r.size else 0.0
        out["all_right" if first >= 1.0 else "all_wrong" if first <= 0.0 else "all_equal"] += 1
    return out


def _ref_json(x: Any) -> dict:
    """A ref as {"key", "uri"}; a dict of refs (or of dicts of refs) likewise, entry by entry."""
    return {n: _ref_json(r) for n, r in x.items()} if isinstance(x, dict) else {"key": x.key, "uri": x.uri}


def export(cfg: RunConfig, job: SelectJob, refs: SelectOutputs) -> Path:
    """Write the outputs into `job.out` atomically: everything goes to a sibling temp folder, manifest.json last,
    then one rename (an existing `out` is swapped out and removed). Returns the output folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cropi_core.data.formats import subset_name, write_subset

    out = Path(job.out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        pool_set = A.prompt_set(job.pool.path, job.pool.name, job.verifier)
        table = scores_table(cfg, refs, pool_set)
        pq.write_table(pa.table(table), str(tmp / "scores.parquet"))
        with open(tmp / "scores.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(table))
            for row in zip(*table.values()):
                w.writerow(["" if v is None else v for v in row])
        sel = A.read_selection(cfg, refs.selection)
        files = ["scores.parquet", "scores.csv"]
        if job.write_subset:
            name = subset_name(pool_set)
            write_subset(pool_set, sel["indices"], tmp / name)
            files.append(name)
        # lineage: every artifact this output was derived from (`cropi lineage <selection key>` draws the DAG)
        # (the manifest's key for β is "behaviour", as format_version 1 first wrote it)
        lineage = {"behaviour" if n == "behavior" else n: _ref_json(getattr(refs, n))
                   for n in ("checkpoint", "behavior", "pool", "val", "pool_rollouts", "val_rollouts", "grads",
                             "scores", "selection")}
        lineage["checkpoint"]["source"] = job.checkpoint
        lineage["behaviour"]["source"] = job.behavior or job.checkpoint
        manifest = {
            "kind": "cropi-selection" if job.write_subset else "cropi-scores",
            "format_version": 1,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "storage": cfg.storage.root,
            "method": "popi", "ratio": cfg.selection.ratio, "k_rrf": cfg.selection.k_rrf, "stage": job.stage,
            "n_pool": len(pool_set.problems), "n_selected": len(sel["indices"]),
            "selected_ids": sel["ids"],
            "input": {"pool": {"path": str(Path(job.pool.path).resolve()), "container": pool_set.container,
                               "sha256": _sha256(Path(job.pool.path))},
                      "val": {v.name: {"path": str(Path(v.path).resolve()), "sha256": _sha256(Path(v.path))} for v in job.val},
                      "rollouts": ({"pool": _rollouts_input(job.pool_rollouts)} if job.pool_rollouts else {})
                      | {n: _rollouts_input(r) for n, r in job.val_rollouts.items()}},
            "lineage": lineage,
            "config": {"rollout": config_today(cfg.rollout), "influence": config_today(cfg.influence),
                       "selection": config_today(cfg.selection), "template": cfg.data.template,
                       "instruction": cfg.data.instruction},
            "files": {n: _sha256(tmp / n) for n in files},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def run_select(cfg: RunConfig, job: SelectJob) -> dict[str, Any]:
    """Run the flow, export the outputs; returns a JSON-able summary (what was computed vs reused, and how many
    prompts were asked for: ratio × pool, and could not be scored)."""
    from cropi_core.scoring import top_count

    t0 = time.perf_counter()
    refs = for_run(select_flow, cfg)(config=cfg, job=job)
    out = export(cfg, job, refs)
    ids = A.read_selection(cfg, refs.selection)["ids"]
    n_pool = A.num_rows(get_store(cfg), refs.pool_rollouts)
    asked = top_count(cfg.selection.ratio, n_pool)
    return {
        "seconds": time.perf_counter() - t0, "out": str(out), "computed": refs.counts.computed,
        "counts": refs.counts.counts(),
        "selection": refs.selection.key, "scores": refs.scores.key, "selected_ids": ids,
        "n_pool": n_pool, "asked": asked,
        # why fewer than asked were selected (read only then)
        "unscorable": unscorable(cfg, refs.pool_rollouts) if len(ids) < asked else None,
    }


__all__ = ["SelectJob", "InputSet", "RolloutsInput", "select_flow", "run_select", "export", "scores_table",
           "unscorable", "config_today"]
