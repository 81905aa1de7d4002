"""The projector interface and the seeded random pieces every projector is built from.

`sketch_prompts` (influence.py) runs one forward + backward per micro-batch with all weights frozen and hooks on
the modules that own the selected parameters. Per sequence (one row of the padded micro-batch) the hooks hand the
projector what the per-example gradient is made of, never the gradient of a whole batch:

    Linear    W[out,in] (+ b[out]):  x [N, L, in] (forward input) and δ [N, L, out] (output gradient);
                                     per-sequence grad  G_b = Σ_t δ_b,t x_b,tᵀ ,  g_bias = Σ_t δ_b,t
    Embedding E[V, H]:               ids [N, L] and δ [N, L, H];  G_b = Σ_t onehot(id_b,t) δ_b,tᵀ
    vector    w[H] (RMSNorm weight): per-sequence grad g_b [N, H] = Σ_t δ_b,t ⊙ x̂_b,t (computed by the hook)

`rows[b] = (slot, start, stop)`: row b belongs to prompt slot `slot` and positions start:stop are its real
tokens (start = 0 with right padding). Per-sequence reductions run over those positions only. A
projector adds each row's contribution to its slot's accumulator in row order; influence.py orders the rows so
that a prompt's own sequences are always visited in the same order, which makes every output row a function of
its prompt alone (bit for bit), whatever the batch around it.

Randomness is a pure function of (seed, parameter name, shape, tag): `generator(...)` hashes them into a
`torch.Generator` seed, so the same prompt gets the same sketch in any batch, chunk, process or machine.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
from torch import nn

Rows = Sequence[tuple[int, int, int]]  # per micro-batch row: (prompt slot, first real position, end of real positions)


def generator(seed: int, *parts: Any) -> torch.Generator:
    """A CPU generator seeded by sha256 of (seed, parts) — stable across processes and machines."""
    h = hashlib.sha256(repr((int(seed),) + tuple(parts)).encode()).digest()
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
    return g


def coordinate_subset(n: int, ratio: float, gen: torch.Generator) -> torch.Tensor | None:
    """Sorted random subset of round(ratio·n) (≥ 1) of range(n), or None meaning "all" when ratio ≥ 1."""
    if ratio >= 1.0:
        return None
    m = max(1, int(round(ratio * n)))
    return torch.randperm(n, generator=gen)[:m].sort().values


def unit_entries(shape: tuple[int, ...], gen: torch.Generator, kind: str = "gaussian") -> torch.Tensor:
    """float32 tensor of i.i.d. unit-variance entries: N(0, 1) ("gaussian") or ±1 ("rademacher")."""
    if kind == "gaussian":
        return torch.randn(shape, generator=gen, dtype=torch.float32)
    if kind == "rademacher":
        return torch.randint(0, 2, shape, generator=gen, dtype=torch.int8).to(torch.float32).mul_(2).sub_(1)
    raise ValueError(f"unknown random matrix kind {kind!r}; expected 'gaussian' or 'rademacher'")


def random_matrix(
    rows: int, cols: int, gen: torch.Generator, dtype: torch.dtype, kind: str = "gaussian"
) -> torch.Tensor:
    """[rows, cols] with i.i.d. entries of variance 1/rows (so E[PᵀP] = I): Gaussian or Rademacher."""
    return unit_entries((rows, cols), gen, kind).mul_(rows ** -0.5).to(dtype)


def orthogonal_matrix(rows: int, cols: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """[rows, cols], rows ≥ cols, with orthonormal columns (PᵀP = I exactly up to rounding): QR of a Gaussian."""
    assert rows >= cols
    a = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()).double())
    return q.to(dtype)


def param_names(model: nn.Module, params: Sequence[str] | None = None) -> list[str]:
    """Selected parameter names in model order (shared/tied parameters listed once, under their first name)."""
    names = [n for n, _ in model.named_parameters()]
    if params is None:
        return names
    wanted = list(params)
    unknown = [p for p in wanted if p not in names]
    if unknown:
        raise ValueError(f"unknown parameter name(s) {unknown[:3]} (model has e.g. {names[:3]})")
    keep = set(wanted)
    return [n for n in names if n in keep]


def canonical_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its first name in `named_parameters` (a tied lm_head/embedding matrix has one name)."""
    canon: dict[int, str] = {}
    for n, p in model.named_parameters():
        canon.setdefault(id(p), n)
    return canon


def align_rows(t: torch.Tensor, rows: Rows) -> torch.Tensor:
    """[N, L, ...] with every row's real positions moved to the front (left padding → right padding), so that
    batched per-sequence reductions see the same operands whatever the padding side. A no-op for right padding."""
    starts = [s for _, s, _ in rows]
    if not any(starts):
        return t
    length = t.shape[1]
    idx = (torch.arange(length, device=t.device)[None] + torch.tensor(starts, device=t.device)[:, None]) % length  # [N, L]
    return t.gather(1, idx.reshape(*idx.shape, *([1] * (t.dim() - 2))).expand(*idx.shape, *t.shape[2:]))


class Projector(ABC):
    """Turns per-sequence gradient pieces into a fixed-size sketch per prompt slot.

    Lifecycle per call of `sketch_prompts`: `start(n_slots, compute_dtype, device)`, then any number of `add_*` calls from the
    hooks, then `finish() -> Tensor[n_slots, dim]` (in `self.dtype`). Compute happens in the model's dtype,
    float32 at least; the cast to `self.dtype` happens once, in `finish`.
    """

    kind: str = "base"

    def __init__(self, model: nn.Module, dim: int, *, seed: int = 0, dtype: torch.dtype = torch.float16,
                 params: Sequence[str] | None = None) -> None:
        self.seed = int(seed)
        self.dtype = dtype
        self.params = param_names(model, params)
        self.shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if n in set(self.params)}
        self.dim = int(dim)

    # -- sizing ---------------------------------------------------------------------------------------------
    def slot_bytes(self) -> int:
        """Working memory per prompt slot while a call is running (used to group prompts)."""
        return 4 * self.dim

    def bytes_per_prompt(self) -> int:
        """Stored size of one output row."""
        return self.dim * torch.finfo(self.dtype).bits // 8

    def describe(self) -> dict:
        """JSON-able description (everything the sketch values depend on)."""
        return {"kind": self.kind, "dim": self.dim, "seed": self.seed, "dtype": str(self.dtype).replace("torch.", ""),
                "num_params": len(self.params)}

    # -- accumulation ---------------------------------------------------------------------------------------
    @abstractmethod
    def start(self, n_slots: int, compute_dtype: torch.dtype, device: torch.device | str = "cpu") -> None: ...

    def save_linear(self, weight: str, bias: str | None, x: torch.Tensor, rows: Rows) -> Any:
        """Forward hook of a Linear: keep what `add_linear` needs (default: the input itself)."""
        return x.detach()

    @abstractmethod
    def add_linear(self, weight: str | None, bias: str | None, saved: Any, delta: torch.Tensor, rows: Rows) -> None: ...

    def save_embedding(self, weight: str, ids: torch.Tensor, rows: Rows) -> Any:
        return ids

    @abstractmethod
    def add_embedding(self, weight: str, saved: Any, delta: torch.Tensor, rows: Rows) -> None: ...

    @abstractmethod
    def add_vector(self, name: str, grads: torch.Tensor, rows: Rows) -> None:
        """grads [N, numel]: per-sequence gradient of a 1-D parameter, already reduced over tokens."""

    @abstractmethod
    def finish(self) -> torch.Tensor: ...
