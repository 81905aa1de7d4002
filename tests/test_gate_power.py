"""benchmarks/gate_power.py: the conflict gate's odds of firing, replayed on a pool's scores, against the
hypergeometric probability derived by hand."""

from __future__ import annotations

from math import comb

import numpy as np

from benchmarks.gate_power import fire_rate

# 400 scorable prompts: 392 spread evenly on [-0.05, 0.05] and 8 at -1.0. In a probe of 64 or 128 the median lies in
# the bulk and its MAD is ≈ 0.025 (SD ≈ 0.003), so σ̂ = 1.4826·MAD ≈ 0.037 and the threshold median - 3σ̂ ≈ -0.11
# lies below every bulk prompt (it would need MAD < 0.014 to reach -0.05) and far above -1.0: exactly the
# outliers conflict.
POOL = np.concatenate([np.linspace(-0.05, 0.05, 392), np.full(8, -1.0)])[None, :]  # [1 list, 400]


def p_two_or_more_outliers(n: int) -> float:
    """P(X ≥ 2), X ~ Hypergeometric(N=400, K=8, n): a probe of n holds at least 2 of POOL's 8 outliers."""
    p0 = comb(392, n) / comb(400, n)
    p1 = 8 * comb(392, n - 1) / comb(400, n)
    return 1 - p0 - p1


def assert_within_3_sd(rate: float, expected: float, draws: int) -> None:
    assert abs(rate - expected) < 3 * np.sqrt(expected * (1 - expected) / draws) + 1e-9, (rate, expected)


def test_fire_rate_is_the_hypergeometric_odds_of_probing_two_conflicting_prompts():
    # With gate_share 0.03 a 64-prompt probe fires when it holds ≥ 2 outliers (2/64 ≥ 0.03 > 1/64): P ≈ 0.37.
    assert_within_3_sd(fire_rate(POOL, 64, 4000, 3.0, 0.03, seed=0), p_two_or_more_outliers(64), 4000)
    # nothing conflicts: never fires; a probe larger than the pool has no rate
    assert fire_rate(POOL[:, :392], 64, 500, 3.0, 0.03, seed=0) == 0.0
    assert np.isnan(fire_rate(POOL, 401, 10, 3.0, 0.03, seed=0))


def test_the_default_gate_fires_at_two_of_its_128_probed_prompts():
    # The default (SelectionConfig: gate_probe 128, gate_share 0.015) fires at 2 conflicting prompts of 128
    # (2/128 = 0.0156 ≥ 0.015 > 1/128): P(X ≥ 2 of 128) ≈ 0.78, against ≈ 0.37 for 2 of 64 above.
    from cropi_core.config import SelectionConfig

    cfg = SelectionConfig()
    assert (cfg.gate_probe, cfg.gate_score) == (128, 3.0)
    assert 2 / 128 >= cfg.gate_share > 1 / 128
    rate = fire_rate(POOL, cfg.gate_probe, 4000, cfg.gate_score, cfg.gate_share, seed=1)
    assert_within_3_sd(rate, p_two_or_more_outliers(128), 4000)
    assert fire_rate(POOL[:, :392], cfg.gate_probe, 500, cfg.gate_score, cfg.gate_share, seed=1) == 0.0
