"""POPI, rank fusion and precision@k against hand-computed small cases."""

import numpy as np
import pytest

from cropi_core.errors import CropiError
from cropi_core.scoring import fuse_ranks, popi, precision_at, rank_order, top_count

nan = np.nan


def test_popi_hand_computed():
    val = np.array([[1.0, 0.0], [0.0, 1.0], [nan, 5.0]])  # NaN row excluded -> mean (0.5, 0.5)
    train = np.array([[1.0, 1.0], [1.0, 0.0], [-2.0, -2.0], [0.0, 0.0], [3.0, nan], [1.0, -1.0]])
    s = popi(train, val)
    assert s.dtype == np.float64
    np.testing.assert_allclose(s[[0, 1, 2, 5]], [1.0, np.sqrt(0.5), -1.0, 0.0], atol=1e-15)
    assert np.isnan(s[3]) and np.isnan(s[4])  # zero-norm and NaN rows


def test_popi_float16_input_computed_in_float64():
    # fp16 dot products of these rows overflow (60000² > 65504); float64 gives the exact cosine 1.
    train = np.array([[60000.0, 60000.0]], dtype=np.float16)
    val = np.array([[30000.0, 30000.0]], dtype=np.float16)
    assert popi(train, val)[0] == pytest.approx(1.0, abs=1e-12)


def test_popi_plain_mean_not_mean_of_normalised():
    # mean of (10,0) and (0,1) is (5, .5); a mean of unit vectors would be (.5,.5) instead.
    s = popi(np.array([[1.0, 0.0]]), np.array([[10.0, 0.0], [0.0, 1.0]]))
    assert s[0] == pytest.approx(5.0 / np.hypot(5.0, 0.5))


def test_popi_errors():
    with pytest.raises(CropiError, match="NaN"):
        popi(np.ones((2, 2)), np.full((3, 2), nan))
    with pytest.raises(CropiError, match="norm"):
        popi(np.ones((2, 2)), np.array([[1.0, 0.0], [-1.0, 0.0]]))
    with pytest.raises(CropiError, match="no validation"):
        popi(np.ones((2, 2)), np.ones((0, 2)))
    with pytest.raises(ValueError):
        popi(np.ones((2, 3)), np.ones((2, 2)))


def test_top_count_rounding():
    assert top_count(0.1, 25) == 2  # floor(2.5)
    assert top_count(0.29, 100) == 29  # 0.29*100 = 28.999999999999996 in float
    assert top_count(0.1, 5) == 1  # floor(0.5) = 0 -> at least one
    assert top_count(1.0, 7) == 7
    assert top_count(0.5, 0) == 0
    with pytest.raises(ValueError):
        top_count(0.0, 10)


def test_rank_order_nan_last_ties_by_index():
    s = np.array([0.5, nan, 0.9, 0.5, nan, -1.0, 0.9])
    assert rank_order(s).tolist() == [2, 6, 0, 3, 5, 1, 4]


def test_fuse_ranks_hand_computed():
    a = np.array([0.9, 0.8, 0.1, 0.7, 0.0, nan, 0.2, 0.3, 0.4, 0.5])  # top 3: 0, 1, 3
    b = np.array([0.1, 0.95, 0.9, 0.2, 0.3, 0.4, 0.5, nan, 0.6, 0.0])  # top 3: 1, 2, 8
    f = fuse_ranks([a, b], top_ratio=0.3)
    expected = np.zeros(10)
    expected[0] = 1.0
    expected[1] = 1 / 2 + 1 / 1
    expected[3] = 1 / 3
    expected[2] = 1 / 2
    expected[8] = 1 / 3
    np.testing.assert_allclose(f, expected, rtol=0, atol=1e-15)
    f2 = fuse_ranks([a, b], top_ratio=0.3, k_rrf=60.0)
    assert f2[1] == pytest.approx(1 / 62 + 1 / 61)
    assert f2[5] == 0.0 and f2[9] == 0.0


