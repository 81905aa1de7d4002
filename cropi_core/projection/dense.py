"""`dense`: Johnson–Lindenstrauss projection of the flat per-prompt gradient (optionally of a coordinate subset).

    sketch(x) = Σ_p P_p · g_p(x)[S_p]        P_p ∈ R^{dim × |S_p|},  entries i.i.d. N(0, 1/dim) or ±1/√dim

one block P_p per parameter p, generated column-chunk by column-chunk from generator(seed, name, shape, dim, …)
and never stored whole, so E[⟨Pg, Ph⟩] = ⟨g[S], h[S]⟩ and the matrix depends on (seed, name, shape) only.
Kept coordinates are scaled by √(n_p/|S_p|), which makes inner products unbiased over the subsets as well:
E_{S,P}[⟨sketch(g), sketch(h)⟩] = ⟨g, h⟩.
Gradients are accumulated in the compute dtype (FlatProjector), projected in it, cast to `dtype` at the end.
The projection of a group of prompts is done in GEMMs of exactly 16 rows (zero rows pad the last one), so a
prompt's row does not depend on how many other prompts share the group (see influence.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .base import coordinate_subset, generator, orthogonal_matrix
from .exact import FlatProjector

CHUNK_ELEMS = 1 << 22  # random numbers generated per chunk (dim × chunk columns)
ROW_ALIGN = 16


class JLProjector(FlatProjector):
    """Coordinate subset of ratio `sparse_ratio` per parameter, then a dense random projection to `dim`."""

    kind = "dense"

    def __init__(self, model: nn.Module, dim: int, *, sparse_ratio: float = 1.0, jl: str = "gaussian",
                 orthogonal: bool = False, **kw: Any) -> None:
        super().__init__(model, dim, **kw)
        self.orthogonal = orthogonal  # dim ≥ kept coordinates ⇒ an exact isometry instead of JL (factored's rest)
        if not 0 < sparse_ratio <= 1:
            raise ValueError(f"sparse_ratio must be in (0, 1], got {sparse_ratio}")
        if jl not in ("gaussian", "rademacher"):
            raise ValueError(f"jl must be 'gaussian' or 'rademacher', got {jl!r}")
        self.sparse_ratio, self.jl = float(sparse_ratio), jl
        self.subsets = {n: coordinate_subset(self.numel[n], self.sparse_ratio,
                                             generator(self.seed, n, self.shapes[n], "subset", self.sparse_ratio))
                        for n in self.params}
        # kept coordinates are scaled by √(n/m) so that E_S[⟨g[S], h[S]⟩·n/m] = ⟨g, h⟩ (unbiased over subsets)
        self.scale = {n: 1.0 if s is None else math.sqrt(self.numel[n] / s.numel()) for n, s in self.subsets.items()}
        self.kept = sum(self.numel[n] if s is None else int(s.numel()) for n, s in self.subsets.items())
        self.chunk = max(1, CHUNK_ELEMS // self.dim)

    def describe(self) -> dict:
        return {**super().describe(), "sparse_ratio": self.sparse_ratio, "jl": self.jl, "kept": self.kept}

    def _chunks(self, name: str, cols: int, dtype: torch.dtype, device: torch.device):
        """Yield (start, P_chunk [c, dim]) covering the kept columns of parameter `name` in order."""
        g = generator(self.seed, name, self.shapes[name], "jl", self.dim, self.jl)
        for s in range(0, cols, self.chunk):
            c = min(self.chunk, cols - s)
            if self.jl == "gaussian":
                m = torch.randn(c, self.dim, generator=g, dtype=torch.float32)
            else:
                m = torch.randint(0, 2, (c, self.dim), generator=g, dtype=torch.int8).to(torch.float32).mul_(2).sub_(1)
            yield s, m.mul_(self.dim ** -0.5).to(device=device, dtype=dtype)

    def finish(self) -> torch.Tensor:
        rows = -(-self.n_slots // ROW_ALIGN) * ROW_ALIGN
        if self.orthogonal and self.dim >= self.kept:
            vals = torch.zeros(rows, self.kept, dtype=self.compute_dtype, device=self.device)
            o = 0
            for n in self.params:
                v = self.flat(n) if self.subsets[n] is None else self.flat(n)[:, self.subsets[n].to(self.device)]
                v = v * self.scale[n] if self.scale[n] != 1.0 else v
                vals[: self.n_slots, o : o + v.shape[1]] = v
                o += v.shape[1]
            g = generator(self.seed, tuple(self.params), tuple(self.shapes[n] for n in self.params), "orth", self.dim,
                          self.sparse_ratio)
            q = orthogonal_matrix(self.dim, self.kept, g, self.compute_dtype).to(self.device)  # [dim, kept]
            self.buffers = {}
            qt = q.T.contiguous()
            return torch.cat([vals[r : r + ROW_ALIGN] @ qt for r in range(0, rows, ROW_ALIGN)])[: self.n_slots].to(self.dtype)
        out = torch.zeros(rows, self.dim, dtype=self.compute_dtype, device=self.device)
        vals = torch.zeros(rows, 0, dtype=self.compute_dtype, device=self.device)
        for n in self.params:
            v = self.flat(n)
            sub = self.subsets[n]
            if sub is not None:
                v = v[:, sub.to(v.device)] * self.scale[n]
            vals = torch.zeros(rows, v.shape[1], dtype=self.compute_dtype, device=self.device)
            vals[: self.n_slots] = v
            self.buffers.pop(n)
            for s, p in self._chunks(n, v.shape[1], self.compute_dtype, self.device):
                for r in range(0, rows, ROW_ALIGN):  # fixed 16-row GEMMs: a row's bits never depend on the group size
                    out[r : r + ROW_ALIGN] += vals[r : r + ROW_ALIGN, s : s + p.shape[0]] @ p
        del vals
        return out[: self.n_slots].to(self.dtype)


class DenseProjector(JLProjector):
    """All coordinates (sparse_ratio forced to 1), dense JL to `dim`."""

    kind = "dense"

    def __init__(self, model: nn.Module, dim: int, **kw: Any) -> None:
        kw.pop("sparse_ratio", None)
        super().__init__(model, dim, sparse_ratio=1.0, **kw)
