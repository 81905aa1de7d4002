"""`math` verifier: math-verify equivalence of the last `\\boxed{}` answer and the gold, time-bounded.

math-verify's own timeouts use SIGALRM, which only works in the main thread; rollouts and Prefect tasks
call verifiers from worker threads. So signals are disabled (`parsing_timeout=None`, `timeout_seconds=None`)
and each check runs in a short-lived daemon thread that we wait on with a timeout: a pathological sympy
expression costs at most `timeout_s` of waiting and 0.0 reward, and can never block interpreter exit.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Callable, TypeVar

from cropi_core.verify.boxed import extract_boxed

DEFAULT_TIMEOUT_S = 5.0
T = TypeVar("T")
_log = logging.getLogger(__name__)
_DELIMITER = re.compile(r"(?<!\\)\$")  # an unescaped "$" ("\$5" is a dollar amount, not math mode)


def wrap_gold(gold: str) -> str:
    """Gold as math-verify wants it: LaTeX inside `$…$` (unless already delimited or boxed)."""
    g = gold.strip()
    if _DELIMITER.search(g) or "\\boxed" in g or g.startswith("\\(") or g.startswith("\\["):
        return g
    return f"${g}$"


def _check(boxed: str, gold: str) -> bool:
    from math_verify import parse, verify  # imported lazily: ~0.5 s of sympy at first use

    _silence_timeout_warning()

    gold_parsed = parse(wrap_gold(gold), parsing_timeout=None)
    pred_parsed = parse(f"\\boxed{{{boxed}}}", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def run_with_timeout(fn: Callable[[], T], timeout_s: float, default: T) -> T:
    """`fn()` run in a daemon thread; `default` if it has not returned after `timeout_s` seconds or raised.

    Works from any thread (no signals). A timed-out call keeps running in the background until it ends on
    its own, but nobody waits for it and it cannot keep the interpreter alive.
    """
    result: list[T] = []

    def work() -> None:
        try:
            result.append(fn())
        except Exception as err:  # a parser bug on odd LaTeX is a wrong answer, not a crash
            _log.debug("verifier call failed: %s", err)

    worker = threading.Thread(target=work, name="cropi-verify", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        _log.warning("verifier timed out after %.3g s: reward 0", timeout_s)
        return default
    return result[0] if result else default


def math_verify_answer(boxed: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True if `boxed` (an answer without the `\\boxed{}`) equals `gold` per math-verify, within `timeout_s`."""
    return run_with_timeout(lambda: _check(boxed, gold), timeout_s, False)


def math_verify(response: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """1.0 if the last `\\boxed{}` of `response` is mathematically equal to `gold`, else 0.0 (no box -> 0.0)."""
    boxed = extract_boxed(response)
    if not boxed:
        return 0.0
    return 1.0 if math_verify_answer(boxed, gold, timeout_s) else 0.0


def _silence_timeout_warning() -> None:
    # we DO bound time ourselves (above), so math-verify's one-time "timeout is disabled" warning is noise
    try:
        import math_verify.grader as grader
        import math_verify.parser as parser

        grader.TIMEOUT_WARNING_SHOWN = True
        parser.TIMEOUT_WARNING_SHOWN = True
    except (ImportError, AttributeError):
        pass
