"""Selection methods against hand-computed small cases: ties, NaNs, ratio rounding, seeds, errors."""

import numpy as np
import pytest

from cropi_core.errors import CropiError
from cropi_core.selection import select

nan = np.nan


def test_popi_single_list():
    s = np.array([0.1, 0.9, nan, 0.9, -0.3, 0.5, 0.2, nan, 0.0, 0.4, 0.8, 0.7])  # N=12, ratio .25 -> 3
    assert select("popi", scores=s, ratio=0.25).tolist() == [1, 3, 10]  # tie 0.9: lower index first
    assert select("influence_once", scores=s, ratio=0.25).tolist() == [1, 3, 10]


def test_popi_excludes_unscorable_and_rounds_down():
    s = np.array([nan, nan, nan, 0.2, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, 0.3, nan, nan, nan])
    # ratio 0.15 of 20 = 3, but only two scorable prompts
    assert select("popi", scores=s, ratio=0.15).tolist() == [16, 3]
    # ratio 0.19 of 20 = floor(3.8) = 3
    s2 = np.linspace(0, 1, 20)
    assert select("popi", scores=s2, ratio=0.19).tolist() == [19, 18, 17]
    with pytest.raises(CropiError, match="scorable"):
        select("popi", scores=np.full(10, nan))


def test_popi_two_lists_fused():
    a = np.array([0.9, 0.8, 0.1, 0.7, 0.0, nan, 0.2, 0.3, 0.4, 0.5])  # top 3: 0 (1), 1 (2), 3 (3)
    b = np.array([0.1, 0.95, 0.9, 0.2, 0.3, 0.4, 0.5, nan, 0.6, 0.0])  # top 3: 1 (1), 2 (2), 8 (3)
    # fused: 1 -> 1.5, 0 -> 1, 2 -> .5, 3 -> 1/3, 8 -> 1/3 (tie: lower index 3 first)
    assert select("popi", scores=[a, b], ratio=0.3).tolist() == [1, 0, 2]
    # ratio .5 keeps 5 per list: a -> 0, 1, 3, 9, 8 ; b -> 1, 2, 8, 6, 5
    # fused: 1 -> 1/2+1, 0 -> 1, 8 -> 1/5+1/3, 2 -> 1/2, 3 -> 1/3
    assert select("popi", scores=np.stack([a, b]), ratio=0.5).tolist() == [1, 0, 8, 2, 3]
    # k_rrf=10 flattens reciprocal ranks but keeps the same order here
    assert select("popi", scores=[a, b], ratio=0.3, k_rrf=10.0).tolist() == [1, 0, 2]


def test_full_and_random():
    assert select("full", n=5).tolist() == [0, 1, 2, 3, 4]
    assert select("full", pass_rates=np.zeros(3)).tolist() == [0, 1, 2]
    r = select("random", n=100, ratio=0.1, seed=3)
    assert len(r) == 10 and len(set(r.tolist())) == 10 and r.min() >= 0 and r.max() < 100
    assert r.tolist() == select("random", n=100, ratio=0.1, seed=3).tolist()
    assert r.tolist() != select("random", n=100, ratio=0.1, seed=4).tolist()
    assert select("random", scores=np.zeros(7), ratio=0.1).size == 1  # at least one


def test_pass_rate():
    p = np.array([0.0, 0.5, 1.0, 0.25, 0.0, 1.0, 0.75, 0.125, 1.0, 0.0])  # eligible: 1, 3, 6, 7
    sel = select("pass_rate", pass_rates=p, ratio=0.3, seed=0)
    assert len(sel) == 3 and set(sel.tolist()) <= {1, 3, 6, 7}
    assert sel.tolist() == select("pass_rate", pass_rates=p, ratio=0.3, seed=0).tolist()
    all_seeds = {tuple(select("pass_rate", pass_rates=p, ratio=0.3, seed=s).tolist()) for s in range(20)}
    assert len(all_seeds) > 1
    # more requested than eligible -> all eligible
    assert sorted(select("pass_rate", pass_rates=p, ratio=1.0).tolist()) == [1, 3, 6, 7]
    with pytest.raises(CropiError, match="0 < pass rate < 1"):
        select("pass_rate", pass_rates=np.array([0.0, 1.0]))
    with pytest.raises(CropiError, match="prompt 1"):
        select("pass_rate", pass_rates=np.array([0.5, nan]))


