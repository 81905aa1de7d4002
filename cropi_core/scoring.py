"""POPI scores, the other influence scoring rules, reciprocal-rank fusion and precision@k (PAPER.md §4–5).

    POPI(x) = cos(P ĝ(x), ḡ_V),   ḡ_V = plain mean over validation rows of P ĝ(v)

`influence_scores(train, val, rule)` computes one of the scoring rules (`InfluenceConfig.score`):
    "cosine"       the paper's POPI (above): direction only
    "inner"        ⟨P ĝ(x), ḡ_V⟩: first-order influence, which also counts how large x's gradient is (the GRPO
                   gradient grows with the reward variance p(1−p), what learnability measures)
    "cosine_norm"  cos · ‖P ĝ(x)‖^α: between the two (α = 0: cosine; α = 1: the inner product's order)
`split_half_reliability(train, vals, rule)` says whether a ranking carries signal at all: the Spearman correlation,
over the scorable pool, between the scores against two random halves of every validation set (beyond the paper).
`ess_weighted(scores, ess_frac, γ)` shrinks a score toward 0 by (ESS_x/K)^γ, the effective sample size of x's K
sequence-level importance weights under θ_m: a prompt whose weights are degenerate (one response carries them all)
has an off-policy gradient estimated from about one response, so its score is trusted less (beyond the paper).

Conventions shared by every function here:
- Scores are computed in float64 whatever the sketch dtype (fp16 sketches overflow a dot product).
- NaN means *unscorable* (a prompt whose K rewards are all equal has no gradient; `sketch_prompts`
  marks its row NaN). A train row with any NaN, or with zero norm, scores NaN. A validation row with
  any NaN is left out of the mean.
- Ranks start at 1 (= best). NaN scores rank after every finite score. Ties (equal scores) are broken
  by index: the lower index gets the better rank. This makes every ranking a deterministic function
  of the score array.
- "top fraction f of N items" keeps n = ⌊f·N⌋ items, computed as floor(f·N + 1e-9) so that
  0.29·100 keeps 29 (not 28 from float rounding), and at least 1 item when N ≥ 1 (a tiny pool with a
  small ratio still yields a selection instead of silently training on nothing).
"""

from __future__ import annotations

import math

import numpy as np

from cropi_core.errors import CropiError

__all__ = ["popi", "influence_scores", "SCORE_RULES", "fuse_ranks", "rrf", "tied_ranks", "precision_at",
           "split_half_reliability", "rank_order", "top_count"]

SCORE_RULES = ("cosine", "inner", "cosine_norm")


