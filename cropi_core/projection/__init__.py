"""Projectors: per-prompt gradient sources -> fixed-size sketches (see base.py for the interface).

kinds: `exact` (full flat gradient), `dense` (JL of all coordinates), `sparse` (the paper: coordinate subset,
then JL), `factored` (per-layer LoGra-style sketches from activations and output gradients; never forms a
per-prompt gradient).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import Projector
from .dense import DenseProjector, JLProjector
from .exact import ExactProjector
from .sparse import SparseProjector

KINDS = ("exact", "dense", "sparse", "factored")

__all__ = ["Projector", "make_projector", "KINDS", "ExactProjector", "DenseProjector", "SparseProjector", "JLProjector"]


def make_projector(
    kind: str,
    model: nn.Module,
    dim: int,
    *,
    sparse_ratio: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    params: Sequence[str] | None = None,
    **options,
) -> Projector:
    """A projector for `model`'s parameters (all, or the names in `params`).

    `exact` ignores `dim` (its dim = number of selected parameters) and `sparse_ratio`; `dense` ignores
    `sparse_ratio`; `sparse` keeps a `sparse_ratio` fraction of each parameter's coordinates; `factored` keeps
    a √sparse_ratio fraction of each matrix's rows and of its columns. Extra `options`: `jl="gaussian"|
    "rademacher"` for dense/sparse. Deterministic in (seed, parameter name, shape).
    """
    common = dict(seed=seed, dtype=dtype, params=params)
    if kind == "exact":
        return ExactProjector(model, dim, **common)
    if kind == "dense":
        return DenseProjector(model, dim, **common, **options)
    if kind == "sparse":
        return SparseProjector(model, dim, sparse_ratio=sparse_ratio, **common, **options)
    if kind == "factored":
        from .factored import FactoredProjector

        return FactoredProjector(model, dim, sparse_ratio=sparse_ratio, **common, **options)
    raise ValueError(f"unknown projector kind {kind!r}; expected one of {KINDS}")
