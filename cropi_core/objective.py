"""The GRPO scoring objective of CROPI (PAPER.md §1, §3).

For a prompt x with K stored responses τ_k sampled from the behavior policy β:

    A_k   = (R_k − mean_j R_j) / (std_j R_j + ε)                    group advantage, unbiased std, ε = 1e-4
    ρ_k,t = exp(log π_θ(a_t|s_t) − log β(a_t|s_t))                 per-token importance ratio (carries gradient)
    L_x   = −(1/K) Σ_k (1/|τ_k|) Σ_t ρ_k,t A_k                     aggregation "seq_mean_token_mean" (TRL "grpo")
    L_x   = −(1/Σ_k |τ_k|) Σ_k Σ_t ρ_k,t A_k                       aggregation "token_mean" (TRL "dapo"/"bnpo",
                                                                     the prompt's K responses being the batch)

No clipping and no KL term: at θ = β the clipped surrogate has the same gradient anyway (ρ = 1 is inside the
clip range), and the scoring loss of the paper omits both.

Both aggregations are linear in the per-token ratios, so L_x = Σ_k c_k Σ_t ρ_k,t with one scalar coefficient
c_k per response (`sequence_coefficients`). `influence.py` relies on that: each sequence's contribution to the
gradient depends on that sequence alone, whatever micro-batch it is computed in.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

Aggregation = Literal["seq_mean_token_mean", "token_mean"]
AGGREGATIONS: tuple[str, ...] = ("seq_mean_token_mean", "token_mean")
ADV_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, eps: float = ADV_EPS) -> torch.Tensor:
    """(…, K) rewards -> (…, K) advantages (R − mean) / (std_unbiased + eps) over the last axis.

    A group whose rewards are all equal gets advantages exactly 0 (its prompt is unscorable).
    """
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    if r.shape[-1] < 2:
        raise ValueError(f"group_advantages needs K >= 2 rewards per group, got shape {tuple(rewards.shape)}")
    return (r - r.mean(-1, keepdim=True)) / (r.std(-1, unbiased=True, keepdim=True) + eps)


def importance_ratio(logp: torch.Tensor, behavior_logp: torch.Tensor) -> torch.Tensor:
    """ρ = exp(log π_θ − log β), elementwise; gradient flows through `logp` only."""
    return torch.exp(logp - behavior_logp.detach())


def sequence_coefficients(
    advantages: torch.Tensor, lengths: torch.Tensor, aggregation: Aggregation = "seq_mean_token_mean"
) -> torch.Tensor:
    """c_k with L_x = Σ_k c_k Σ_t ρ_k,t.  advantages, lengths: (K,) -> (K,) in the advantages' dtype.

    seq_mean_token_mean: c_k = −A_k / (K |τ_k|);  token_mean: c_k = −A_k / Σ_j |τ_j|.
    """
    lengths = lengths.to(advantages.dtype)
    if aggregation == "seq_mean_token_mean":
        return -advantages / (advantages.shape[-1] * lengths.clamp(min=1))
    if aggregation == "token_mean":
        return -advantages / lengths.sum(-1, keepdim=True).clamp(min=1)
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")


def seq_mean_token_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(K, T) values, (K, T) 0/1 mask -> scalar: mean over sequences of each sequence's token mean."""
    mask = mask.to(per_token.dtype)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def token_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(K, T) values, (K, T) 0/1 mask -> scalar: mean over all unmasked tokens."""
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def surrogate_loss(
    logps: Sequence[torch.Tensor],
    behavior_logps: Sequence[torch.Tensor],
    advantages: torch.Tensor,
    aggregation: Aggregation = "seq_mean_token_mean",
) -> torch.Tensor:
    """L_x for one prompt from K ragged (T_k,) log-prob rows. Differentiable in `logps`."""
    k = len(logps)
    t_max = max(int(lp.numel()) for lp in logps)
    per_token = advantages.new_zeros((k, t_max))
    mask = advantages.new_zeros((k, t_max))
    rows = []
    for i, (lp, lb) in enumerate(zip(logps, behavior_logps)):
        n = lp.numel()
        rows.append(torch.nn.functional.pad(-importance_ratio(lp, lb.to(lp.dtype)) * advantages[i], (0, t_max - n)))
        mask[i, :n] = 1
    per_token = torch.stack(rows)
    agg = {"seq_mean_token_mean": seq_mean_token_mean, "token_mean": token_mean}.get(aggregation)
    if agg is None:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    return agg(per_token, mask)
