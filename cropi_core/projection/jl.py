"""The JL family: keep a seeded subset of every prompt's gradient coordinates (the *mask*), then map what is kept
to `dim` numbers (the *transform*). `exact`, `dense`, `sparse` and `grass` are four settings of this one class.

    sketch(x) = T( concat_p  √(n_p / m_p) · g_p(x)[S_p] )        n_p = numel of parameter p, m_p = |S_p|

Masks (which coordinates S_p of parameter p are kept; seeded by (seed, name, shape, ratio)):
  coords  a random subset of ratio ρ of p's coordinates (the paper's "sparse ratio", PAPER.md §4). A Linear's
          per-sequence gradient G_b = Σ_t δ_b,t x_b,tᵀ is formed whole, for a micro-batch at once, then subset.
  block   GraSS (arXiv 2505.18976): for a matrix [R, C] a random √ρ of its rows × √ρ of its columns. The
          per-sequence sub-gradient Σ_t δ_b,t[rows] x_b,t[cols]ᵀ is formed only on the kept block, for a whole
          micro-batch in one batched matmul; the full per-sequence gradient never exists. 1-D parameters (norm
          weights, biases) keep a `coords` subset of ratio ρ.
The scale √(n_p/m_p) makes inner products unbiased over the subsets: E_S[⟨g̃[S], h̃[S]⟩] = ⟨g, h⟩.

Transforms (kept coordinates M = Σ_p m_p → dim):
  identity     none: dim = M (the `exact` projector with ρ = 1).
  gaussian,    dense JL: P ∈ R^{dim×M}, i.i.d. N(0, 1/dim) or ±1/√dim, generated in column chunks from
  rademacher   (seed, name, shape, dim) and never stored whole; GEMMs of exactly 16 rows.
  sjl          sparse JL (a CountSketch with s hashes, Kane–Nelson's block construction): `dim` is cut into s
               blocks of B = dim // s buckets; kept coordinate j is added to one bucket of every block with a
               random sign and weight 1/√s (`scatter_add_` on one flat [n_slots, dim] buffer). E[⟨Sg, Sh⟩] = ⟨g, h⟩;
               when B ≥ M the buckets are a random injection and S is an exact isometry.
  orthogonal   dim ≥ M: an exact random rotation QR(Gaussian).

Accumulation. The kept coordinates of every prompt slot live in one flat buffer acc [n_slots · M] (compute dtype);
parameter p owns the contiguous block [n_slots · o_p, n_slots · (o_p + m_p)), viewed as [n_slots, m_p] (`block`: a
contiguous block, because `index_add_` into a strided column slice of one [n_slots, M] matrix was 6-7× slower on
CPU, 0.5 s of a 7.6 s sketch of the 20M workload). Each hook call adds a micro-batch's per-sequence pieces to their slots
with `index_add_` in row order (a prompt's own sequences are always visited in the same order, influence.py), and
every op is either per sequence (batched matmul, whose CPU kernel computes each batch entry alike whatever the
batch size) or per slot row (`scatter_add_` runs along a row serially). So a prompt's row has the same bits in any
batch, chunk or process on CPU. Rows with left padding are first shifted so real tokens start at position 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch
from torch import nn

from .base import Projector, Rows, align_rows, coordinate_subset, generator, orthogonal_matrix, unit_entries

Mask = Literal["coords", "block"]
Transform = Literal["identity", "gaussian", "rademacher", "sjl", "orthogonal"]
MASKS = ("coords", "block")
TRANSFORMS = ("identity", "gaussian", "rademacher", "sjl", "orthogonal")
SJL_S = (1, 2, 4)

CHUNK_ELEMS = 1 << 22  # dense JL: random numbers generated per chunk (dim × chunk columns)
ROW_ALIGN = 16  # dense JL: GEMMs of exactly this many rows, so a row's bits never depend on the group size
SJL_CHUNK = 1 << 14  # sparse JL: columns per scatter pass (finish)
TEMP_ELEMS = 1 << 25  # coords mask: per-sequence full gradients formed at most this many numbers at a time


@dataclass
class _Kept:
    """Which coordinates of one parameter are kept and where they sit in the flat buffer."""

    name: str
    shape: tuple[int, ...]
    offset: int = 0
    m: int = 0
    scale: float = 1.0
    flat: torch.Tensor | None = None  # coords: sorted kept flat indices (None = all)
    rows: torch.Tensor | None = None  # block: kept rows / columns of the matrix (None = all)
    cols: torch.Tensor | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_block(self) -> bool:
        return self.flat is None and (self.rows is not None or self.cols is not None)


class JLProjector(Projector):
    """Mask + transform (module docstring). `kind` names the setting: exact, dense, sparse or grass."""

    def __init__(self, model: nn.Module, dim: int, *, kind: str = "sparse", mask: Mask = "coords",
                 sparse_ratio: float = 1.0, transform: Transform = "gaussian", sjl_s: int = 2,
                 param_ratios: Mapping[str, float] | None = None, **kw: Any) -> None:
        super().__init__(model, dim, **kw)
        if not 0 < sparse_ratio <= 1:
            raise ValueError(f"sparse_ratio must be in (0, 1], got {sparse_ratio}")
        # per-parameter ratios (e.g. energy_ratios) override sparse_ratio for the parameters they name
        self.param_ratios = {n: float(r) for n, r in (param_ratios or {}).items()}
        bad = {n: r for n, r in self.param_ratios.items() if not 0 < r <= 1}
        if bad:
            raise ValueError(f"param_ratios must be in (0, 1], got {bad}")
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        if transform == "sjl" and sjl_s not in SJL_S:
            raise ValueError(f"sjl_s must be one of {SJL_S}, got {sjl_s!r}")
        self.kind, self.mask, self.transform, self.sjl_s = kind, mask, transform, int(sjl_s)
        self.sparse_ratio = float(sparse_ratio)
        self.kept_params: dict[str, _Kept] = {}
        off = 0
        for n in self.params:
            k = self._choose(n, self.shapes[n])
            k.offset, off = off, off + k.m
            self.kept_params[n] = k
        self.kept = off
        if transform == "identity":
            self.dim = self.kept
        if transform == "orthogonal" and self.dim < self.kept:
            raise ValueError(f"an orthogonal transform needs dim ≥ kept coordinates ({self.kept}), got {self.dim}")
        if self.transform == "sjl" and self.dim < self.sjl_s:
            raise ValueError(f"dim must be ≥ sjl_s ({self.sjl_s}), got {self.dim}")
        self.acc: torch.Tensor | None = None
        self._cache: dict = {}

    def _choose(self, name: str, shape: tuple[int, ...]) -> _Kept:
        k = _Kept(name, shape)
        n, r = k.numel, self.param_ratios.get(name, self.sparse_ratio)
        if self.mask == "block" and len(shape) == 2 and r < 1:
            k.rows = coordinate_subset(shape[0], math.sqrt(r), generator(self.seed, name, shape, "block-rows", r))
            k.cols = coordinate_subset(shape[1], math.sqrt(r), generator(self.seed, name, shape, "block-cols", r))
            k.m = (shape[0] if k.rows is None else k.rows.numel()) * (shape[1] if k.cols is None else k.cols.numel())
        else:  # the same stream as the paper's subset always had: sketches of existing artifacts keep their values
            k.flat = coordinate_subset(n, r, generator(self.seed, name, shape, "subset", r))
            k.m = n if k.flat is None else int(k.flat.numel())
        k.scale = math.sqrt(n / k.m)
        return k

    def describe(self) -> dict:
        return {**super().describe(), "mask": self.mask, "sparse_ratio": self.sparse_ratio, "transform": self.transform,
                **({"sjl_s": self.sjl_s} if self.transform == "sjl" else {}), "kept": self.kept}

    def slot_bytes(self) -> int:
        return 4 * self.kept + 4 * self.dim  # float32 buffers (float64 models: twice that)

    def _get(self, key: tuple, make) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _on(self, t: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        return None if t is None else self._get((id(t), dtype, self.device), lambda: t.to(self.device, dtype or t.dtype))

    # -- accumulation ---------------------------------------------------------------------------------------
    def start(self, n_slots: int, compute_dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.n_slots, self.compute_dtype, self.device = n_slots, compute_dtype, torch.device(device)
        self.acc = torch.zeros(n_slots * self.kept, dtype=compute_dtype, device=self.device)

    def block(self, name: str, acc: torch.Tensor | None = None) -> torch.Tensor:
        """Parameter `name`'s kept coordinates of every slot: a contiguous [n_slots, m_p] view of the accumulator."""
        k = self.kept_params[name]
        acc = self.acc if acc is None else acc
        assert acc is not None, "start() first"
        return acc[self.n_slots * k.offset : self.n_slots * (k.offset + k.m)].view(self.n_slots, k.m)  # [n, m_p]

    def _add(self, name: str, vals: torch.Tensor, rows: Rows) -> None:
        """block(name)[slot(b)] += vals[b] for every row b (vals [N, m_p]), b in order."""
        slots = torch.tensor([r[0] for r in rows], device=self.device)
        self.block(name).index_add_(0, slots, vals.to(self.compute_dtype))

    def save_linear(self, weight: str, bias: str | None, x: torch.Tensor, rows: Rows) -> Any:
        x = align_rows(x.detach(), rows)
        k = self.kept_params[weight]
        if k.cols is not None:
            x = _take_last(x, self._on(k.cols))  # [N, L, c]: only the kept input columns are kept alive
        return x.to(self.compute_dtype)

    def add_linear(self, weight: str | None, bias: str | None, saved: Any, delta: torch.Tensor, rows: Rows) -> None:
        d = align_rows(delta, rows).to(self.compute_dtype)  # [N, L, out]
        if bias is not None:
            kb = self.kept_params[bias]
            g = d.sum(1)  # [N, out]
            self._add(bias, g if kb.flat is None else _take_last(g, self._on(kb.flat)), rows)
        if weight is None:
            return
        k = self.kept_params[weight]
        if k.rows is not None:
            d = _take_last(d, self._on(k.rows))  # [N, L, r]
        # per-sequence (sub-)gradients, a few sequences at a time when the blocks are large
        step = max(1, TEMP_ELEMS // k.numel) if not k.is_block else d.shape[0]
        flat = self._on(k.flat)
        for s in range(0, d.shape[0], step):
            g = torch.bmm(d[s : s + step].transpose(1, 2), saved[s : s + step])  # [n, r, c] (coords: [n, out, in])
            g = g.reshape(g.shape[0], -1)  # [n, r·c]
            self._add(weight, g if flat is None else _take_last(g, flat), rows[s : s + step])

    def save_embedding(self, weight: str, ids: torch.Tensor, rows: Rows) -> Any:
        return align_rows(ids, rows)

    def add_embedding(self, weight: str, saved: Any, delta: torch.Tensor, rows: Rows) -> None:
        """G_b = Σ_t onehot(id_b,t) δ_b,tᵀ over [V, H], added straight into the slots' kept coordinates."""
        k = self.kept_params[weight]
        d = align_rows(delta, rows).to(self.compute_dtype)  # [N, L, H]
        n, length, h = d.shape
        ids = saved.reshape(-1)  # [N·L]
        slot = torch.tensor([r[0] for r in rows], device=self.device).repeat_interleave(length)  # [N·L]
        acc = self.block(weight).view(-1)  # [n_slots · m_p]: slot b's kept coordinates at [b · m_p, (b + 1) · m_p)
        if k.is_block:
            rowpos = self._get(("rowpos", weight, self.device), lambda: _positions(k.rows, k.shape[0], self.device))
            rp = rowpos[ids]  # [N·L]: index of the token's row among the kept rows, -1 if dropped
            keep = rp >= 0
            c = k.m // (k.shape[0] if k.rows is None else k.rows.numel())
            src = d.reshape(n * length, h)[keep]
            if k.cols is not None:
                src = _take_last(src, self._on(k.cols))  # [T, c]
            target = (slot[keep] * k.m + rp[keep] * c)[:, None] + torch.arange(c, device=self.device)
            acc.index_add_(0, target.reshape(-1), src.reshape(-1))
            return
        # coords: the kept flat indices of row v are a contiguous run of the sorted subset (searchsorted)
        flat = self._on(k.flat) if k.flat is not None else None
        if flat is None:
            target = (slot * k.m + ids * h)[:, None] + torch.arange(h, device=self.device)
            acc.index_add_(0, target.reshape(-1), d.reshape(-1))
            return
        lo = torch.searchsorted(flat, ids * h)
        cnt = torch.searchsorted(flat, (ids + 1) * h) - lo  # kept coordinates per token
        tok = torch.repeat_interleave(torch.arange(ids.numel(), device=self.device), cnt)
        j = lo[tok] + torch.arange(tok.numel(), device=self.device) - torch.repeat_interleave(cnt.cumsum(0) - cnt, cnt)
        col = flat[j] - ids[tok] * h
        src = d.reshape(n * length, h)[tok, col]
        acc.index_add_(0, slot[tok] * k.m + j, src)

    def add_vector(self, name: str, grads: torch.Tensor, rows: Rows) -> None:
        k = self.kept_params[name]
        self._add(name, grads if k.flat is None else _take_last(grads, self._on(k.flat)), rows)

    # -- transforms -----------------------------------------------------------------------------------------
    def finish(self) -> torch.Tensor:
        assert self.acc is not None
        acc, self.acc = self.acc, None
        blocks = [(k, self.block(n, acc)) for n, k in self.kept_params.items() if k.m]  # [n_slots, m_p] each
        if self.transform == "identity":
            return torch.cat([b for _, b in blocks], 1).to(self.dtype)  # [n_slots, kept]
        if self.transform == "sjl":
            return self._finish_sjl(blocks)
        scaled = [(k, b * k.scale if k.scale != 1.0 else b) for k, b in blocks]
        rows = -(-self.n_slots // ROW_ALIGN) * ROW_ALIGN
        if self.transform == "orthogonal":
            vals = torch.zeros(rows, self.kept, dtype=self.compute_dtype, device=self.device)
            for k, v in scaled:
                vals[: self.n_slots, k.offset : k.offset + k.m] = v
            g = generator(self.seed, tuple(self.params), tuple(self.shapes[n] for n in self.params), "orth", self.dim,
                          self.sparse_ratio)
            qt = orthogonal_matrix(self.dim, self.kept, g, self.compute_dtype).to(self.device).T.contiguous()  # [kept, dim]
            return torch.cat([vals[r : r + ROW_ALIGN] @ qt for r in range(0, rows, ROW_ALIGN)])[: self.n_slots].to(self.dtype)
        out = torch.zeros(rows, self.dim, dtype=self.compute_dtype, device=self.device)
        for k, v in scaled:
            vals = torch.zeros(rows, k.m, dtype=self.compute_dtype, device=self.device)
            vals[: self.n_slots] = v
            for s, p in self._dense_chunks(k):
                for r in range(0, rows, ROW_ALIGN):
                    out[r : r + ROW_ALIGN] += vals[r : r + ROW_ALIGN, s : s + p.shape[0]] @ p
        return out[: self.n_slots].to(self.dtype)

    def _finish_sjl(self, blocks: list[tuple[_Kept, torch.Tensor]]) -> torch.Tensor:
        """[(parameter, [n_slots, m_p])] → [n_slots, dim]: out[:, bucket_h(j)] += acc[:, j] · scale_p · sign_h(j)/√s, in column
        chunks of SJL_CHUNK so the scaled values, their signed copies and the index stay in cache (3× faster than
        whole-parameter passes over a 5M-column buffer). A bucket's additions keep their order — parameters in
        order, j ascending; the s hashes write disjoint blocks — so the bits are those of whole-parameter passes."""
        n = self.n_slots
        out = torch.zeros(n, self.dim, dtype=self.compute_dtype, device=self.device)  # [n, dim]
        chunk = min(SJL_CHUNK, max((k.m for k, _ in blocks), default=1))
        buf = torch.empty(2, n * chunk, dtype=self.compute_dtype, device=self.device)
        for k, b in blocks:
            idx, coef = self._sjl(k)  # [s, m_p], [s, m_p]
            for c0 in range(0, k.m, chunk):
                c1 = min(k.m, c0 + chunk)
                w = c1 - c0
                v = b[:, c0:c1]  # [n, w]
                if k.scale != 1.0:
                    v = torch.mul(v, k.scale, out=buf[0, : n * w].view(n, w))
                for h in range(self.sjl_s):
                    src = torch.mul(v, coef[h, c0:c1], out=buf[1, : n * w].view(n, w))  # [n, w]
                    out.scatter_add_(1, idx[h, c0:c1].expand(n, -1), src)
        return out.to(self.dtype)

    def _dense_chunks(self, k: _Kept):
        """(start, P_chunk [c, dim]) over the kept columns of one parameter, entries of variance 1/dim."""
        g = generator(self.seed, k.name, k.shape, "jl", self.dim, self.transform)
        step = max(1, CHUNK_ELEMS // self.dim)
        for s in range(0, k.m, step):
            c = min(step, k.m - s)
            yield s, unit_entries((c, self.dim), g, self.transform).mul_(self.dim ** -0.5).to(self.device, self.compute_dtype)

    def _sjl(self, k: _Kept) -> tuple[torch.Tensor, torch.Tensor]:
        """Buckets [s, m_p] (int64) and signed weights ±1/√s [s, m_p] of one parameter's kept coordinates."""
        def make():
            s, b = self.sjl_s, self.dim // self.sjl_s
            g = generator(self.seed, k.name, k.shape, "sjl", self.dim, s, self.mask, self.sparse_ratio)
            if b >= self.kept:  # injective: one random permutation of the buckets per block, shared by all params
                gp = generator(self.seed, tuple(self.params), "sjl-perm", self.dim, s, self.mask, self.sparse_ratio)
                perms = torch.stack([torch.randperm(b, generator=gp)[: self.kept] for _ in range(s)])
                idx = perms[:, k.offset : k.offset + k.m]
            else:
                idx = torch.randint(0, b, (s, k.m), generator=g)
            idx = idx + (torch.arange(s) * b)[:, None]
            signs = unit_entries((s, k.m), g, "rademacher").to(self.device, self.compute_dtype).mul_(s ** -0.5)
            return idx.to(self.device), signs
        return self._get(("sjl", k.name, self.device, self.compute_dtype), make)


def energy_ratios(energy: Mapping[str, float], numel: Mapping[str, int], ratio: float) -> dict[str, float]:
    """Per-parameter keep ratios that spend the budget ratio·Σ numel where the gradient energy is: kept coordinates
    m_p ∝ energy_p, capped at numel_p (water-filling), at least one per parameter. energy_p = Σ over a few
    calibration prompts of ‖g_p‖² (any non-negative measure works).

    The ratios seed the coordinate masks (their repr is hashed), so they must be the same bits in every process:
    parameters are visited in `numel`'s order and sums are exactly rounded (math.fsum), never in set order —
    a set of names iterates in PYTHONHASHSEED order, and summing floats in that order gave each process its own
    last bits, hence its own masks (pool and validation sketches made in two processes did not match)."""
    names = [n for n in numel if numel[n] > 0]
    budget = ratio * math.fsum(numel[n] for n in names)
    m = {n: 0.0 for n in names}
    free = list(names)
    while free and budget > 1e-9:
        tot = math.fsum(max(energy.get(n, 0.0), 0.0) for n in free)
        if tot <= 0:
            size = math.fsum(numel[f] for f in free)
            share = {n: budget * numel[n] / size for n in free}
        else:
            share = {n: budget * max(energy.get(n, 0.0), 0.0) / tot for n in free}
        full = [n for n in free if m[n] + share[n] >= numel[n]]
        if not full:
            for n in free:
                m[n] += share[n]
            break
        # capped parameters keep everything; their excess is shared again
        budget -= math.fsum(numel[n] - m[n] for n in full)
        for n in full:
            m[n] = float(numel[n])
        capped = set(full)
        free = [n for n in free if n not in capped]
    return {n: min(1.0, max(1.0 / numel[n], m[n] / numel[n])) for n in names}


def _take_last(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t[..., idx] as a copy: [..., len(idx)]. Through a 2-D `index_select`, which on CPU was 1.7-5× faster than
    advanced indexing (and than a 3-D index_select) on every hook shape measured; the values are the same copy."""
    return t.reshape(-1, t.shape[-1]).index_select(1, idx).view(*t.shape[:-1], idx.numel())  # [..., len(idx)]


def _positions(kept: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """[n] int64: position of each index among the sorted `kept` ones, -1 where dropped (None = all kept)."""
    if kept is None:
        return torch.arange(n, device=device)
    pos = torch.full((n,), -1, dtype=torch.long)
    pos[kept] = torch.arange(kept.numel())
    return pos.to(device)


class EnergyProbe(Projector):
    """Gradient energy per parameter, for `energy_ratios`: row b = Σ over prompt b's sequences s of ‖G_s,p‖²_F for
    every parameter p (dim = number of parameters, in `params` order). Per-sequence, not per-prompt, energies: they
    need no per-prompt gradient buffer, only L×L Gram matrices — ‖Σ_t δ_t x_tᵀ‖²_F = Σ_{t,t'} (δ_t·δ_t')(x_t·x_t').
    A tied matrix (lm_head = embedding) gets the energies of its two uses added, without their cross term: an
    allocation proxy, exact for every untied parameter (tests)."""

    kind = "energy"

    def __init__(self, model: nn.Module, **kw: Any) -> None:
        super().__init__(model, 0, **kw)
        self.dim = len(self.params)
        self.col = {n: i for i, n in enumerate(self.params)}

    def slot_bytes(self) -> int:
        return 8 * self.dim

    def start(self, n_slots: int, compute_dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.device, self.cdt = torch.device(device), torch.promote_types(compute_dtype, torch.float64)
        self.acc = torch.zeros(n_slots, self.dim, dtype=self.cdt, device=self.device)

    def _add(self, name: str, e: torch.Tensor, rows: Rows) -> None:
        slots = torch.tensor([r[0] for r in rows], device=self.device)
        self.acc[:, self.col[name]].index_add_(0, slots, e.to(self.cdt))

    def save_linear(self, weight: str, bias: str | None, x: torch.Tensor, rows: Rows) -> Any:
        x = x.detach().to(self.cdt)
        return x @ x.transpose(1, 2)  # [N, L, L]

    def add_linear(self, weight: str | None, bias: str | None, saved: Any, delta: torch.Tensor, rows: Rows) -> None:
        d = delta.to(self.cdt)  # [N, L, out]
        if bias is not None:
            self._add(bias, d.sum(1).pow(2).sum(1), rows)
        if weight is not None:
            self._add(weight, ((d @ d.transpose(1, 2)) * saved).sum((1, 2)), rows)

    def save_embedding(self, weight: str, ids: torch.Tensor, rows: Rows) -> Any:
        return (ids[:, :, None] == ids[:, None, :]).to(self.cdt)  # [N, L, L]: same token

    def add_embedding(self, weight: str, saved: Any, delta: torch.Tensor, rows: Rows) -> None:
        d = delta.to(self.cdt)
        self._add(weight, ((d @ d.transpose(1, 2)) * saved).sum((1, 2)), rows)

    def add_vector(self, name: str, grads: torch.Tensor, rows: Rows) -> None:
        self._add(name, grads.to(self.cdt).pow(2).sum(1), rows)

    def finish(self) -> torch.Tensor:
        out, self.acc = self.acc, None
        return out.to(self.dtype)
