"""`exact`: the full flat per-prompt gradient (the reference; small models only) and the shared flat machinery.

`FlatProjector` materialises every prompt's full gradient, parameter by parameter, from the per-sequence pieces
the hooks hand over (base.py): G_b = δ_bᵀ x_b for a Linear (over the row's real positions only), index-add of
δ_b into the embedding rows of its tokens, the reduced vector for 1-D parameters. `finish` turns the buffers into
rows; `exact` concatenates them in parameter order (dim = number of parameters), `dense`/`sparse` project them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Projector, Rows


class FlatProjector(Projector):
    """Accumulates per-prompt full gradients: buffers[name] is [n_slots, *shape] in the compute dtype."""

    def __init__(self, model: nn.Module, dim: int, **kw: Any) -> None:
        super().__init__(model, dim, **kw)
        self.numel = {n: int(torch.Size(s).numel()) for n, s in self.shapes.items()}
        self.num_params = sum(self.numel.values())
        self.buffers: dict[str, torch.Tensor] = {}
        self.n_slots = 0
        self.compute_dtype = torch.float32

    def slot_bytes(self) -> int:
        return 4 * self.num_params + 4 * self.dim  # float32 buffers (float64 models: twice that)

    def start(self, n_slots: int, compute_dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.n_slots, self.compute_dtype, self.device = n_slots, compute_dtype, torch.device(device)
        self.buffers = {n: torch.zeros((n_slots, *self.shapes[n]), dtype=compute_dtype, device=device)
                        for n in self.params}

    def add_linear(self, weight: str | None, bias: str | None, saved: Any, delta: torch.Tensor, rows: Rows) -> None:
        x = saved
        for b, (slot, s, e) in enumerate(rows):
            # fresh, aligned copies in the compute dtype: a slice's alignment can change GEMM bits
            d = delta[b, s:e].to(self.compute_dtype, copy=True)
            if weight is not None:
                self.buffers[weight][slot] += d.T @ x[b, s:e].to(self.compute_dtype, copy=True)
            if bias is not None:
                self.buffers[bias][slot] += d.sum(0)

    def add_embedding(self, weight: str, saved: Any, delta: torch.Tensor, rows: Rows) -> None:
        ids = saved
        for b, (slot, s, e) in enumerate(rows):
            self.buffers[weight][slot].index_add_(0, ids[b, s:e], delta[b, s:e].to(self.buffers[weight].dtype))

    def add_vector(self, name: str, grads: torch.Tensor, rows: Rows) -> None:
        for b, (slot, _, _) in enumerate(rows):
            self.buffers[name][slot] += grads[b].to(self.compute_dtype)

    def flat(self, name: str) -> torch.Tensor:
        """[n_slots, numel] view of one parameter's accumulated gradients."""
        return self.buffers[name].reshape(self.n_slots, -1)


class ExactProjector(FlatProjector):
    """The full flat gradient, parameters concatenated in model order; `dim` is ignored (= number of parameters)."""

    kind = "exact"

    def __init__(self, model: nn.Module, dim: int = 0, **kw: Any) -> None:
        super().__init__(model, 0, **kw)
        self.dim = self.num_params

    def finish(self) -> torch.Tensor:
        out = torch.cat([self.flat(n) for n in self.params], dim=1).to(self.dtype)
        self.buffers = {}
        return out