def test_learnability_ties_deterministic():
    p = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 0.5, 0.125])
    # p(1-p): 0, .1875, .25, .1875, 0, .25, .109375  -> order 2, 5, 1, 3, 6, 0, 4
    assert select("learnability", pass_rates=p, ratio=0.6).tolist() == [2, 5, 1, 3]
    assert select("learnability", pass_rates=p, ratio=1.0).tolist() == [2, 5, 1, 3, 6, 0, 4]


def test_missing_inputs():
    with pytest.raises(ValueError, match="scores"):
        select("popi")
    with pytest.raises(ValueError, match="pass_rates"):
        select("learnability")
    with pytest.raises(ValueError, match="pool size"):
        select("random")
    with pytest.raises(CropiError, match="unknown method"):
        select("best")
    with pytest.raises(ValueError, match="ratio"):
        select("full", n=3, ratio=0.0)


def test_mix_random_replaces_the_lowest_ranked_share_by_fresh_random_prompts():
    """selection.mix_random: same size, the top (1 - share) kept in order, the rest drawn from prompts not kept,
    seeded; share 0 is the identity."""
    import numpy as np

    from cropi_core.selection import mix_random

    idx = np.arange(10, 30)  # a ranked selection of 20 from a pool of 100
    assert np.array_equal(mix_random(idx, 100, 0.0, seed=1), idx)
    out = mix_random(idx, 100, 0.25, seed=1)
    assert out.size == 20 and len(set(out.tolist())) == 20
    assert np.array_equal(out[:15], idx[:15])
    assert not set(out[15:].tolist()) & set(idx[:15].tolist())
    assert np.array_equal(out, mix_random(idx, 100, 0.25, seed=1))
    assert not np.array_equal(out, mix_random(idx, 100, 0.25, seed=2))


def test_draw_candidates_is_a_seeded_draw_among_scorable_prompts_plus_the_previous_selection():
    """influence.candidates: min(n, #scorable) distinct scorable rows, the same for the same seed and another for
    another stage's seed, united with the previous selection (which may add unscorable-now rows), sorted."""
    from cropi_core.selection import draw_candidates

    scorable = np.zeros(100, dtype=bool)
    scorable[::2] = True  # 50 scorable rows: the even ones
    a = draw_candidates(scorable, 10, seed=(0, 1))
    assert len(a) == 10 == len(set(a)) and a == sorted(a) and all(i % 2 == 0 for i in a)
    assert a == draw_candidates(scorable, 10, seed=(0, 1)) and a != draw_candidates(scorable, 10, seed=(0, 2))
    assert draw_candidates(scorable, 500, seed=0) == list(range(0, 100, 2))  # more than there are: all of them
    b = draw_candidates(scorable, 10, previous=[3, 5, a[0]], seed=(0, 1))
    assert b == sorted(set(a) | {3, 5})  # 12: the draw is unchanged by the previous selection, a[0] counted once


def test_learnability_rrf_fusion_hand_computed():
    """fusion learnability_rrf, k = 0, one validation set. POPI = (0.9, 0.2, 0.5, NaN, 0.4), pass rates
    (0.125, 0.5, 0.5, 0.0, 0.375) → p(1−p) = (0.109, 0.25, 0.25, 0, 0.234).
    Influence ranks 1, 4, 2, 5 (NaN), 3 → rrf over one list = 1/rank: (1, 0.25, 0.5, NaN, 0.333).
    Second fusion: influence ranks again 1, 4, 2, -, 3; learnability tied ranks 4, 1.5, 1.5, 5, 3.
    fused = 1/r_inf + 1/r_learn: item 0: 1 + 0.25 = 1.25; item 1: 0.25 + 0.667 = 0.917; item 2: 0.5 + 0.667 = 1.167;
    item 4: 0.333 + 0.333 = 0.667; item 3 NaN (no POPI: never selected).
    ratio 0.6 of 5 → 3 prompts: 0, 2, 1 — POPI alone would pick 0, 2, 4."""
    from cropi_core.selection import fused_influence

    s = np.array([0.9, 0.2, 0.5, np.nan, 0.4])
    p = np.array([0.125, 0.5, 0.5, 0.0, 0.375])
    f = fused_influence(s, p, k=0.0)
    np.testing.assert_allclose(f[[0, 1, 2, 4]], [1.25, 0.25 + 1 / 1.5, 0.5 + 1 / 1.5, 2 / 3], rtol=1e-14)
    assert np.isnan(f[3])
    assert select("popi", scores=s, pass_rates=p, ratio=0.6, fusion="learnability_rrf", k_fusion=0.0).tolist() == [0, 2, 1]
    assert select("popi", scores=s, ratio=0.6).tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match="pass_rates"):
        select("popi", scores=s, ratio=0.6, fusion="learnability_rrf")
    with pytest.raises(CropiError, match="unknown fusion"):
        select("popi", scores=s, pass_rates=p, fusion="mean")


