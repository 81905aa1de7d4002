"""Evaluation: greedy pass@1 and (optionally) mean@n of sampled responses on a list of problems.

Batched `generate` with left padding; deterministic (greedy decoding; sampling seeded per batch of ids).

Standard errors: one evaluation's accuracy is a mean over problems of per-problem scores s_i (greedy 0/1, or the
mean of n samples), so its standard error is `std(s_i, ddof=1) / sqrt(N)` (`standard_error`); it covers both the
choice of test prompts and the sampling noise of mean@n. The mean of several sets (e.g. the targeted sets) has
`sqrt(Σ se_j²) / J` (`mean_and_se`): the sets are disjoint, so their errors are independent.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cropi_core.data import Problem, format_prompt
from cropi_core.rollout.base import derive_seed
from cropi_core.rollout.hf import generate
from cropi_core.verify import reward


@dataclass
class EvalResult:
    """accuracy: greedy pass@1 (mean@n when greedy is off); mean_at_n: mean reward of n samples per problem
    averaged over problems (None without sampling); correct: problem id -> greedy reward (or mean@n of that
    problem without greedy); by_domain: domain -> accuracy; sampled: problem id -> mean of its n samples."""

    accuracy: float
    mean_at_n: float | None
    correct: dict[str, float]
    by_domain: dict[str, float] = field(default_factory=dict)
    sampled: dict[str, float] | None = None
    n: int = 0

    @property
    def accuracy_se(self) -> float:
        """Standard error of `accuracy` over problems (see the module docstring)."""
        return standard_error(self.correct.values())

    @property
    def mean_at_n_se(self) -> float | None:
        """Standard error of `mean_at_n` over problems; None without sampling."""
        return None if self.sampled is None else standard_error(self.sampled.values())

    def to_record(self) -> dict:
        return {"accuracy": self.accuracy, "accuracy_se": self.accuracy_se, "mean_at_n": self.mean_at_n,
                "mean_at_n_se": self.mean_at_n_se, "n": self.n, "by_domain": self.by_domain,
                "correct": self.correct, "sampled": self.sampled}


def standard_error(scores: Iterable[float]) -> float:
    """`std(scores, ddof=1) / sqrt(N)`: the standard error of their mean (NaN for fewer than 2 scores)."""
    x = [float(v) for v in scores]
    n = len(x)
    if n < 2:
        return float("nan")
    m = sum(x) / n
    return math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1) / n)


def mean_and_se(values: list[float], ses: list[float | None]) -> tuple[float, float | None]:
    """Mean of the accuracies of disjoint sets and its standard error `sqrt(Σ se_j²) / J` (None if any is unknown)."""
    if not values:
        return float("nan"), None
    mean = sum(values) / len(values)
    if any(s is None or not math.isfinite(s) for s in ses):
        return mean, None
    return mean, math.sqrt(sum(s * s for s in ses)) / len(ses)  # type: ignore[operator]


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: list[Problem],
    *,
    greedy: bool = True,
    n_samples: int = 0,
    temperature: float = 0.5,
    top_p: float = 1.0,
    max_new_tokens: int = 24,
    template: str = "chat_boxed",
    instruction: str = "",
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Score `model` on `problems` (see EvalResult). `greedy=False` with `n_samples=0` samples once."""
    if not problems:
        raise ValueError("evaluate: empty problem list")
    if not greedy and n_samples == 0:
        n_samples = 1
    was_training = model.training
    model.eval()
    greedy_r: dict[str, float] = {}
    sampled_r: dict[str, float] = {}
    bar = tqdm(total=len(problems), desc="evaluate", unit="prompt", disable=not progress, leave=False)
    try:
        for lo in range(0, len(problems), batch_size):
            batch = problems[lo : lo + batch_size]
            texts = [format_prompt(p, tokenizer, template=template, instruction=instruction) for p in batch]
            if greedy:
                gen = generate(model, tokenizer, texts, 1, do_sample=False, max_new_tokens=max_new_tokens)
                for p, rs in zip(batch, gen.responses):
                    greedy_r[p.id] = reward(p, tokenizer.decode(rs[0], skip_special_tokens=True))
            if n_samples:
                gen = generate(model, tokenizer, texts, n_samples, do_sample=True, temperature=temperature, top_p=top_p,
                               max_new_tokens=max_new_tokens, seed=derive_seed(seed, "eval", *(p.id for p in batch)))
                for p, rs in zip(batch, gen.responses):
                    sampled_r[p.id] = sum(reward(p, t) for t in tokenizer.batch_decode(rs, skip_special_tokens=True)) / n_samples
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    correct = greedy_r if greedy else sampled_r
    by_domain: dict[str, list[float]] = defaultdict(list)
    for p in problems:
        by_domain[p.domain].append(correct[p.id])
    return EvalResult(
        accuracy=sum(correct.values()) / len(correct),
        mean_at_n=sum(sampled_r.values()) / len(sampled_r) if n_samples else None,
        correct=correct,
        by_domain={d: sum(v) / len(v) for d, v in by_domain.items()},
        sampled=sampled_r if n_samples else None,
        n=n_samples,
    )
