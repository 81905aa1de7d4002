"""Off-policy per-prompt gradients, projected (PAPER.md §3, §8). Off-policy health is in health.py.

`sketch_prompts(model, prompts, projector)` returns row b = P ∇θ L_b(θ) at the model's current weights, with
L_b the scoring loss of objective.py on prompt b's K stored responses (ρ = exp(log π_θ − log β), ρ carries the
gradient). How it is computed:

1. Every response becomes one sequence prompt+response of n = P + T_k tokens, padded (right by default) to a
   bucket length L = ⌈n/16⌉·16 that depends on n alone. Sequences are sorted by (L, prompt, k) and packed into
   micro-batches of one bucket length and at most `micro_batch_tokens` padded tokens.
2. All weights are frozen; the embedding output is made a leaf that requires grad, so backward computes
   activation gradients only. Forward hooks on every Linear / Embedding / RMSNorm owning a selected parameter
   keep their inputs; tensor hooks on their outputs receive δ and hand
   the projector each sequence's gradient pieces (projection/base.py).
3. The loss of a micro-batch is Σ_b c_b Σ_t ρ_b,t with c_b = −A/(K|τ|) (or −A/Σ|τ|): each sequence's δ
   depends on that sequence alone.

Why rows are bit-identical whatever the batch around them (measured, not assumed): every op of the model is
row-wise or per-sequence, except the GEMMs whose kernel on CPU depends on the number of rows M — and only for
small M (a few rows take a GEMV-like path); with L ≥ 16, M = N·L ≥ 16 always takes the same path. Padding goes
to a length fixed by the sequence, so the attention softmax reductions see the same vector. Per-sequence weight gradients use only the real positions, and a prompt's sequences are added to its
accumulator in the order (L, k), which depends on that prompt alone. Callers therefore get the same bits for a
prompt in any batch, chunk, micro-batch size or process. Inputs are unpadded token ids; the padding side
(right by default; left with explicit position ids) was measured not to change the bits either (tests).
On other devices (GPU) the same structure applies, but bit-identity there depends on the kernels and is not
tested here. Float64 models: Qwen2's RMSNorm computes in float32, so float64 gradients agree with an autograd
reference to ~1e-8 relative, not 1e-15 (both sides go through the same float32 rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cropi_core.errors import ModelError
from cropi_core.objective import AGGREGATIONS, Aggregation, group_advantages, sequence_coefficients
from cropi_core.projection.base import Projector, align_rows, canonical_names
from cropi_core.projection.jl import EnergyProbe
from cropi_core.rollout.types import PromptRollouts

__all__ = ["PromptRollouts", "sketch_prompts", "gradient_energy", "BUCKET"]

BUCKET = 16  # padded lengths are multiples of this (≥ 16 rows per GEMM: see the module docstring)
GROUP_BYTES = 1 << 30  # projector working memory per prompt group


@dataclass
class _Seq:
    slot: int  # prompt index within the current group
    k: int
    ids: torch.Tensor  # [n] prompt + response
    n_prompt: int
    logbeta: torch.Tensor  # [T]
    coef: float

    @property
    def n(self) -> int:
        return int(self.ids.numel())

    @property
    def length(self) -> int:
        return max(BUCKET, math.ceil(self.n / BUCKET) * BUCKET)


def _sequences(prompts: Sequence[PromptRollouts], aggregation: str, coef_dtype: torch.dtype) -> list[_Seq]:
    seqs = []
    for slot, p in enumerate(prompts):
        lengths = torch.tensor([int(r.numel()) for r in p.response_ids])
        adv = group_advantages(p.rewards.to(coef_dtype))
        coefs = sequence_coefficients(adv, lengths, aggregation)  # type: ignore[arg-type]
        for k, (r, lb) in enumerate(zip(p.response_ids, p.behavior_logprobs)):
            if r.numel() == 0:
                continue
            ids = torch.cat([p.prompt_ids.reshape(-1), r.reshape(-1)]).long()
            seqs.append(_Seq(slot, k, ids, int(p.prompt_ids.numel()), lb.reshape(-1), float(coefs[k])))
    return seqs


def _micro_batches(seqs: list[_Seq], micro_batch_tokens: int) -> list[list[_Seq]]:
    seqs = sorted(seqs, key=lambda s: (s.length, s.slot, s.k))
    batches: list[list[_Seq]] = []
    for s in seqs:
        b = batches[-1] if batches else None
        if b and b[0].length == s.length and (len(b) + 1) * s.length <= micro_batch_tokens:
            b.append(s)
        else:
            batches.append([s])
    return batches


def _pad(batch: list[_Seq], device: torch.device, dtype: torch.dtype, padding_side: str = "right"):
    """ids/attention/position ids [N, L]; logβ, response mask [N, L-1] aligned with the positions that predict
    each token; rows (slot, start, stop) of real positions."""
    n, length = len(batch), batch[0].length
    ids = torch.zeros(n, length, dtype=torch.long)
    attn = torch.zeros(n, length, dtype=torch.long)
    pos = torch.zeros(n, length, dtype=torch.long)
    logbeta = torch.zeros(n, length - 1, dtype=dtype)
    mask = torch.zeros(n, length - 1, dtype=dtype)
    rows = []
    for b, s in enumerate(batch):
        o = length - s.n if padding_side == "left" else 0
        ids[b, o : o + s.n] = s.ids
        attn[b, o : o + s.n] = 1
        pos[b, o : o + s.n] = torch.arange(s.n)
        logbeta[b, o + s.n_prompt - 1 : o + s.n - 1] = s.logbeta.to(dtype)
        mask[b, o + s.n_prompt - 1 : o + s.n - 1] = 1
        rows.append((s.slot, o, o + s.n))
    return ids.to(device), attn.to(device), pos.to(device), logbeta.to(device), mask.to(device), rows


def _token_logprobs(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor, temperature: float,
                    position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """log π(ids[:, t+1] | ids[:, :t+1]) for every position: [N, L-1], in the logits' dtype."""
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids, use_cache=False).logits[:, :-1]
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _compute_dtype(model: nn.Module) -> torch.dtype:
    dt = next(model.parameters()).dtype
    return torch.promote_types(dt, torch.float32)