def test_fuse_ranks_one_list_preserves_order():
    rng = np.random.default_rng(0)
    s = rng.normal(size=200)
    s[[3, 50]] = nan
    f = fuse_ranks([s], top_ratio=0.1)
    top = rank_order(s)[:20]
    assert (f > 0).sum() == 20
    assert rank_order(f)[:20].tolist() == top.tolist()
    assert np.all(np.diff(f[top]) < 0)


def test_fuse_ranks_ties_and_nan_never_kept():
    s = np.array([nan, 1.0, 1.0, nan, 0.5])
    f = fuse_ranks([s], top_ratio=0.4)  # keep 2 of 5: tie 1.0 at indices 1, 2 -> ranks 1, 2
    assert f.tolist() == [0.0, 1.0, 0.5, 0.0, 0.0]
    all_nan = np.full(4, nan)
    assert fuse_ranks([all_nan], top_ratio=1.0).tolist() == [0.0] * 4
    # ratio too small for the pool keeps one item, not zero
    assert (fuse_ranks([np.arange(5.0)], top_ratio=0.1) > 0).sum() == 1


def test_fuse_ranks_bad_input():
    with pytest.raises(ValueError):
        fuse_ranks([])
    with pytest.raises(ValueError):
        fuse_ranks([np.ones(3), np.ones(4)])


def test_precision_at():
    exact = np.arange(20.0)  # top 10% = {19, 18}
    assert precision_at(exact, exact) == 1.0
    approx = exact.copy()
    approx[18] = -5  # now top = {19, 17}
    assert precision_at(approx, exact) == 0.5
    assert precision_at(-exact, exact) == 0.0
    approx_nan = exact.copy()
    approx_nan[19] = nan  # NaN is never top -> top = {18, 17}
    assert precision_at(approx_nan, exact) == 0.5
    assert precision_at(exact, exact, frac=0.25) == 1.0
    assert np.isnan(precision_at(exact, np.full(20, nan)))


# ---------------------------------------------------------------- scoring rules beyond the paper
def test_scoring_rules_hand_computed():
    """val rows (1,0) and (1,2) -> ḡ = (1, 1), ‖ḡ‖ = √2. Train rows:
    a = (3, 4): ‖a‖ = 5, ⟨a,ḡ⟩ = 7, cos = 7/(5√2) ≈ 0.98995, cos·‖a‖^0.5 = 7/(5√2)·√5 ≈ 2.21359, cos·‖a‖ = 7/√2
    b = (1, 0): ‖b‖ = 1, ⟨b,ḡ⟩ = 1, cos = 1/√2 ≈ 0.70711 (same under every α: ‖b‖ = 1)
    c = (0, -2): ‖c‖ = 2, ⟨c,ḡ⟩ = −2, cos = −1/√2, cos·‖c‖^0.5 = −(1/√2)·√2 = −1
    d: NaN row, e: zero row → NaN under every rule.
    The cosine ranks a > b > c; the inner product a > b > c too, but rescales: a is 7× b, not 1.4×."""
    from cropi_core.scoring import influence_scores

    val = np.array([[1.0, 0.0], [1.0, 2.0]])
    train = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, -2.0], [nan, 1.0], [0.0, 0.0]])
    r2 = np.sqrt(2.0)
    cos = influence_scores(train, val, "cosine")
    np.testing.assert_allclose(cos[:3], [7 / (5 * r2), 1 / r2, -1 / r2], rtol=1e-14)
    np.testing.assert_array_equal(cos, popi(train, val))  # the paper's rule is POPI itself
    np.testing.assert_allclose(influence_scores(train, val, "inner")[:3], [7.0, 1.0, -2.0], rtol=1e-14)
    np.testing.assert_allclose(influence_scores(train, val, "cosine_norm", 0.5)[:3],
                               [7 / (5 * r2) * np.sqrt(5), 1 / r2, -1.0], rtol=1e-14)
    np.testing.assert_allclose(influence_scores(train, val, "cosine_norm", 1.0)[:3], [7 / r2, 1 / r2, -2 / r2],
                               rtol=1e-14)  # α = 1: the inner product / ‖ḡ‖
    np.testing.assert_allclose(influence_scores(train, val, "cosine_norm", 0.0), cos, rtol=1e-14)
    for rule in ("cosine", "inner", "cosine_norm"):
        assert np.isnan(influence_scores(train, val, rule)[3:]).all()
    with pytest.raises(CropiError, match="unknown scoring rule 'dot'"):
        influence_scores(train, val, "dot")


