"""`exact` verifier: integer comparison of the last `\\boxed{}` content (synthetic suite, integer benchmarks)."""

from __future__ import annotations

import re

from cropi_core.verify.boxed import extract_boxed

# "1,000", "+5", "-3", "5.0", "5.", "007"; optional $ / \text{...} wrappers are removed before matching
_INT_RE = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)(\.0*)?$")


def parse_int(text: str) -> int | None:
    """Parse an integer written the way models and datasets write them; None if it is not one.

    Accepts thousands separators ("1,000"), a sign ("+5", "-3"), a zero fraction ("5.0") and
    surrounding `$…$` or `\\text{…}`. Rejects "5.5", "1e3", "5 apples", "".
    """
    s = text.strip().strip("$").strip()
    m = re.fullmatch(r"\\text\{(.*)\}", s)
    if m:
        s = m.group(1).strip()
    s = s.replace("\\!", "").replace("\\,", ",").replace("{,}", ",").replace(" ", "")
    if not _INT_RE.match(s):
        return None
    return int(s.split(".")[0].replace(",", ""))


def exact_verify(response: str, gold: str) -> float:
    """1.0 if the last boxed answer of `response` is the integer `gold`, else 0.0 (no box -> 0.0)."""
    want = parse_int(gold)
    if want is None:
        return 0.0
    got = extract_boxed(response)
    if got is None:
        return 0.0
    value = parse_int(got)
    return 1.0 if value is not None and value == want else 0.0