class _Hooks:
    """Hooks that feed a projector per-sequence gradient pieces; `rows` is set per micro-batch."""

    def __init__(self, model: nn.Module, projector: Projector) -> None:
        self.model, self.projector = model, projector
        self.rows: list[tuple[int, int, int]] = []
        self.handles: list[Any] = []
        canon = canonical_names(model)
        selected = set(projector.params)
        covered: set[str] = set()

        def sel(p: torch.Tensor | None) -> str | None:
            name = canon.get(id(p)) if p is not None else None
            return name if name in selected else None

        inp_emb = model.get_input_embeddings()
        if not isinstance(inp_emb, nn.Embedding):
            raise ModelError(f"model {type(model).__name__} has no nn.Embedding input embedding to hook")
        for mname, mod in model.named_modules():
            if isinstance(mod, nn.Linear):
                w, b = sel(mod.weight), sel(mod.bias)
                if w or b:
                    self.handles.append(mod.register_forward_hook(self._linear_hook(w, b)))
                    covered.update(x for x in (w, b) if x)
            elif isinstance(mod, nn.Embedding):
                w = sel(mod.weight)
                if mod is not inp_emb:
                    if w:
                        raise ModelError(f"embedding {mname!r} is not the model's input embedding; not supported")
                    continue
                self.handles.append(mod.register_forward_hook(self._embedding_hook(w)))
                if w:
                    covered.add(w)
            elif hasattr(mod, "variance_epsilon") and isinstance(getattr(mod, "weight", None), torch.Tensor):
                w = sel(mod.weight)
                if w and mod.weight.dim() == 1:
                    self.handles.append(mod.register_forward_hook(self._rmsnorm_hook(w, float(mod.variance_epsilon))))
                    covered.add(w)
        missing = [n for n in projector.params if n not in covered]
        if missing:
            self.remove()
            raise ModelError(f"parameter {missing[0]!r} is not owned by a Linear/Embedding/RMSNorm; cannot sketch it")

    def _linear_hook(self, w: str | None, b: str | None):
        def hook(mod, args, out):
            if not out.requires_grad:  # not downstream of the embedding leaf: no gradient can reach it
                return
            saved = self.projector.save_linear(w, b, args[0], self.rows) if w else None
            out.register_hook(lambda g: self.projector.add_linear(w, b, saved, g, self.rows))
        return hook

    def _embedding_hook(self, w: str | None):
        def hook(mod, args, out):
            leaf = out.detach().requires_grad_(True)
            if w:
                saved = self.projector.save_embedding(w, args[0], self.rows)
                leaf.register_hook(lambda g: self.projector.add_embedding(w, saved, g, self.rows))
            return leaf
        return hook

    def _rmsnorm_hook(self, w: str, eps: float):
        def hook(mod, args, out):
            if not out.requires_grad:
                return
            x = args[0]
            xf = x.to(torch.float32)  # as Qwen2RMSNorm/LlamaRMSNorm do, even for float64 models
            xhat = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype).detach()

            def on_grad(g: torch.Tensor) -> None:
                cdt = torch.promote_types(g.dtype, torch.float32)  # reduce bf16/fp16 grads in float32
                gx = align_rows(g.to(cdt) * xhat.to(cdt), self.rows)  # [N, L, H], padding (δ = 0) at the end
                grads = gx.sum(1)  # [N, H]
                self.projector.add_vector(w, grads, self.rows)
            out.register_hook(on_grad)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class _Frozen:
    """Context: eval mode, all parameters frozen; restores both afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self):
        self.training = self.model.training
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        for p, _ in self.flags:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        for p, f in self.flags:
            p.requires_grad_(f)
        self.model.train(self.training)


def _check(prompts: Sequence[PromptRollouts], model: nn.Module) -> None:
    vocab = model.get_input_embeddings().num_embeddings
    for i, p in enumerate(prompts):
        if not isinstance(p, PromptRollouts):
            raise ModelError(f"prompt {i}: expected PromptRollouts, got {type(p).__name__}")
        if p.prompt_ids.numel() == 0:
            raise ModelError(f"prompt {i} ({p.problem_id}): empty prompt_ids")
        for r in [p.prompt_ids, *p.response_ids]:
            if r.numel() and (int(r.min()) < 0 or int(r.max()) >= vocab):
                raise ModelError(f"prompt {i} ({p.problem_id}): token id {int(r.max())} outside vocab of size {vocab}")


def sketch_prompts(
    model: nn.Module,
    prompts: Sequence[PromptRollouts],
    projector: Projector,
    *,
    aggregation: Aggregation = "seq_mean_token_mean",
    micro_batch_tokens: int = 4096,
    temperature: float = 1.0,
    padding_side: str = "right",
    progress: bool = False,
) -> torch.Tensor:
    """Projected off-policy gradients: FloatTensor[B, projector.dim] in projector.dtype.

    Row b = P ∇θ L_b(θ) (objective.py) at the model's current weights; rows of unscorable prompts (all K rewards
    equal, or K < 2) are NaN. `temperature` divides the logits before log π (1.0 = the model's own policy; use
    the value the behavior log-probs were computed with). `micro_batch_tokens` bounds padded tokens per
    forward pass; it changes speed and memory, never the values. `padding_side` ("right" default, or "left" with
    explicit position ids) is where each micro-batch row's padding goes; it does not change the values either
    (tested bit for bit on CPU).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    _check(prompts, model)
    device = next(model.parameters()).device
    cdt = _compute_dtype(model)
    out = torch.full((len(prompts), projector.dim), float("nan"), dtype=projector.dtype)
    scorable = [i for i, p in enumerate(prompts) if p.scorable]
    group = max(1, GROUP_BYTES // max(1, projector.slot_bytes()))
    hooks = None
    with _Frozen(model), torch.enable_grad():
        try:
            hooks = _Hooks(model, projector)
            groups = [scorable[i : i + group] for i in range(0, len(scorable), group)]
            it = groups
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(groups, desc=f"sketch[{projector.kind}]", unit="group")
            for idx in it:
                projector.start(len(idx), cdt, device)
                for batch in _micro_batches(_sequences([prompts[i] for i in idx], aggregation, cdt), micro_batch_tokens):
                    ids, attn, pos, logbeta, mask, hooks.rows = _pad(batch, device, cdt, padding_side)
                    coef = torch.tensor([s.coef for s in batch], dtype=cdt, device=device)
                    logp = _token_logprobs(model, ids, attn, temperature, pos).to(cdt)
                    loss = (coef[:, None] * torch.exp(logp - logbeta) * mask).sum()
                    loss.backward()
                out[idx] = projector.finish().to(projector.dtype).cpu()
        finally:
            if hooks is not None:
                hooks.remove()
    return out


def gradient_energy(
    model: nn.Module,
    prompts: Sequence[PromptRollouts],
    *,
    aggregation: Aggregation = "seq_mean_token_mean",
    micro_batch_tokens: int = 4096,
    temperature: float = 1.0,
) -> dict[str, float]:
    """Gradient energy per parameter over the scorable `prompts`: {name: Σ_prompts Σ_sequences ‖G_s,p‖²_F} in
    parameter order (projection/jl.py:EnergyProbe). The payload of a stage's `calibration` artifact and the input
    of `projection.jl.energy_ratios` (`influence.allocation: energy`); keyword arguments as in `sketch_prompts`."""
    probe = EnergyProbe(model, dtype=torch.float64)
    rows = sketch_prompts(model, prompts, probe, aggregation=aggregation, micro_batch_tokens=micro_batch_tokens,
                          temperature=temperature)  # [B, n_params] float64, NaN rows for unscorable prompts
    energy = rows[~rows.isnan().any(1)].sum(0)  # [n_params]
    return {n: float(e) for n, e in zip(probe.params, energy)}
