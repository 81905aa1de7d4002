"""`answer_line` verifier: the "Answer: N" convention of sources that do not box their answers.

Real RLVR pools mix answer conventions (GSM8K's `#### 72`, "The answer is 72", multiple-choice letters, MATH's
`\\boxed{}`); each source's verifier rewards its own. This one rewards a response whose LAST line-initial
`Answer:` is followed by the integer gold and that has NO `\\boxed{}` (a boxed answer breaks the convention: 0).
The synthetic suite uses it for its conflicting domains (`SyntheticConfig.conflict_domains`).
"""

from __future__ import annotations

import re

from cropi_core.verify.boxed import extract_boxed
from cropi_core.verify.exact import parse_int

_ANSWER = re.compile(r"(?:^|\n)\s*Answer:\s*([^\n]*)")


def answer_line_verify(response: str, gold: str) -> float:
    """1.0 if `response` has no box and its last `Answer: <x>` line gives the integer `gold`, else 0.0."""
    want = parse_int(gold)
    if want is None or extract_boxed(response) is not None:
        return 0.0
    found = _ANSWER.findall(response)
    if not found:
        return 0.0
    got = parse_int(found[-1].strip().rstrip("."))
    return 1.0 if got is not None and got == want else 0.0
