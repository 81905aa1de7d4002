"""Off-policy health (PAPER.md §3, §8): how far π_θ has drifted from the behavior policy β on β's stored responses.

Per prompt: the effective sample size of the sequence-level importance weights and token-level KL estimates,
teacher-forcing θ on the same packed micro-batches as influence.py (no gradients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cropi_core.influence import _check, _micro_batches, _pad, _Seq, _token_logprobs
from cropi_core.rollout.types import PromptRollouts

__all__ = ["OffPolicyHealth", "offpolicy_health"]


@dataclass
class OffPolicyHealth:
    """Per prompt, how far π_θ has drifted from β on the stored responses (numpy arrays of shape [B]).

    ess:            (Σ_k w_k)² / Σ_k w_k², w_k = exp(Σ_t log π_θ − log β): ESS of the sequence-level importance
                    weights (computed in log space); K = no drift, 1 = one response carries all the weight.
    ess_frac:       ess / K.
    kl:             token mean of ρ log ρ − ρ + 1, ρ = π_θ/β per token on β's stored samples: ≥ 0 and, since
                    E_β[ρ log ρ] = KL(π_θ‖β) and E_β[ρ − 1] = 0, an unbiased per-token estimate of KL(π_θ‖β)
                    (the importance-weighted form of Schulman's k3 estimator).
    kl_k3:          token mean of exp(log β − log π_θ) − (log β − log π_θ) − 1: TRL's/verl's "low_var_kl"
                    formula evaluated on the stored responses (comparable with training logs; it is unbiased for
                    KL(π_θ‖β) only on π_θ's own samples).
    log_ratio_mean: token mean of log π_θ − log β (k1; on β's samples its expectation is −KL(β‖π_θ)).
    """

    ess: np.ndarray
    ess_frac: np.ndarray
    kl: np.ndarray
    kl_k3: np.ndarray
    log_ratio_mean: np.ndarray

    def summary(self) -> dict[str, float]:
        """Means over prompts (NaN-aware), for logs."""
        return {k: float(np.nanmean(getattr(self, k))) for k in ("ess", "ess_frac", "kl", "kl_k3", "log_ratio_mean")}


@torch.no_grad()
def offpolicy_health(
    model: nn.Module,
    prompts: Sequence[PromptRollouts],
    *,
    micro_batch_tokens: int = 4096,
    temperature: float = 1.0,
) -> OffPolicyHealth:
    """ESS of sequence-level importance weights and token KL estimates of π_θ against β, per prompt."""
    _check(prompts, model)
    device = next(model.parameters()).device
    cdt = torch.float64
    b_n = len(prompts)
    seq_lr = [[0.0] * p.k for p in prompts]
    k3 = np.zeros(b_n)
    kis = np.zeros(b_n)
    lr = np.zeros(b_n)
    ntok = np.zeros(b_n)
    seqs = []
    for slot, p in enumerate(prompts):
        for k, (r, lb) in enumerate(zip(p.response_ids, p.behavior_logprobs)):
            if r.numel():
                ids = torch.cat([p.prompt_ids.reshape(-1), r.reshape(-1)]).long()
                seqs.append(_Seq(slot, k, ids, int(p.prompt_ids.numel()), lb.reshape(-1), 0.0))
    was = model.training
    model.eval()
    try:
        for batch in _micro_batches(seqs, micro_batch_tokens):
            ids, attn, pos, logbeta, mask, _ = _pad(batch, device, cdt)
            logr = (_token_logprobs(model, ids, attn, temperature, pos).to(cdt) - logbeta) * mask  # log π − log β
            rho = torch.exp(logr)
            for b, s in enumerate(batch):
                m = mask[b].bool()
                x = logr[b][m]
                seq_lr[s.slot][s.k] = float(x.sum())
                k3[s.slot] += float((torch.exp(-x) + x - 1).sum())
                kis[s.slot] += float((rho[b][m] * x - rho[b][m] + 1).sum())
                lr[s.slot] += float(x.sum())
                ntok[s.slot] += int(m.sum())
    finally:
        model.train(was)
    ess = np.array([_ess(np.asarray(v)) for v in seq_lr])
    ks = np.array([p.k for p in prompts], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return OffPolicyHealth(ess=ess, ess_frac=ess / ks, kl=kis / ntok, kl_k3=k3 / ntok, log_ratio_mean=lr / ntok)


def _ess(log_w: np.ndarray) -> float:
    if log_w.size == 0:
        return float("nan")
    m = log_w.max()
    w = np.exp(log_w - m)
    return float(w.sum() ** 2 / (w**2).sum())
