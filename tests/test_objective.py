"""GRPO objective pieces against hand computations."""

import math

import pytest
import torch

from cropi_core.objective import (
    group_advantages,
    importance_ratio,
    seq_mean_token_mean,
    sequence_coefficients,
    surrogate_loss,
    token_mean,
)


def test_group_advantages_hand_case():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    std = math.sqrt(sum((x - 0.5) ** 2 for x in [1, 0, 0, 1]) / 3)  # unbiased
    want = torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4)
    torch.testing.assert_close(group_advantages(r), want)


def test_group_advantages_batched_and_all_equal_is_zero():
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    a = group_advantages(r)
    assert a.shape == (3, 3)
    assert torch.equal(a[:2], torch.zeros(2, 3))
    m, s = 1 / 3, math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)
    torch.testing.assert_close(a[2], torch.tensor([1 - m, -m, -m]) / (s + 1e-4))


def test_group_advantages_needs_two():
    with pytest.raises(ValueError, match="K >= 2"):
        group_advantages(torch.tensor([1.0]))


def test_aggregations_by_hand():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert seq_mean_token_mean(v, m).item() == pytest.approx((2.0 + 4.0) / 2)
    assert token_mean(v, m).item() == pytest.approx(10.0 / 4)


def test_surrogate_value_and_coefficients_agree():
    g = torch.Generator().manual_seed(0)
    lens = [3, 5, 2, 4]
    logp = [(-torch.rand(n, generator=g, dtype=torch.float64)).requires_grad_() for n in lens]
    logb = [-torch.rand(n, generator=g, dtype=torch.float64) for n in lens]
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    for agg in ("seq_mean_token_mean", "token_mean"):
        loss = surrogate_loss(logp, logb, adv, agg)
        c = sequence_coefficients(adv, torch.tensor(lens), agg)
        by_coef = sum(c[k] * importance_ratio(logp[k], logb[k]).sum() for k in range(4))
        # hand formula
        if agg == "seq_mean_token_mean":
            hand = -sum(adv[k] * torch.exp(logp[k] - logb[k]).mean() for k in range(4)) / 4
        else:
            hand = -sum(adv[k] * torch.exp(logp[k] - logb[k]).sum() for k in range(4)) / sum(lens)
        torch.testing.assert_close(loss, hand)
        torch.testing.assert_close(by_coef, hand)
        # ρ carries the gradient, its value at θ=β is 1
        (gr,) = torch.autograd.grad(loss, logp[0])
        assert gr.abs().sum() > 0
    assert torch.equal(importance_ratio(logb[0], logb[0]), torch.ones(3, dtype=torch.float64))


def test_unknown_aggregation():
    with pytest.raises(ValueError, match="aggregation"):
        sequence_coefficients(torch.zeros(2), torch.ones(2), "sum")  # type: ignore[arg-type]
