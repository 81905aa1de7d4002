"""Projectors: per-prompt gradient sources -> fixed-size sketches (see base.py for the interface).

Kinds (settings of one class, jl.JLProjector: a coordinate mask, then a transform):
  exact     all coordinates, no transform (dim = number of parameters); the reference, small models only
  dense     all coordinates, JL transform to dim
  sparse    the paper's: a random subset of ratio ρ of every parameter's coordinates, JL transform to dim
  grass     GraSS-style: a random √ρ of every matrix's rows × √ρ of its columns, formed only on that block, JL to dim
(`factored`, per-layer LoGra-style Kronecker sketches, was removed: its top 10% agreed with exact POPI's
37–43% of the time at every ρ, against 68–90% for this family, and it was no faster than `grass`.)
`transform` for dense/sparse/grass: "sjl" (sparse JL, s hashes per coordinate; the default), "gaussian" or
"rademacher" (dense JL, the paper's).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from .base import Projector
from .jl import JLProjector

KINDS = ("exact", "dense", "sparse", "grass")
TRANSFORMS = ("sjl", "gaussian", "rademacher")

__all__ = ["Projector", "JLProjector", "make_projector", "KINDS", "TRANSFORMS"]


def make_projector(
    kind: str,
    model: nn.Module,
    dim: int,
    *,
    sparse_ratio: float = 1.0,
    transform: str = "sjl",
    sjl_s: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    params: Sequence[str] | None = None,
    param_ratios: Mapping[str, float] | None = None,
) -> Projector:
    """A projector for `model`'s parameters (all, or the names in `params`).

    `exact` ignores `dim`, `sparse_ratio` and `transform` (its dim = number of selected parameters); `dense`
    ignores `sparse_ratio`; `sparse` keeps a `sparse_ratio` fraction of each parameter's coordinates; `grass` keeps
    a √sparse_ratio fraction of each matrix's rows and of its columns. `sjl_s` ∈ {1, 2, 4}:
    hashes per coordinate of the sparse JL transform. `param_ratios` (dense/sparse/grass): per-parameter ratios
    that override `sparse_ratio` (jl.energy_ratios). Deterministic in (seed, parameter name, shape, ratio).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; expected one of {TRANSFORMS}")
    common = dict(seed=seed, dtype=dtype, params=params)
    if kind == "exact":
        return JLProjector(model, 0, kind="exact", transform="identity", **common)
    if kind in ("dense", "sparse", "grass"):
        return JLProjector(model, dim, kind=kind, mask="block" if kind == "grass" else "coords",
                           sparse_ratio=1.0 if kind == "dense" else sparse_ratio, transform=transform, sjl_s=sjl_s,
                           param_ratios=None if kind == "dense" else param_ratios, **common)
    raise ValueError(f"unknown projector kind {kind!r}; expected one of {KINDS}")