def top_count(frac: float, n: int) -> int:
    """n_keep = max(1, ⌊frac·n⌋) for n ≥ 1 (0 for n = 0); frac must be in (0, 1]."""
    if not (0.0 < frac <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {frac}")
    if n <= 0:
        return 0
    return max(1, min(n, math.floor(frac * n + 1e-9)))


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Indices sorted best-first: descending score, NaN last, ties by ascending index. int64[N]."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    nan = np.isnan(s)
    # lexsort sorts by the LAST key first: NaN flag, then -score, then index (stable tie-break).
    key = np.where(nan, 0.0, -s)
    return np.lexsort((np.arange(s.size), key, nan)).astype(np.int64)


def popi(train: np.ndarray, val: np.ndarray) -> np.ndarray:
    """POPI scores. train: [N, k] pool sketches, val: [M, k] validation sketches -> float64[N].

    score[i] = cos(train[i], mean of the finite val rows). NaN for train rows with a NaN or zero norm.
    Raises CropiError when no validation row is finite or their mean is the zero vector (nothing can be
    scored against it: e.g. every validation prompt had all-equal rewards).
    """
    t = np.asarray(train, dtype=np.float64)
    v = np.asarray(val, dtype=np.float64)
    if t.ndim != 2 or v.ndim != 2 or t.shape[1] != v.shape[1]:
        raise ValueError(f"popi: expected train [N,k] and val [M,k], got {t.shape} and {v.shape}")
    g = _mean_val(v)
    g_norm = np.linalg.norm(g)
    out = np.full(t.shape[0], np.nan)
    t_norm = np.linalg.norm(t, axis=1)
    ok = ~np.isnan(t).any(axis=1) & (t_norm > 0) & np.isfinite(t_norm)
    out[ok] = (t[ok] @ g) / (t_norm[ok] * g_norm)
    return out


def _mean_val(v: np.ndarray) -> np.ndarray:
    """ḡ_V: the mean of the finite validation rows (CropiError when there is none or it is the zero vector)."""
    if v.shape[0] == 0:
        raise CropiError("popi: no validation gradient rows")
    good = ~np.isnan(v).any(axis=1)
    if not good.any():
        raise CropiError(f"popi: all {v.shape[0]} validation gradient rows are NaN (no validation prompt is scorable)")
    g = v[good].mean(axis=0)
    g_norm = np.linalg.norm(g)
    if not np.isfinite(g_norm) or g_norm == 0.0:
        raise CropiError(f"popi: the mean validation gradient has norm {g_norm} (cannot score against it)")
    return g


def influence_scores(train: np.ndarray, val: np.ndarray, rule: str = "cosine", alpha: float = 0.5) -> np.ndarray:
    """Scores of the pool rows against the validation set under a scoring rule (module docstring) -> float64[N].

    train: [N, k] pool sketches, val: [M, k] validation sketches. NaN rows (unscorable), zero-norm rows and rows
    with a non-finite norm score NaN under every rule, as in `popi`. `alpha` (≥ 0) is used by "cosine_norm" only.
    """
    if rule not in SCORE_RULES:
        raise CropiError(f"unknown scoring rule {rule!r} (choose from {', '.join(SCORE_RULES)})")
    if rule == "cosine":
        return popi(train, val)
    t = np.asarray(train, dtype=np.float64)
    v = np.asarray(val, dtype=np.float64)
    if t.ndim != 2 or v.ndim != 2 or t.shape[1] != v.shape[1]:
        raise ValueError(f"influence_scores: expected train [N,k] and val [M,k], got {t.shape} and {v.shape}")
    g = _mean_val(v)
    out = np.full(t.shape[0], np.nan)
    t_norm = np.linalg.norm(t, axis=1)
    ok = ~np.isnan(t).any(axis=1) & (t_norm > 0) & np.isfinite(t_norm)
    inner = t[ok] @ g  # [n_ok]
    if rule == "inner":
        out[ok] = inner
    else:  # cos · ‖t‖^α = ⟨t, g⟩ · ‖t‖^(α−1) / ‖g‖
        out[ok] = inner * t_norm[ok] ** (alpha - 1.0) / np.linalg.norm(g)
    return out


def split_half_reliability(train: np.ndarray, vals: list[np.ndarray], rule: str = "cosine", alpha: float = 0.5,
                           seed: int = 0, splits: int = 16) -> float:
    """How reproducible the influence ranking is: split every validation set's finite rows at random into two halves
    A and B (sizes ⌊M/2⌋ and ⌈M/2⌉, a seeded permutation per set and split), score the pool against each half under
    `rule` (the mean over the sets, as the gate does), take the Spearman rank correlation of the two score vectors
    over the pool rows both score, and average it over `splits` random splits (one split's value has a standard
    deviation of 0.11–0.14 over which validation prompts land in which half; the mean over 16, 0.01–0.03). NaN when a set has fewer
    than 2 finite rows, fewer than 3 pool rows are scored, or a half's scores are constant. Beyond the paper.

    train: [N, k] pool sketches; vals: one [M_j, k] array of validation sketches per set. 1 = both halves of the
    target rank the pool alike; ≈ 0 = the ranking is noise of which validation prompts were drawn. It costs no
    gradient: the rows are the ones the scores were computed from. Measured by benchmarks/rescore_reliability.py
    (docs/targeting.md): stage-0 rankings of both embedded benchmarks against stage-1 re-scores under θ_1.
    """
    cleaned = []
    for v in vals:
        v = np.asarray(v, dtype=np.float64)
        v = v[~np.isnan(v).any(axis=1)]
        if v.shape[0] < 2:
            return float("nan")
        cleaned.append(v)
    rhos = []
    for split in range(splits):
        halves: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        for j, v in enumerate(cleaned):
            perm = np.random.default_rng([seed, split, j]).permutation(v.shape[0])
            h = v.shape[0] // 2
            halves[0].append(influence_scores(train, v[perm[:h]], rule, alpha))
            halves[1].append(influence_scores(train, v[perm[h:]], rule, alpha))
        a, b = (np.mean(np.stack(x), axis=0) for x in halves)  # [N] each
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
            return float("nan")
        rhos.append(np.corrcoef(tied_ranks(a[ok]), tied_ranks(b[ok]))[0, 1])
    return float(np.mean(rhos))


def ess_weighted(scores: np.ndarray, ess_frac: np.ndarray, power: float) -> np.ndarray:
    """ESS-aware scores: scores · clip(ess_frac, 0, 1)^power -> float64 of the shape of `scores`.

    scores: [..., N] influence scores (NaN = unscorable, kept NaN); ess_frac: [N] ESS/K of each prompt's K
    sequence-level importance weights exp(Σ_t log π_θ − log β) (cropi_core.health), 1 = θ still samples the
    stored responses as β did, 1/K = one response holds all the weight. power 0 returns the scores unchanged.
    A non-finite ESS/K makes the score NaN (the prompt cannot be weighed).
    """
    s = np.asarray(scores, dtype=np.float64)
    e = np.asarray(ess_frac, dtype=np.float64)
    if e.shape != s.shape[-1:]:
        raise ValueError(f"ess_weighted: expected ess_frac [{s.shape[-1]}], got {list(e.shape)}")
    if power < 0 or not math.isfinite(power):
        raise ValueError(f"ess_weighted: power must be finite and >= 0, got {power}")
    if power == 0:
        return s.copy()
    w = np.where(np.isfinite(e), np.clip(e, 0.0, 1.0), np.nan) ** power
    return s * w


def rrf(score_lists: list[np.ndarray], k: float = 60.0) -> np.ndarray:
    """Reciprocal-rank fusion over full rankings (Cormack et al. 2009) -> float64[N].

    fused[x] = Σ_lists 1/(k + rank(x)) with rank 1 = best (ties by index). An item that is NaN in ANY list is NaN
    in the fusion: it cannot be ranked by every signal (e.g. a prompt with no POPI score has no gradient).
    Unlike `fuse_ranks` no list is cut to its top set, so a prompt ranked well by both signals beats a prompt
    ranked first by one and last by the other.
    """
    if not score_lists:
        raise ValueError("rrf: no score lists")
    if k < 0:
        raise ValueError(f"rrf: k must be ≥ 0, got {k}")
    arrs = [np.asarray(s, dtype=np.float64) for s in score_lists]
    n = arrs[0].shape[0]
    if any(a.ndim != 1 or a.shape[0] != n for a in arrs):
        raise ValueError(f"rrf: every score list must be 1-D of the same length, got {[a.shape for a in arrs]}")
    fused = np.zeros(n)
    bad = np.zeros(n, dtype=bool)
    for a in arrs:
        fused += 1.0 / (k + tied_ranks(a))
        bad |= np.isnan(a)
    fused[bad] = np.nan
    return fused


def tied_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks 1 = best (float64[N]); equal finite scores share the mean of their ranks (so a heavily tied signal such
    as p(1−p) over K = 8 responses does not order its ties by pool index); NaN ranks after every finite score."""
    s = np.asarray(scores, dtype=np.float64)
    rank = np.empty(s.size)
    rank[rank_order(s)] = np.arange(1, s.size + 1)
    fin = np.flatnonzero(~np.isnan(s))
    if fin.size:
        _, group = np.unique(s[fin], return_inverse=True)
        rank[fin] = (np.bincount(group, weights=rank[fin]) / np.bincount(group))[group]
    return rank


def fuse_ranks(score_lists: list[np.ndarray], top_ratio: float = 0.1, k_rrf: float = 0.0) -> np.ndarray:
    """Reciprocal-rank fusion of several score lists over the same N items -> float64[N].

    For each list: rank items (1 = best, NaN last, ties by index) and keep its top n = max(1, ⌊top_ratio·N⌋)
    items, except NaN-scored ones (an unscorable item is never kept). fused[x] = Σ over the lists that kept x
    of 1/(k_rrf + rank(x)); 0 for items no list kept. With one list and k_rrf ≥ 0, fused is strictly
    decreasing along that list's top set, so the order is preserved.
    """
    if len(score_lists) == 0:
        raise ValueError("fuse_ranks: no score lists")
    arrs = [np.asarray(s, dtype=np.float64) for s in score_lists]
    n = arrs[0].shape[0] if arrs[0].ndim == 1 else -1
    if any(a.ndim != 1 or a.shape[0] != n for a in arrs):
        raise ValueError(f"fuse_ranks: every score list must be 1-D of the same length, got {[a.shape for a in arrs]}")
    if k_rrf < 0:
        raise ValueError(f"fuse_ranks: k_rrf must be ≥ 0, got {k_rrf}")
    keep = top_count(top_ratio, n)
    fused = np.zeros(n)
    for a in arrs:
        top = rank_order(a)[:keep]
        ranks = np.arange(1, top.size + 1, dtype=np.float64)
        finite = ~np.isnan(a[top])
        fused[top[finite]] += 1.0 / (k_rrf + ranks[finite])
    return fused


def precision_at(approx: np.ndarray, exact: np.ndarray, frac: float = 0.1) -> float:
    """|top(approx) ∩ top(exact)| / |top(exact)|, top = the best max(1, ⌊frac·N⌋) finite-scored items.

    NaN scores are never in a top set (if fewer finite items than n exist, the top set is smaller).
    Returns NaN when the exact top set is empty.
    """
    a = np.asarray(approx, dtype=np.float64)
    e = np.asarray(exact, dtype=np.float64)
    if a.shape != e.shape or a.ndim != 1:
        raise ValueError(f"precision_at: approx and exact must be 1-D of equal length, got {a.shape} and {e.shape}")
    keep = top_count(frac, a.size)

    def top(s: np.ndarray) -> set[int]:
        idx = rank_order(s)[:keep]
        return set(idx[~np.isnan(s[idx])].tolist())

    te = top(e)
    if not te:
        return float("nan")
    return len(top(a) & te) / len(te)
