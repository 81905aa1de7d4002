"""Readers and writers of stored artifacts, and the run's data splits: what task modules, flows and reports read.

No `@task` here: every task module imports this one and none imports another, so tasks/ has no import circles.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from pathlib import Path

import numpy as np

from cropi_core.config import DataConfig, RunConfig
from cropi_core.data import DataSplits, Problem, build_splits, problems_from_jsonl
from cropi_core.data.formats import PromptSet, read_prompt_set
from cropi_core.errors import ModelError
from cropi_core.rollout import PromptRollouts
from storage import ArtifactRef, Store, checkpoint_hash
from tasks.common import get_store

ROLES = ("pool", "val", "test_targeted", "test_untargeted")
FILE = "problems.jsonl"  # a dataset artifact's payload
GRADS = "grads"  # a grads artifact's array


def key_of(ref: ArtifactRef | str) -> str:
    return ref.key if isinstance(ref, ArtifactRef) else ref


# ---------------------------------------------------------------- data splits and datasets
@functools.lru_cache(maxsize=4)
def _splits(data_json: str) -> DataSplits:
    return build_splits(DataConfig.model_validate_json(data_json))


def build_splits_cached(cfg: DataConfig) -> DataSplits:
    """`build_splits(cfg)`, memoised per process on the config (datasets are read once per run)."""
    return _splits(cfg.model_dump_json())


def set_problems(cfg: RunConfig, role: str, name: str) -> list[Problem]:
    """The problems of one set: role "pool" (name ignored) or a role in ROLES with the set name."""
    splits = build_splits_cached(cfg.data)
    if role == "pool":
        return splits.pool
    return getattr(splits, role)[name]


def set_names(cfg: RunConfig) -> dict[str, list[str]]:
    """Set names per role, e.g. {"pool": ["pool"], "val": ["val/mul", ...], ...}."""
    s = build_splits_cached(cfg.data)
    return {"pool": ["pool"], "val": list(s.val), "test_targeted": list(s.test_targeted),
            "test_untargeted": list(s.test_untargeted)}


def held_out_prompts(cfg: RunConfig) -> list[str]:
    """Every pool/val/test prompt of the run's data (the warm-up never sees them)."""
    return [p.prompt for p in build_splits_cached(cfg.data).all_problems()]


def count_by(values) -> dict[str, int]:
    return dict(Counter(values))


def load_problems(cfg: RunConfig, ref: ArtifactRef | str) -> list[Problem]:
    """Read a dataset artifact back into `Problem`s."""
    key = key_of(ref)
    return problems_from_jsonl(get_store(cfg).read_bytes(key, FILE), source=f"dataset {key[:12]}")


def meta_of(cfg: RunConfig, ref: ArtifactRef | str) -> dict:
    """The manifest meta of an artifact (dataset counts, health and evaluation summaries, ...)."""
    return dict(get_store(cfg).manifest(key_of(ref)).meta or {})


