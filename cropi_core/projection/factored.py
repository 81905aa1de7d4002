"""`factored`: per-layer sketches from activations and output gradients; no per-prompt gradient is ever formed.

Math. A Linear y = W x + b (W ∈ R^{out×in}) seen by sequence b at positions t has per-sequence gradient

    G_b = Σ_t δ_t x̃_tᵀ ∈ R^{out × (in+1)},   x̃_t = [x_t; 1]   (the bias is folded in as a column of ones)

With fixed random row / column subsets S_r ⊆ [out], S_c ⊆ [in+1] (each of ratio √sparse_ratio, so a
sparse_ratio fraction of the matrix's coordinates is kept) and two small random matrices
P_r ∈ R^{k_r×|S_r|}, P_c ∈ R^{k_c×|S_c|} (entries N(0, 1/k); an exact orthogonal matrix when k = |S|), the
block's sketch is

    P_r G_b[S_r, S_c] P_cᵀ = Σ_t (P_r δ_t[S_r]) (P_c x̃_t[S_c])ᵀ  ∈ R^{k_r × k_c}

so the forward hook stores u_t = P_c x̃_t[S_c] (k_c numbers per token instead of in), the backward hook forms
v_t = P_r δ_t[S_r] and the k_r×k_c sketch of each sequence of the micro-batch is one matmul vᵀu over
its real positions, computed sequence by sequence. Since the sketch is linear in G, summing sequence sketches
gives the prompt's P_r G P_cᵀ; the flattened block has ⟨P_r G P_cᵀ, P_r H P_cᵀ⟩_F with expectation
⟨G[S], H[S]⟩_F over independent P_r, P_c (E[PᵀP] = I), equal to it when k_r = |S_r| and k_c = |S_c|.
P_r, P_c are also scaled by √(out/|S_r|), √((in+1)/|S_c|), so that over random subsets too
E[⟨sketch G, sketch H⟩] = ⟨G, H⟩_F.
The input embedding E ∈ R^{V×H} is the same thing with one-hot inputs: G_b = Σ_t onehot(id_t) δ_tᵀ, its row
factor P_r onehot(id_t) is a column lookup of P_r, its column factor is P_c δ_t. A tied lm_head/embedding
matrix shares one block (same P_r over the vocabulary axis, same P_c over the hidden axis), so both
contributions add into the same sketch.

Parameters that are not matrices (RMSNorm weights, unfolded biases) are the "rest": their per-sequence
gradients (Σ_t δ_t ⊙ x̂_t, computed by the hooks) go through `sparse` (subset of ratio sparse_ratio, JL; an
orthogonal projection when its dim ≥ kept coordinates).

Dim split. Every block l (matrices in model order, then the rest) has a kept size s_l = |S_r|·|S_c|
(rest: kept coordinates). `dim` is split proportionally to s_l, capped at s_l, by water-filling; each matrix
block then takes k_r × k_c ≤ d_l (the largest such product, as balanced as possible relative to the block's
shape); what factoring leaves over goes to the rest block (up to its size), then, in model order, to matrix
blocks that can grow. Only when that is not possible (dim near or above the sum of kept sizes) are the last
columns zeros. Layout of a row: blocks in model order (each k_r×k_c row-major),
then the rest, then zero padding; `layout()` lists it.

Compute happens in the model's dtype (float32 at least); the output is cast to `dtype` once at the end.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from .base import Projector, Rows, canonical_names, coordinate_subset, generator, orthogonal_matrix, random_matrix
from .jl import JLProjector


class _Block:
    """One matrix parameter [R, C] (+ a folded bias column): subsets, factor sizes, random matrices."""

    def __init__(self, name: str, rows: int, cols: int, bias: str | None) -> None:
        self.name, self.rows, self.cols, self.bias = name, rows, cols, bias
        self.ccols = cols + (1 if bias else 0)
        self.k_r = self.k_c = 0
        self.offset = 0

    def setup(self, seed: int, shape: tuple, ratio: float) -> None:
        r = math.sqrt(ratio)
        self.s_r = coordinate_subset(self.rows, r, generator(seed, self.name, shape, "rows", ratio))
        self.s_c = coordinate_subset(self.ccols, r, generator(seed, self.name, shape, "cols", ratio, self.bias))
        self.n_r = self.rows if self.s_r is None else int(self.s_r.numel())
        self.n_c = self.ccols if self.s_c is None else int(self.s_c.numel())

    @property
    def size(self) -> int:
        return self.n_r * self.n_c

    def make_matrices(self, seed: int, shape: tuple, ratio: float) -> None:
        def mat(k: int, n: int, tag: str) -> torch.Tensor:
            g = generator(seed, self.name, shape, tag, k, ratio)
            return orthogonal_matrix(k, n, g, torch.float64).T.contiguous() if k == n else random_matrix(k, n, g, torch.float64)

        # √(R/n_r), √(C/n_c): inner products unbiased over the row/column subsets too
        p_r = mat(self.k_r, self.n_r, "P_rows") * math.sqrt(self.rows / self.n_r)  # [k_r, n_r]
        p_c = mat(self.k_c, self.n_c, "P_cols") * math.sqrt(self.ccols / self.n_c)  # [k_c, n_c]
        cols = torch.arange(self.ccols) if self.s_c is None else self.s_c
        in_x = cols < self.cols
        self.cx = cols[in_x]  # kept input columns
        self.pc_x = p_c[:, in_x].T.contiguous()  # [n_cx, k_c]
        self.pc_bias = p_c[:, ~in_x].sum(1) if self.bias else None  # [k_c] (zeros if the bias column is dropped)
        self.pr_t = p_r.T.contiguous()  # [n_r, k_r]
        table = torch.zeros(self.rows, self.k_r, dtype=torch.float64)
        table[torch.arange(self.rows) if self.s_r is None else self.s_r] = self.pr_t
        self.row_table = table  # [R, k_r]: P_r onehot(i) = row i (embedding lookups)
        self._cache: dict = {}

    def get(self, what: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        key = (what, dtype, device)
        if key not in self._cache:
            t = getattr(self, what)
            self._cache[key] = None if t is None else t.to(device=device, dtype=dtype)
        return self._cache[key]


def _factor(d: int, rows: int, cols: int) -> tuple[int, int]:
    """(k_r, k_c) with k_r ≤ rows, k_c ≤ cols, maximal k_r·k_c ≤ d, then closest to the block's aspect."""
    best = (0, 0, 0.0)
    for kr in range(1, min(rows, d) + 1):
        kc = min(cols, d // kr)
        if kc < 1:
            break
        bal = -abs(math.log((kr / rows) / (kc / cols)))
        if kr * kc > best[0] * best[1] or (kr * kc == best[0] * best[1] and bal > best[2]):
            best = (kr, kc, bal)
    return best[0], best[1]


def _split(dim: int, sizes: Sequence[int]) -> list[int]:
    """Split dim proportionally to sizes, each capped at its size (water-filling, deterministic)."""
    alloc = [0] * len(sizes)
    left = dim
    while left > 0:
        active = [i for i, s in enumerate(sizes) if alloc[i] < s]
        if not active:
            break
        tot = sum(sizes[i] - 0 for i in active)
        given = 0
        for i in active:
            g = min(sizes[i] - alloc[i], left * sizes[i] // tot)
            alloc[i] += g
            given += g
        if given == 0:  # remainders: one each, in order
            for i in active:
                if left - given == 0:
                    break
                alloc[i] += 1
                given += 1
        left -= given
    return alloc


class FactoredProjector(Projector):
    """LoGra-style per-layer sketches for Linear/Embedding matrices, `sparse` for the rest (see module doc)."""

    kind = "factored"

    def __init__(self, model: nn.Module, dim: int, *, sparse_ratio: float = 1.0, transform: str = "gaussian",
                 sjl_s: int = 2, **kw: Any) -> None:
        super().__init__(model, dim, **kw)
        if not 0 < sparse_ratio <= 1:
            raise ValueError(f"sparse_ratio must be in (0, 1], got {sparse_ratio}")
        self.sparse_ratio = float(sparse_ratio)
        canon = canonical_names(model)
        sel = set(self.params)
        blocks: dict[str, _Block] = {}
        inp = model.get_input_embeddings()
        for _, mod in model.named_modules():
            if isinstance(mod, nn.Linear):
                w = canon[id(mod.weight)]
                b = canon[id(mod.bias)] if mod.bias is not None else None
                if w in sel:
                    blk = blocks.setdefault(w, _Block(w, mod.out_features, mod.in_features, None))
                    if b in sel:
                        blk.bias = b
                        blk.ccols = blk.cols + 1
            elif mod is inp and canon[id(mod.weight)] in sel:
                w = canon[id(mod.weight)]
                blocks.setdefault(w, _Block(w, mod.num_embeddings, mod.embedding_dim, None))
        order = {n: i for i, n in enumerate(self.params)}
        self.blocks = sorted(blocks.values(), key=lambda b: order[b.name])
        self.by_name = {b.name: b for b in self.blocks}
        folded = {b.bias for b in self.blocks if b.bias}
        self.rest_names = [n for n in self.params if n not in blocks and n not in folded]
        for b in self.blocks:
            b.setup(self.seed, self.shapes[b.name], self.sparse_ratio)
        rest_kept = 0
        if self.rest_names:
            probe = JLProjector(model, 1, sparse_ratio=self.sparse_ratio, seed=self.seed, params=self.rest_names)  # sizes only
            rest_kept = probe.kept
        alloc = _split(self.dim, [b.size for b in self.blocks] + [rest_kept])
        spare = 0
        for b, d in zip(self.blocks, alloc):
            b.k_r, b.k_c = _factor(d, b.n_r, b.n_c) if d > 0 else (0, 0)
            spare += d - b.k_r * b.k_c
        self.rest_dim = min(rest_kept, alloc[-1] + spare)
        spare = alloc[-1] + spare - self.rest_dim
        for b in self.blocks:  # what neither factoring nor the rest could use: grow blocks, in order
            if spare <= 0:
                break
            old = b.k_r * b.k_c
            b.k_r, b.k_c = _factor(old + spare, b.n_r, b.n_c)
            spare -= b.k_r * b.k_c - old
        off = 0
        for b in self.blocks:
            b.offset = off
            off += b.k_r * b.k_c
            if b.k_r:
                b.make_matrices(self.seed, self.shapes[b.name], self.sparse_ratio)
        self.blocks = [b for b in self.blocks if b.k_r]
        self.by_name = {b.name: b for b in self.blocks}  # hooks skip weights that got no dims
        self.rest_offset = off
        self.rest: JLProjector | None = None
        if self.rest_dim > 0:
            # the rest is small: an exact rotation when it fits, else the configured JL transform (dense JL when
            # it has fewer dims than sparse JL has hashes)
            rest_t = "orthogonal" if self.rest_dim >= rest_kept else (
                "gaussian" if transform == "sjl" and self.rest_dim < sjl_s else transform)
            self.rest = JLProjector(model, self.rest_dim, kind="factored-rest", sparse_ratio=self.sparse_ratio,
                                    transform=rest_t, sjl_s=sjl_s,
                                    seed=self.seed, params=self.rest_names, dtype=torch.float64)
        self.used = off + self.rest_dim
        self.acc: torch.Tensor | None = None

    def layout(self) -> list[dict]:
        """Where each block sits in a row: name, offset, k_r, k_c (the rest block has k_c = 1)."""
        out = [{"name": b.name, "offset": b.offset, "k_r": b.k_r, "k_c": b.k_c, "bias": b.bias} for b in self.blocks]
        if self.rest_dim:
            out.append({"name": "rest", "offset": self.rest_offset, "k_r": self.rest_dim, "k_c": 1,
                        "params": self.rest_names})
        return out

    def describe(self) -> dict:
        return {**super().describe(), "sparse_ratio": self.sparse_ratio, "layout": self.layout()}

    def slot_bytes(self) -> int:
        return 8 * self.dim + (self.rest.slot_bytes() if self.rest else 0)

    def start(self, n_slots: int, compute_dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.n_slots, self.cdt, self.device = n_slots, compute_dtype, torch.device(device)
        self.acc = torch.zeros(n_slots, self.dim, dtype=compute_dtype, device=device)
        if self.rest:
            self.rest.start(n_slots, compute_dtype, device)

    # Every matmul below is per sequence and over its real positions only, so shapes and operands are fixed by the
    # sequence: batched GEMMs with a small output width (k = 1…13) were measured to change bits with the batch
    # size, per-sequence ones over the padded length with the padding side, and a GEMV on a slice with the
    # slice's memory alignment: operands are fresh copies, in the compute dtype (float32 for bf16/fp16 models).
    def save_linear(self, weight: str, bias: str | None, x: torch.Tensor, rows: Rows) -> Any:
        blk = self.by_name.get(weight)
        if blk is None or not blk.k_r:
            return None
        x = x.detach()
        if blk.s_c is not None:
            x = x[..., blk.get("cx", torch.long, x.device)]
        pc = blk.get("pc_x", self.cdt, x.device)
        pb = blk.get("pc_bias", self.cdt, x.device) if blk.pc_bias is not None else None
        us = [x[b, s:e].to(self.cdt, copy=True) @ pc for b, (_, s, e) in enumerate(rows)]
        return us if pb is None else [u + pb for u in us]  # per sequence [n, k_c]

    def add_linear(self, weight: str | None, bias: str | None, saved: Any, delta: torch.Tensor, rows: Rows) -> None:
        if weight is None or weight not in self.by_name:  # an unfolded bias, or a weight that got no dims
            if weight is None and bias is not None and self.rest and bias in self.rest.params:
                self.rest.add_vector(bias, torch.stack([delta[b, s:e].to(self.cdt).sum(0) for b, (_, s, e) in enumerate(rows)]), rows)
            return
        blk = self.by_name[weight]
        d = delta if blk.s_r is None else delta[..., blk.get("s_r", torch.long, delta.device)]
        pr = blk.get("pr_t", self.cdt, delta.device)
        self._add_outer(blk, [d[b, s:e].to(self.cdt, copy=True) @ pr for b, (_, s, e) in enumerate(rows)], saved, rows)

    def save_embedding(self, weight: str, ids: torch.Tensor, rows: Rows) -> Any:
        return ids if weight in self.by_name else None

    def add_embedding(self, weight: str, saved: Any, delta: torch.Tensor, rows: Rows) -> None:
        blk = self.by_name.get(weight)
        if blk is None:
            return
        table = blk.get("row_table", self.cdt, delta.device)  # [V, k_r]: row i = P_r onehot(i)
        d = delta if blk.s_c is None else delta[..., blk.get("cx", torch.long, delta.device)]
        pc = blk.get("pc_x", self.cdt, delta.device)
        us = [table[saved[b, s:e]] for b, (_, s, e) in enumerate(rows)]
        vs = [d[b, s:e].to(self.cdt, copy=True) @ pc for b, (_, s, e) in enumerate(rows)]
        self._add_outer(blk, us, vs, rows)

    def _add_outer(self, blk: _Block, left: list[torch.Tensor], right: list[torch.Tensor], rows: Rows) -> None:
        """acc[slot] += vec(leftᵀ right) per sequence: Σ_t over its n real positions ([n,k_r]ᵀ[n,k_c])."""
        sl = slice(blk.offset, blk.offset + blk.k_r * blk.k_c)
        for b, (slot, _, _) in enumerate(rows):
            self.acc[slot, sl] += (left[b].T.contiguous() @ right[b].contiguous()).reshape(-1)

    def add_vector(self, name: str, grads: torch.Tensor, rows: Rows) -> None:
        if self.rest and name in self.rest.params:
            self.rest.add_vector(name, grads, rows)

    def finish(self) -> torch.Tensor:
        assert self.acc is not None
        if self.rest:
            self.acc[:, self.rest_offset : self.rest_offset + self.rest_dim] = self.rest.finish().to(self.cdt)
        out, self.acc = self.acc.to(self.dtype), None
        return out