def test_magnitude_changes_the_ranking_where_the_cosine_ignores_it():
    """A small gradient pointing exactly at ḡ (cos 1, ‖·‖ 0.1) beats a large one at 45° (cos 0.707, ‖·‖ 10) under the
    cosine; the inner product (0.1 vs 7.07) and cos·‖·‖^0.5 (0.316 vs 2.236) reverse it."""
    from cropi_core.scoring import influence_scores

    val = np.array([[1.0, 0.0]])
    train = np.array([[0.1, 0.0], [10 / np.sqrt(2), 10 / np.sqrt(2)]])
    assert rank_order(influence_scores(train, val, "cosine")).tolist() == [0, 1]
    assert rank_order(influence_scores(train, val, "inner")).tolist() == [1, 0]
    np.testing.assert_allclose(influence_scores(train, val, "cosine_norm", 0.5), [np.sqrt(0.1), np.sqrt(5)],
                               rtol=1e-12)


def test_rrf_full_rankings_hand_computed():
    """k = 1. List A = (0.9, 0.5, 0.1, NaN): ranks 1, 2, 3, 4. List B (learnability-like, ties) = (0.1, 0.25, 0.25, 0.2):
    ranks 4, 1.5, 1.5 (tied: mean of ranks 1 and 2), 3.
    fused = 1/(1+rA) + 1/(1+rB): item 0: 1/2 + 1/5 = 0.7; item 1: 1/3 + 1/2.5 = 0.7333; item 2: 1/4 + 1/2.5 = 0.65;
    item 3: NaN (not rankable by A). So item 1, ranked well by both, beats item 0, first in A but last in B."""
    from cropi_core.scoring import rrf, tied_ranks

    a = np.array([0.9, 0.5, 0.1, nan])
    b = np.array([0.1, 0.25, 0.25, 0.2])
    np.testing.assert_array_equal(tied_ranks(b), [4.0, 1.5, 1.5, 3.0])
    np.testing.assert_array_equal(tied_ranks(a), [1.0, 2.0, 3.0, 4.0])
    f = rrf([a, b], k=1.0)
    np.testing.assert_allclose(f[:3], [0.7, 1 / 3 + 1 / 2.5, 0.25 + 1 / 2.5], rtol=1e-14)
    assert np.isnan(f[3])
    assert rank_order(f)[:3].tolist() == [1, 0, 2]
    with pytest.raises(ValueError):
        rrf([a, b[:3]])