# ---------------------------------------------------------------- outside files (`cropi select`)
def _file_sig(path: str) -> tuple:
    p = Path(path)
    if p.is_dir():
        return tuple(sorted((q.name, q.stat().st_size, q.stat().st_mtime_ns) for q in p.rglob("*") if q.is_file()))
    return (p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else ()


@functools.lru_cache(maxsize=16)
def _read_prompt_set(path: str, name: str, verifier: str, _sig: tuple) -> PromptSet:
    return read_prompt_set(path, name, verifier)


def prompt_set(path: str, name: str, verifier: str) -> PromptSet:
    """`read_prompt_set`, memoised per process on the file's size and mtime."""
    return _read_prompt_set(str(path), name, verifier, _file_sig(str(path)))


@functools.lru_cache(maxsize=32)
def _checkpoint_content(folder: str, gguf_file: str | None, _sig: tuple) -> str:
    from storage.keys import sha256_file

    if gguf_file:
        return "gguf:" + sha256_file(Path(folder) / gguf_file)
    return checkpoint_hash(folder)


def checkpoint_content(path: str, gguf_file: str | None = None) -> str:
    """Content hash of a model folder (or of `folder/gguf_file`), memoised on the files' sizes and mtimes."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"{path}: checkpoint folder not found")
    if gguf_file and not (folder / gguf_file).is_file():
        raise ModelError(f"{path}: GGUF file {gguf_file!r} not found in the folder")
    try:
        return _checkpoint_content(str(folder.resolve()), gguf_file, _file_sig(str(folder)))
    except Exception as err:  # noqa: BLE001 - StorageError: no weights
        raise ModelError(f"{path}: {err}") from None


# ---------------------------------------------------------------- checkpoints
def find_produced(store: Store, kind: str, producer: str) -> ArtifactRef | None:
    """The newest intact artifact of `kind` whose meta records `producer` (content-keyed outputs, e.g.
    checkpoints); a damaged one is skipped with a warning (checkpoints are hashed in full), so it is recomputed."""
    return find_produced_each(store, kind, [producer])[producer]


def find_produced_each(store: Store, kind: str, producers: list[str]) -> dict[str, ArtifactRef | None]:
    """{producer: find_produced(store, kind, producer)} for several producers from one scan of the store's
    manifests (a lookup per producer would list and read every manifest once each)."""
    wanted = set(producers)
    out: dict[str, ArtifactRef | None] = dict.fromkeys(producers)
    for m in reversed(store.find(kind)):
        p = m.meta.get("producer")
        if p in wanted and out[p] is None and store.exists(m.key, verify="full" if kind == "checkpoint" else None):
            out[p] = store.ref(m.key)
    return out


def checkpoint_path(cfg: RunConfig, ref: ArtifactRef | str) -> Path:
    """Local folder of a checkpoint artifact (loadable with `cropi_core.models.load_model`)."""
    from storage.registry import checkpoint_dir

    return checkpoint_dir(get_store(cfg), key_of(ref))


def load_checkpoint(cfg: RunConfig, ref: ArtifactRef):
    """(model, tokenizer) of a checkpoint artifact in the run's `model.dtype`, on `model.device`.

    The tokenizer is the checkpoint's own: the base checkpoint stores `model.tokenizer_path`'s tokenizer when one
    is set (tasks/bootstrap.py), and training saves the tokenizer it trained with."""
    from transformers.utils import logging as hf_logging

    from cropi_core.models import load_model

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per chunk task is noise
    folder = str(checkpoint_path(cfg, ref))
    return load_model(cfg.model.model_copy(update={"name_or_path": folder, "gguf_file": None, "tokenizer_path": None}))


def ran_on(model) -> dict[str, str]:
    """What a task's model computed in, for its artifact's meta: {"dtype": "bfloat16", "device": "cpu"}."""
    p = next(model.parameters())
    return {"dtype": str(p.dtype).removeprefix("torch."), "device": p.device.type}


# ---------------------------------------------------------------- rollouts
def write_rollouts(w, rollouts: list[PromptRollouts]) -> None:
    """Store records as CSR arrays: prompt_ids [N ragged], response_ids / behavior_logprobs [N·K ragged,
    prompt-major], rewards [N rows of K]; problem ids and texts as JSON."""
    w.put_ragged("prompt_ids", [r.prompt_ids.numpy().astype(np.int64) for r in rollouts])
    w.put_ragged("response_ids", [x.numpy().astype(np.int64) for r in rollouts for x in r.response_ids])
    w.put_ragged("behavior_logprobs", [x.numpy().astype(np.float32) for r in rollouts for x in r.behavior_logprobs])
    w.put_ragged("rewards", [r.rewards.numpy().astype(np.float32) for r in rollouts])
    w.put_json("problem_ids.json", [r.problem_id for r in rollouts])
    w.put_json("texts.json", [r.texts or [] for r in rollouts])


def rollouts_meta(recs: list[PromptRollouts], **extra) -> dict:
    """Manifest meta of a rollouts artifact: size, mean pass rate, scorable prompts, plus `extra`."""
    rates = [x.pass_rate for x in recs]
    return {"n": len(recs), **extra, "mean_pass_rate": float(np.mean(rates)) if rates else 0.0,
            "scorable": int(sum(x.scorable for x in recs))}


def read_rollouts(store: Store, key: str, rows: tuple[int, int] | None = None) -> list[PromptRollouts]:
    """Records [start, stop) (all by default) of a rollout artifact as `PromptRollouts` (no texts)."""
    import torch

    prompts = store.read_ragged(key, "prompt_ids")
    rewards = store.read_ragged(key, "rewards")
    responses = store.read_ragged(key, "response_ids")
    logps = store.read_ragged(key, "behavior_logprobs")
    ids = store.read_json(key, "problem_ids.json")
    start, stop = rows or (0, len(prompts))
    out, off = [], sum(len(r) for r in rewards[:start])
    for i in range(start, stop):
        k = len(rewards[i])
        out.append(PromptRollouts(
            prompt_ids=torch.from_numpy(np.asarray(prompts[i], dtype=np.int64)),
            response_ids=[torch.from_numpy(np.asarray(x, dtype=np.int64)) for x in responses[off:off + k]],
            behavior_logprobs=[torch.from_numpy(np.asarray(x, dtype=np.float32)) for x in logps[off:off + k]],
            rewards=torch.from_numpy(np.asarray(rewards[i], dtype=np.float32)),
            problem_id=ids[i],
        ))
        off += k
    return out


def pass_rates(store: Store, key: str) -> np.ndarray:
    """Per-prompt mean reward of a rollout artifact, float64[N]."""
    return np.array([float(np.mean(r)) for r in store.read_ragged(key, "rewards")], dtype=np.float64)


def num_rows(store: Store, ref: ArtifactRef) -> int:
    return int(store.manifest(ref.key).meta["n"])


# ---------------------------------------------------------------- gradients, calibration, scores
def sketch_dim(cfg: RunConfig, ckpt: ArtifactRef) -> int:
    """Columns of the gradient array: `influence.sketch_dim`, or the parameter count for the `exact` projector."""
    if cfg.influence.projector != "exact":
        return int(cfg.influence.sketch_dim)
    from safetensors import safe_open

    total = 0
    for f in sorted(Path(checkpoint_path(cfg, ckpt)).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():
                total += math.prod(st.get_slice(name).get_shape())
    return total


def num_chunks(cfg: RunConfig, n_rows: int) -> int:
    return max(1, -(-n_rows // cfg.influence.chunk_rows))


def read_grads(cfg: RunConfig, ref: ArtifactRef) -> np.ndarray:
    """The sealed N×k array as float32 (NaN rows = unscorable prompts)."""
    return get_store(cfg).read_array(ref.key, GRADS).astype(np.float32)


def param_ratios(cfg: RunConfig, model, calibration: ArtifactRef | None) -> dict[str, float] | None:
    """Per-parameter keep ratios from a calibration artifact (None: the uniform `sparse_ratio`)."""
    if calibration is None:
        return None
    from cropi_core.projection.jl import energy_ratios

    energy = get_store(cfg).read_json(calibration.key, "energy.json")
    numel = {n: p.numel() for n, p in model.named_parameters()}
    return energy_ratios(energy, {n: numel[n] for n in energy}, cfg.influence.sparse_ratio)


def read_scores(cfg: RunConfig, ref: ArtifactRef) -> tuple[list[str], np.ndarray]:
    store = get_store(cfg)
    return store.read_json(ref.key, "sets.json"), store.read_array(ref.key, "popi")


# ---------------------------------------------------------------- selection, health, evaluation
def read_selection(cfg: RunConfig, ref: ArtifactRef) -> dict:
    return get_store(cfg).read_json(ref.key, "selection.json")


def selected_indices(cfg: RunConfig, ref: ArtifactRef) -> list[int]:
    return list(read_selection(cfg, ref)["indices"])


def read_candidates(store: Store, ref: ArtifactRef) -> list[int]:
    """Sorted pool rows a stage sketches (a `candidates` artifact, influence.candidates)."""
    return [int(i) for i in store.read_json(ref.key, "candidates.json")["indices"]]


def metric_of(cfg: RunConfig) -> str:
    """The accuracy field reports and comparisons use: "mean_at_n" when eval.n_samples > 0, else "accuracy"
    (greedy pass@1, or mean@n when greedy is off)."""
    return "mean_at_n" if cfg.eval.n_samples > 0 else "accuracy"


def metric_label(cfg: RunConfig) -> str:
    e = cfg.eval
    return f"mean@{e.n_samples} (T={e.temperature})" if e.n_samples > 0 else ("greedy pass@1" if e.greedy else
                                                                             f"mean@1 (T={e.temperature})")


def accuracy_and_se(cfg: RunConfig, ref: ArtifactRef) -> tuple[float | None, float | None]:
    """(metric value, its standard error over test prompts) of one evaluation artifact. Evaluations written before
    the SE was recorded get it from their per-item scores (`result.json`) where those hold the metric."""
    store = get_store(cfg)
    meta = store.manifest(ref.key).meta
    m = metric_of(cfg)
    val, se = meta.get(m), meta.get(f"{m}_se")
    if val is not None and se is None:
        from cropi_core.evaluation import standard_error

        try:
            res = store.read_json(ref.key, "result.json")
        except Exception:  # noqa: BLE001 - an old artifact without per-item scores
            res = None
        items = None
        if res is not None:
            items = res.get("sampled") if m == "mean_at_n" else res.get("correct")
            if items is None and m == "mean_at_n" and not cfg.eval.greedy:
                items = res.get("correct")  # greedy off: "correct" holds each problem's mean@n
        se = standard_error(items.values()) if items else None
    return val, se
