"""Verifiable rewards: `math` (math-verify, time-bounded, thread-safe), `exact` (integers), `last_number` and
`answer_line`.

`math` and `exact` require a `\\boxed{}` in the response (the LAST box is the answer); `last_number` falls back to
the last number of an unboxed response (for small models); `answer_line` rewards the other convention, an
unboxed `Answer: N` line (a box scores 0). Rewards are 0.0 or 1.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from cropi_core.errors import DataError
from cropi_core.verify.answer_line import answer_line_verify
from cropi_core.verify.boxed import extract_boxed
from cropi_core.verify.exact import exact_verify, parse_int
from cropi_core.verify.last_number import last_number_verify
from cropi_core.verify.math_verifier import math_verify, wrap_gold

if TYPE_CHECKING:
    from cropi_core.data.problem import Problem

Verifier = Callable[[str, str], float]
VERIFIERS: dict[str, Verifier] = {"math": math_verify, "exact": exact_verify, "last_number": last_number_verify,
                                 "answer_line": answer_line_verify}


def get_verifier(name: str) -> Verifier:
    """The verifier `(response, gold) -> 0.0 | 1.0` called `name` ("math", "exact", "last_number" or "answer_line")."""
    try:
        return VERIFIERS[name]
    except KeyError:
        raise DataError(f"unknown verifier {name!r} (known: {', '.join(VERIFIERS)})") from None


def reward(problem: "Problem", response: str) -> float:
    """Reward of `response` to `problem` under `problem.verifier`: 0.0 or 1.0."""
    return get_verifier(problem.verifier)(response, problem.gold)


__all__ = ["Verifier", "VERIFIERS", "get_verifier", "reward", "extract_boxed", "exact_verify", "math_verify", "last_number_verify",
           "answer_line_verify",
           "parse_int", "wrap_gold"]
