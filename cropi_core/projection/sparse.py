"""`sparse`: the paper's projector (PAPER.md §4) — a fixed random subset S_p of ratio ρ of every parameter's
coordinates (deterministic from seed + name + shape), then the dense JL projection of dense.py on the kept
coordinates. sparse_ratio = 1 is `dense`."""

from __future__ import annotations

from typing import Any

from torch import nn

from .dense import JLProjector


class SparseProjector(JLProjector):
    kind = "sparse"

    def __init__(self, model: nn.Module, dim: int, *, sparse_ratio: float = 0.1, **kw: Any) -> None:
        super().__init__(model, dim, sparse_ratio=sparse_ratio, **kw)