def test_cascade_candidates_are_the_top_learnability_scorable_prompts():
    """candidates_by learnability, n = 2: pass rates (0.5, 0.125, 0.375, 0.5, 0.0, 0.625); rows 3 and 4 flagged
    unscorable (the flag is the one rule sketch_prompts uses, so the cascade obeys it even for row 3's p = 0.5).
    p(1−p) of the scorable: row 0 0.25, row 1 0.109, row 2 0.234, row 5 0.234.
    Top 2: row 0, then row 2 (tie with row 5 → lower index). ∪ previous {5} → [0, 2, 5]. n beyond the scorable
    count keeps only the 4 scorable rows (row 4 p = 0, row 3 unscorable are never candidates)."""
    from cropi_core.selection import learnability_candidates

    p = np.array([0.5, 0.125, 0.375, 0.5, 0.0, 0.625])
    scorable = np.array([True, True, True, False, False, True])
    assert learnability_candidates(p, scorable, 2) == [0, 2]
    assert learnability_candidates(p, scorable, 2, previous=[5]) == [0, 2, 5]
    assert learnability_candidates(p, scorable, 100) == [0, 1, 2, 5]
    assert learnability_candidates(p, scorable, 0) == []


@pytest.mark.parametrize("ess, kl, ess_t, kl_t, fires", [
    (0.70, 0.01, 0.6, None, False),  # ESS/K above the threshold, KL not checked
    (0.59, 0.01, 0.6, None, True),  # just below
    (0.60, 0.01, 0.6, None, False),  # at the threshold: not below
    (0.90, 0.05, 0.6, 0.02, True),  # KL over its threshold fires alone
    (0.90, 0.02, 0.6, 0.02, False),  # at the KL threshold: not over
    (float("nan"), 0.0, 0.6, None, True),  # no measurement: re-score
    (None, None, 0.0, None, True),
])
def test_drift_trigger_fires_at_the_thresholds(ess, kl, ess_t, kl_t, fires):
    from cropi_core.selection import drifted

    assert drifted(ess, kl, ess_t, kl_t) is fires


def test_conflict_gate_hand_computed():
    """Two validation lists over 8 prompts; prompt 7 was not probed (NaN). Mean scores s = [−0.5, 0.0, 0.1, 0.2,
    0.3, 0.4, −0.2]: median 0.1; |s − 0.1| = [0.6, 0.1, 0, 0.1, 0.2, 0.3, 0.3] → MAD 0.2, σ̂ = 1.4826 · 0.2 =
    0.29652. gate_score 1: threshold 0.1 − 0.29652 = −0.19652 → prompts 0 (−0.5) and 6 (−0.2) conflict, share 2/7;
    gate_score 2: threshold −0.49304 → only prompt 0, 1/7. Fires at gate_share 2/7 (≥), not at 0.29."""
    from cropi_core.selection import conflict_gate

    s = np.array([[-0.6, 0.1, 0.1, 0.3, 0.2, 0.5, -0.3, np.nan],
                  [-0.4, -0.1, 0.1, 0.1, 0.4, 0.3, -0.1, np.nan]])
    d = conflict_gate(s, 1.0, 2 / 7)
    assert d.fires and d.probed == 7 and d.conflicting == [0, 6] and d.share == pytest.approx(2 / 7)
    assert d.threshold == pytest.approx(0.1 - 1.4826 * 0.2)
    assert not conflict_gate(s, 1.0, 0.29).fires
    assert conflict_gate(s, 2.0, 0.1).conflicting == [0]
    # scale-free: the same scores ×100 conflict in the same places
    assert conflict_gate(100 * s, 1.0, 2 / 7).conflicting == [0, 6]
    empty = conflict_gate(np.full((2, 4), np.nan), 1.0, 0.01)
    assert not empty.fires and empty.probed == 0 and empty.share == 0.0
