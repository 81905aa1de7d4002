"""Which pool prompts a curriculum stage trains on (PAPER.md §5 and the §7 baselines).

`select(method, ...)` returns pool indices (int64) in rank order, best first. Every method picks
n = max(1, ⌊ratio·N⌋) prompts (see `cropi_core.scoring.top_count`), or fewer when fewer are eligible:

- "popi":   reciprocal-rank fusion of one or more POPI score lists (`scores`: ndarray[N] or a list /
            [n_lists, N] array, one per validation set), each list's top n kept, then the top n by fused
            score. Unscorable prompts (NaN) and prompts in no list's top set (fused score 0) are never
            selected. Ties in the fused score go to the lower index.
            With fusion="learnability_rrf" (beyond the paper): the score lists are fused over their FULL rankings
            (`cropi_core.scoring.rrf`, constant k_fusion), and that influence ranking is fused again, with equal
            weight, with the learnability p(1−p) ranking (ties share their mean rank); top n of the scorable.
- "influence_once": identical ranking to "popi"; the difference is in the flow, which calls it at
            stage 0 only and reuses that selection for every later stage (no re-scoring).
- "full":   every prompt, in pool order (ratio ignored).
- "random": a uniformly random n-subset, seeded (`numpy.random.default_rng(seed)`), in draw order.
- "pass_rate": a seeded random n-subset of the prompts with 0 < p < 1 (p = offline pass rate).
- "learnability": top n by p(1−p), ties to the lower index; prompts with p ∈ {0, 1} (learnability 0)
            appear only if fewer than n prompts have 0 < p < 1 (faithful to the paper's "top 10% by p(1−p)").

N comes from `scores` or `pass_rates` (or `n` for "full"/"random" when neither is given).
Missing inputs raise ValueError; "nothing eligible" (e.g. every prompt unscorable) raises CropiError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cropi_core.errors import CropiError
from cropi_core.scoring import fuse_ranks, rank_order, rrf, top_count

METHODS = ("popi", "full", "random", "pass_rate", "learnability", "influence_once")
FUSIONS = ("none", "learnability_rrf")

__all__ = ["select", "mix_random", "draw_candidates", "learnability_candidates", "fused_influence", "influence_ranking",
           "drifted", "conflict_gate", "GateDecision", "METHODS",
           "FUSIONS"]


def mix_random(idx: np.ndarray, n: int, share: float, seed: int) -> np.ndarray:
    """Replace the last ⌊share·len(idx)⌉ picks of a ranked selection (its lowest-ranked ones) by a seeded uniform
    draw from the pool prompts not kept, so the selection keeps its size. Beyond the paper: a small random share
    keeps every domain of the pool in each stage's training set, against forgetting the untargeted domains
    (`SelectionConfig.mix_random`). share = 0 returns `idx` unchanged."""
    idx = np.asarray(idx, dtype=np.int64)
    k = int(round(share * idx.size))
    if k <= 0 or idx.size == 0:
        return idx
    kept = idx[: idx.size - k]
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), kept)
    rng = np.random.default_rng([seed, 7919])
    return np.concatenate([kept, rest[rng.permutation(rest.size)[:k]]]).astype(np.int64)


def draw_candidates(scorable: np.ndarray, n: int, previous: Sequence[int] = (), seed: int | Sequence[int] = 0) -> list[int]:
    """The pool rows a stage re-scores when it does not score the whole pool (`InfluenceConfig.candidates`): a seeded
    uniform draw of min(n, #scorable) rows among the scorable ones (bool[N]), united with `previous` (the previous
    stage's selection, so a prompt that was on top stays in the running). Sorted int list. Beyond the paper."""
    scorable = np.asarray(scorable, dtype=bool)
    pick = np.flatnonzero(scorable)  # [S]
    rng = np.random.default_rng(seed)
    pick = rng.permutation(pick)[: max(0, n)]  # [min(n, S)]
    return sorted(set(pick.tolist()) | {int(i) for i in previous})


def learnability_candidates(pass_rates: np.ndarray, scorable: np.ndarray, n: int,
                            previous: Sequence[int] = ()) -> list[int]:
    """The cascade's candidates (`InfluenceConfig.candidates_by: learnability`): the top min(n, #scorable)
    scorable rows (bool[N]) by learnability p(1−p) of their offline pass rates (float[N]; ties to the lower index),
    united with `previous` (the previous stage's selection). Sorted int list. Only these rows are then sketched and
    ranked by influence: scoring cost ∝ n / N. Beyond the paper."""
    p = _pass_rates(pass_rates, "learnability")
    scorable = np.asarray(scorable, dtype=bool)
    if scorable.shape != p.shape:
        raise ValueError(f"learnability_candidates: scorable {scorable.shape} and pass_rates {p.shape} differ")
    learn = np.where(scorable, p * (1.0 - p), np.nan)  # [N]; unscorable rows rank last and are never kept
    top = rank_order(learn)[: min(max(0, n), int(scorable.sum()))]
    return sorted(set(top.tolist()) | {int(i) for i in previous})


def fused_influence(scores: np.ndarray | Sequence[np.ndarray], pass_rates: np.ndarray, k: float = 60.0) -> np.ndarray:
    """fusion "learnability_rrf": rrf([rrf(influence lists), p(1−p)], k) -> float64[N], NaN where any influence
    list is NaN (unscorable, or not a candidate)."""
    p = _pass_rates(pass_rates, "popi")
    influence = rrf(_score_lists(scores), k=k)  # [N]: one list's order when there is one validation set
    return rrf([influence, p * (1.0 - p)], k=k)


def influence_ranking(scores: np.ndarray | Sequence[np.ndarray], pass_rates: np.ndarray | None = None, *,
                      fusion: str = "none", ratio: float = 0.1, k_rrf: float = 0.0, k_fusion: float = 60.0) -> np.ndarray:
    """The fused value "popi" and "influence_once" rank by, float64[N] (higher = better): fusion "none" = the paper's
    `fuse_ranks` of the lists' top sets (0 = in no top set), "learnability_rrf" = `fused_influence` (NaN = no
    influence score). A prompt is eligible where the value is finite and > 0."""
    if fusion not in FUSIONS:
        raise CropiError(f"select: unknown fusion {fusion!r} (choose from {', '.join(FUSIONS)})")
    if fusion == "learnability_rrf":
        return fused_influence(scores, _pass_rates(pass_rates, "fusion"), k=k_fusion)
    return fuse_ranks(_score_lists(scores), top_ratio=ratio, k_rrf=k_rrf)


def drifted(ess_frac: float | None, kl: float | None, ess_threshold: float, kl_threshold: float | None) -> bool:
    """The drift trigger of `SelectionConfig.rescore: drift`: re-score when the mean ESS/K of θ_m on the kept
    selection's stored responses is below `ess_threshold`, or its token KL(θ_m‖β) above `kl_threshold` (None: KL
    not checked). A missing or NaN
    measurement re-scores (nothing says the old scores still hold)."""
    if ess_frac is None or not np.isfinite(ess_frac):
        return True
    if ess_frac < ess_threshold:
        return True
    if kl_threshold is not None and (kl is None or not np.isfinite(kl) or kl > kl_threshold):
        return True
    return False


@dataclass(frozen=True)
class GateDecision:
    """What the conflict gate (`SelectionConfig.gate_probe`) read from a random probe of the pool."""

    fires: bool  # True: part of the pool conflicts with the target, so influence ranks the whole pool
    probed: int  # scorable prompts the probe sketched
    conflicting: list[int]  # pool rows of the probe scored below `threshold`
    share: float  # len(conflicting) / probed (0.0 when nothing was probed)
    threshold: float  # median − gate_score · 1.4826 · MAD of the probe's scores (NaN when nothing was probed)


def conflict_gate(scores: np.ndarray | Sequence[np.ndarray], gate_score: float, gate_share: float) -> GateDecision:
    """Does influence have something to say that learnability p(1−p) cannot? Beyond the paper.

    scores: [n_lists, N] influence scores of a random probe of the pool (NaN = not probed or unscorable); a prompt's
    score is its mean over the validation sets. A prompt conflicts with the target when its score lies more than
    gate_score robust standard deviations (σ̂ = 1.4826 · MAD, median absolute deviation) below the probe's median:
    its rewarded habit points against the target's gradient, further than the bulk of the pool spreads. Scale-free,
    so one setting serves any model and sketch (cosines shrink with the dimension). The gate fires when at least
    gate_share of the probed prompts conflict. Where nothing conflicts, every learnable prompt helps or is neutral
    and learnability chooses as well as influence (docs/targeting.md); only a gradient pass can see a prompt that
    hurts.
    """
    lists = _score_lists(scores)
    s = np.mean(np.stack([np.asarray(x, dtype=np.float64) for x in lists]), axis=0)  # [N]
    probed = np.isfinite(s)
    n = int(probed.sum())
    if n == 0:
        return GateDecision(fires=False, probed=0, conflicting=[], share=0.0, threshold=float("nan"))
    med = float(np.median(s[probed]))
    sigma = 1.4826 * float(np.median(np.abs(s[probed] - med)))
    threshold = med - gate_score * sigma
    conflicting = np.flatnonzero(probed & (s < threshold))
    share = conflicting.size / n
    return GateDecision(fires=bool(share >= gate_share), probed=n, conflicting=[int(i) for i in conflicting],
                        share=float(share), threshold=float(threshold))


def _score_lists(scores: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(scores, np.ndarray) and scores.ndim == 1:
        return [scores]
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        return [row for row in scores]
    if isinstance(scores, np.ndarray):
        raise ValueError(f"select: scores must be [N] or [n_lists, N], got shape {scores.shape}")
    return [np.asarray(s) for s in scores]


def _pass_rates(pass_rates: np.ndarray | None, method: str) -> np.ndarray:
    if pass_rates is None:
        raise ValueError(f"select({method!r}) needs pass_rates (offline pass rate per pool prompt)")
    p = np.asarray(pass_rates, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"select: pass_rates must be 1-D, got shape {p.shape}")
    bad = np.flatnonzero(~((p >= 0) & (p <= 1)))
    if bad.size:
        raise CropiError(f"select: pass rate of pool prompt {bad[0]} is {p[bad[0]]}, expected a value in [0, 1]")
    return p


def select(
    method: str,
    *,
    scores: np.ndarray | Sequence[np.ndarray] | None = None,
    pass_rates: np.ndarray | None = None,
    ratio: float = 0.1,
    seed: int = 0,
    k_rrf: float = 0.0,
    n: int | None = None,
    fusion: str = "none",
    k_fusion: float = 60.0,
) -> np.ndarray:
    """Pool indices to train on, best first (int64[n_selected]). See the module docstring per method."""
    if method not in METHODS:
        raise CropiError(f"select: unknown method {method!r} (choose from {', '.join(METHODS)})")
    if not (0.0 < ratio <= 1.0):
        raise ValueError(f"select: ratio must be in (0, 1], got {ratio}")

    if method in ("popi", "influence_once"):
        if scores is None:
            raise ValueError(f"select({method!r}) needs scores (POPI scores per pool prompt, one list per validation set)")
        fused = influence_ranking(scores, pass_rates, fusion=fusion, ratio=ratio, k_rrf=k_rrf, k_fusion=k_fusion)
        order = rank_order(fused)
        order = order[np.isfinite(fused[order]) & (fused[order] > 0)]
        if order.size == 0:
            raise CropiError(f"select({method!r}): no pool prompt is scorable (all {fused.size} POPI scores are NaN)")
        return order[: top_count(ratio, fused.size)]

    if method in ("full", "random"):
        size = n
        if size is None and scores is not None:
            size = _score_lists(scores)[0].shape[0]
        if size is None and pass_rates is not None:
            size = np.asarray(pass_rates).shape[0]
        if size is None:
            raise ValueError(f"select({method!r}) needs the pool size: pass n=, scores= or pass_rates=")
        if method == "full":
            return np.arange(size, dtype=np.int64)
        rng = np.random.default_rng(seed)
        return rng.permutation(size)[: top_count(ratio, size)].astype(np.int64)

    p = _pass_rates(pass_rates, method)
    keep = top_count(ratio, p.size)
    if method == "pass_rate":
        eligible = np.flatnonzero((p > 0) & (p < 1))
        if eligible.size == 0:
            raise CropiError(f"select('pass_rate'): no pool prompt has 0 < pass rate < 1 (of {p.size})")
        rng = np.random.default_rng(seed)
        return eligible[rng.permutation(eligible.size)[:keep]].astype(np.int64)
    # learnability
    return rank_order(p * (1.0 - p))[:keep]
