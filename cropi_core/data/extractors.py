"""Answer extractors (raw answer field -> gold string) and gold normalisation.

An extractor returns None when the row has no answer (the loader skips and counts such rows) and raises
`ValueError` with a short reason when the field is present but unusable (the loader adds file/row/field).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from cropi_core.verify.boxed import extract_boxed
from cropi_core.verify.exact import parse_int


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected text or a number, got a boolean {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r}")
        return repr(value)
    if isinstance(value, (int, str)):
        s = str(value).strip()
        return s or None
    raise ValueError(f"expected text or a number, got {type(value).__name__}")


def field_extractor(value: Any) -> str | None:
    """The field itself (strings stripped, numbers as text)."""
    return _text(value)


def gsm8k_hash(value: Any) -> str | None:
    """GSM8K solutions end in `#### 72`: the text after the last `####`, commas removed."""
    s = _text(value)
    if s is None:
        return None
    if "####" not in s:
        raise ValueError("no '####' final-answer marker")
    return s.rsplit("####", 1)[1].strip().replace(",", "") or None


def boxed(value: Any) -> str | None:
    """The content of the last `\\boxed{}` of a worked solution."""
    s = _text(value)
    if s is None:
        return None
    found = extract_boxed(s)
    if found is None:
        raise ValueError("no \\boxed{...} answer in the solution")
    return found or None


_PAREN_RE = re.compile(r"\s*\([^()]*\)\s*$")


def strip_parenthetical(value: Any) -> str | None:
    """ASDiv style `9 (apples)` -> `9` (a trailing parenthetical unit is dropped)."""
    s = _text(value)
    if s is None:
        return None
    return _PAREN_RE.sub("", s).strip() or s  # "(2, 3)" alone is an answer, not a unit


EXTRACTORS: dict[str, Callable[[Any], str | None]] = {
    "field": field_extractor,
    "gsm8k_hash": gsm8k_hash,
    "boxed": boxed,
    "strip_parenthetical": strip_parenthetical,
}

_FLOAT_RE = re.compile(r"^[+-]?\d+\.\d*$")


def normalize_gold(gold: str, verifier: str) -> str:
    """Canonical gold text: stripped, integral decimals as integers ('142.0' -> '142').

    `math`: a gold wrapped in one pair of `$…$` loses the dollars (the verifier re-wraps).
    `exact`: must be an integer ("1,000", "+5", "5.0" are fine) -> its decimal form; else ValueError.
    """
    g = gold.strip()
    if verifier == "exact":
        value = parse_int(g)
        if value is None:
            raise ValueError("gold is not an integer (verifier 'exact')")
        return str(value)
    if len(g) > 2 and g.startswith("$") and g.endswith("$") and not g.endswith("\\$") and "$" not in g[1:-1]:
        g = g[1:-1].strip()
    if _FLOAT_RE.match(g):
        whole, frac = g.split(".")
        if frac.strip("0") == "":
            g = str(int(whole))
    return g
