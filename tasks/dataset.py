"""Dataset artifacts: the pool, validation and test sets as normalised JSONL, keyed by their content hash."""

from __future__ import annotations

import functools

from prefect import task

from cropi_core.config import DataConfig, RunConfig
from cropi_core.data import DataSplits, Problem, build_splits, problems_from_jsonl, problems_to_jsonl
from storage import ArtifactRef, dataset_hash
from tasks.common import Timer, computed, get_store, key_policy, storage_hit

ROLES = ("pool", "val", "test_targeted", "test_untargeted")
FILE = "problems.jsonl"


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


def dataset_key(cfg: RunConfig, role: str, name: str) -> str:
    """Content hash of the set's normalised records."""
    return dataset_hash([p.to_record() for p in set_problems(cfg, role, name)])


@task(name="dataset", task_run_name="dataset-{name}", cache_policy=key_policy(dataset_key))
def dataset(cfg: RunConfig, role: str, name: str) -> ArtifactRef:
    """Write one set as `problems.jsonl` (one `Problem.to_record()` per line)."""
    store = get_store(cfg)
    key = dataset_key(cfg, role, name)
    if store.exists(key):
        return storage_hit("dataset", store.ref(key))
    problems = set_problems(cfg, role, name)
    domains: dict[str, int] = {}
    for p in problems:
        domains[p.domain] = domains.get(p.domain, 0) + 1
    meta = {"role": role, "name": name, "n": len(problems), "domains": domains}
    with Timer() as t:
        with store.writer("dataset", key, parents=[], config={"role": role, "name": name}, meta=meta) as w:
            w.put_bytes(FILE, problems_to_jsonl(problems))
    return computed("dataset", store.ref(key), [], store, t.seconds, meta)


def load_problems(cfg: RunConfig, ref: ArtifactRef | str) -> list[Problem]:
    """Read a dataset artifact back into `Problem`s."""
    store = get_store(cfg)
    key = ref.key if isinstance(ref, ArtifactRef) else ref
    return problems_from_jsonl(store.read_bytes(key, FILE), source=f"dataset {key[:12]}")


def dataset_meta(cfg: RunConfig, ref: ArtifactRef) -> dict:
    return dict(get_store(cfg).manifest(ref.key).meta or {})


__all__ = ["dataset", "load_problems", "set_names", "set_problems", "build_splits_cached", "dataset_key"]