def test_ess_weighted_hand_computed():
    """scores [2 sets, 4 prompts] · (ESS/K)^γ per prompt. With ess_frac = [1, 0.5, 0.25, 0.8] and γ = 2 the weights
    are [1, 0.25, 0.0625, 0.64]: 0.4·1 = 0.4, −0.2·0.25 = −0.05, 0.8·0.0625 = 0.05, NaN stays NaN; second list
    0.1, 0.1·0.25 = 0.025, −0.4·0.0625 = −0.025, 0.5·0.64 = 0.32. A prompt with a high score but degenerate
    weights (index 2) falls below one with a lower score and healthy weights (index 0)."""
    from cropi_core.scoring import ess_weighted

    s = np.array([[0.4, -0.2, 0.8, np.nan], [0.1, 0.1, -0.4, 0.5]])
    got = ess_weighted(s, np.array([1.0, 0.5, 0.25, 0.8]), 2.0)
    np.testing.assert_allclose(got, [[0.4, -0.05, 0.05, np.nan], [0.1, 0.025, -0.025, 0.32]], rtol=1e-12)
    assert got[0, 2] < got[0, 0] and s[0, 2] > s[0, 0]
    np.testing.assert_array_equal(ess_weighted(s, np.array([1.0, 0.5, 0.25, 0.8]), 0.0), s)  # power 0: the paper
    # ESS/K above 1 (rounding) is clipped to 1; a NaN ESS makes the score NaN
    np.testing.assert_allclose(ess_weighted(np.array([0.3, 0.3]), np.array([1.0 + 1e-12, np.nan]), 1.0), [0.3, np.nan])
    with pytest.raises(ValueError, match="expected ess_frac"):
        ess_weighted(s, np.ones(3), 1.0)
    with pytest.raises(ValueError, match="power"):
        ess_weighted(s, np.ones(4), -1.0)


def test_split_half_reliability_hand_computed():
    """One validation set of two rows, v1 = (1, 0) and v2 = (0, 1): each half is one row. Pool rows t1 = (1, 0),
    t2 = (0, 1), t3 = (1, 1), t4 = (2, 1) have cosines 1, 0, 0.707, 0.894 with v1 (ranks 1, 4, 3, 2) and 0, 1,
    0.707, 0.447 with v2 (ranks 4, 1, 2, 3): centred, the second rank vector is minus the first, so ρ = −1."""
    from cropi_core.scoring import split_half_reliability

    pool = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    assert split_half_reliability(pool, [np.array([[1.0, 0.0], [0.0, 1.0]])]) == pytest.approx(-1.0)
    # identical halves order the pool identically: ρ = 1; an unscorable pool row (NaN) is left out
    same = np.array([[1.0, 0.2], [1.0, 0.2], [1.0, 0.2]])
    assert split_half_reliability(np.vstack([pool, [np.nan, 1.0]]), [same]) == pytest.approx(1.0)
    # a set with fewer than two finite rows cannot be split: NaN, not a number that means something
    assert np.isnan(split_half_reliability(pool, [same, np.array([[1.0, 0.0], [np.nan, 0.0]])]))


def test_split_half_reliability_matches_pandas_spearman_on_random_sketches():
    """Independent reference: the same seeded halves scored with popi, averaged over two sets; Spearman's ρ as the
    Pearson correlation of pandas' average ranks (NaN rows dropped) of the two score vectors, averaged over the
    three splits."""
    import pandas as pd

    from cropi_core.scoring import split_half_reliability

    rng = np.random.default_rng(3)
    pool = rng.normal(size=(50, 8))
    pool[7] = np.nan
    direction = rng.normal(size=8)
    vals = [direction + rng.normal(size=(9, 8)), direction + rng.normal(size=(6, 8))]
    got = split_half_reliability(pool, vals, seed=5, splits=3)
    rhos = []
    for split in range(3):
        halves = [[], []]
        for j, v in enumerate(vals):
            perm = np.random.default_rng([5, split, j]).permutation(len(v))
            halves[0].append(popi(pool, v[perm[: len(v) // 2]]))
            halves[1].append(popi(pool, v[perm[len(v) // 2:]]))
        both = pd.DataFrame({"a": np.mean(halves[0], axis=0), "b": np.mean(halves[1], axis=0)}).dropna()
        ranks = both.rank(method="average")
        assert len(ranks) == 49
        rhos.append(ranks["a"].corr(ranks["b"]))
    assert got == pytest.approx(np.mean(rhos), abs=1e-12)
    assert 0.3 < got < 1.0  # a shared direction plus noise: clearly positive, not perfect
