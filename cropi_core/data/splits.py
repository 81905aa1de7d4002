"""Validation/test splitting of targeted benchmarks, de-duplication, and `build_splits` for a run."""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from typing import TYPE_CHECKING, Iterable

from cropi_core.data.loaders import load_dataset
from cropi_core.data.problem import DataSplits, Problem
from cropi_core.data.synthetic import generate_suite

if TYPE_CHECKING:
    from cropi_core.config import DataConfig, DatasetSpec

_log = logging.getLogger(__name__)
_SPACE = re.compile(r"\s+")


def dedup_key(prompt: str) -> str:
    """Normalised prompt text for duplicate detection: NFKC, case-folded, whitespace collapsed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", prompt)).strip().casefold()


def dedup(problems: Iterable[Problem], against: Iterable[Problem] = ()) -> list[Problem]:
    """`problems` without those whose prompt (by `dedup_key`) repeats an earlier one or one in `against`."""
    seen = {dedup_key(p.prompt) for p in against}
    kept: list[Problem] = []
    for p in problems:
        key = dedup_key(p.prompt)
        if key not in seen:
            seen.add(key)
            kept.append(p)
    return kept


def split_val_test(problems: list[Problem], val_size: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Deterministic split of a benchmark by id: the `val_size` problems with the smallest
    sha256("<seed>:<id>") form the validation set, the rest the test set (both in original order).

    Depends only on the ids and the seed, not on row order or the other problems' presence.
    """
    ranked = sorted(problems, key=lambda p: hashlib.sha256(f"{seed}:{p.id}".encode()).hexdigest())
    val_ids = {p.id for p in ranked[:val_size]}
    return [p for p in problems if p.id in val_ids], [p for p in problems if p.id not in val_ids]


def _load(spec: "DatasetSpec", against: list[Problem], do_dedup: bool) -> list[Problem]:
    problems = load_dataset(spec.model_copy(update={"limit": None}))
    if do_dedup:
        before = len(problems)
        problems = dedup(problems, against)
        if before != len(problems):
            _log.info("%s: dropped %d duplicate prompt(s)", spec.name, before - len(problems))
    return problems[: spec.limit] if spec.limit else problems


def build_splits(cfg: "DataConfig") -> DataSplits:
    """The run's pool, targeted validation sets, targeted and untargeted tests.

    Synthetic: `generate_suite(cfg.synthetic)`. Files: each targeted benchmark is de-duplicated, limited,
    then split by `split_val_test(val_size, cfg.split_seed)` into "val/<name>" and "test/<name>";
    untargeted benchmarks become "test/<name>". With `cfg.dedup`, the pool drops any prompt that occurs
    in a validation/test set or earlier in the pool (pool specs are read in order, so list MATH before
    DeepScaleR to keep MATH's copy), and `limit` counts rows after de-duplication.
    """
    if cfg.synthetic is not None:
        return generate_suite(cfg.synthetic)
    val: dict[str, list[Problem]] = {}
    test_t: dict[str, list[Problem]] = {}
    test_u: dict[str, list[Problem]] = {}
    for spec in cfg.targeted:
        problems = _load(spec, [], cfg.dedup)
        v, t = split_val_test(problems, spec.val_size, cfg.split_seed)
        val[f"val/{spec.name}"], test_t[f"test/{spec.name}"] = v, t
    for spec in cfg.untargeted:
        test_u[f"test/{spec.name}"] = _load(spec, [], cfg.dedup)
    held_out = [p for ps in (*val.values(), *test_t.values(), *test_u.values()) for p in ps]
    pool: list[Problem] = []
    for spec in cfg.pool:
        pool += _load(spec, held_out + pool, cfg.dedup)
    return DataSplits(pool=pool, val=val, test_targeted=test_t, test_untargeted=test_u)
