"""`last_number` verifier: the "flexible extract" of GSM8K-style evaluation, for small models.

The answer is the last `\\boxed{}` if the response has one, else the last number written anywhere in it
("... 7 + 2 = 9 apples." -> 9). It compares numerically (thousands separators and a trailing ".0" allowed,
|a − b| ≤ 1e-6·max(1, |b|)). Small instruct models (e.g. SmolLM2-135M) reason in prose and rarely reach a box
within a short token budget; with the box-only verifiers every reward would be 0 and nothing could be scored.
"""

from __future__ import annotations

import re

from cropi_core.verify.boxed import extract_boxed

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def parse_number(text: str) -> float | None:
    """The last number in `text` as a float ("1,000" -> 1000.0, "-3.50" -> -3.5); None if there is none."""
    found = _NUMBER.findall(text.replace("\\!", "").replace("{,}", ","))
    if not found:
        return None
    return float(found[-1].replace(",", ""))


def last_number_verify(response: str, gold: str) -> float:
    """1.0 if the boxed answer (or, without a box, the last number) of `response` equals the number `gold`."""
    want = parse_number(gold)
    if want is None:
        return 0.0
    boxed = extract_boxed(response)
    got = parse_number(boxed if boxed is not None else response)
    if got is None:
        return 0.0
    return 1.0 if abs(got - want) <= 1e-6 * max(1.0, abs(want)) else 0.0
