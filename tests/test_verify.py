"""Verifiers: boxed extraction, exact integers, math-verify on every real gold, thread safety, time bound."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cropi_core.config import DatasetSpec
from cropi_core.data import Problem, load_dataset
from cropi_core.errors import DataError
from cropi_core.verify import extract_boxed, get_verifier, reward
from cropi_core.verify.exact import parse_int
from cropi_core.verify.math_verifier import math_verify, math_verify_answer, run_with_timeout, wrap_gold

math_v = get_verifier("math")
exact_v = get_verifier("exact")


def test_extract_boxed():
    assert extract_boxed("x \\boxed{1} y \\boxed{2}") == "2"
    assert extract_boxed("\\boxed{\\frac{a}{\\sqrt{b}}}") == "\\frac{a}{\\sqrt{b}}"
    assert extract_boxed("\\boxed{ 7 }.") == "7"
    assert extract_boxed("\\fbox{5}") == "5"
    assert extract_boxed("so \\boxed 5$ done") == "5"
    assert extract_boxed("no box here: 42") is None
    assert extract_boxed("\\boxed{3} then truncated \\boxed{12") == "3"  # the unclosed last box is skipped
    assert extract_boxed("\\boxed{12") is None
    assert extract_boxed("\\boxed{}") == ""
    assert extract_boxed("") is None


@pytest.mark.parametrize("text,value", [("5", 5), ("1,000", 1000), ("+5", 5), ("-3", -3), ("5.0", 5), ("5.", 5),
                                        ("$12$", 12), ("\\text{12}", 12), ("1\\,000", 1000), ("007", 7),
                                        ("5.5", None), ("1e3", None), ("5 apples", None), ("", None),
                                        ("1,00", None), ("x", None)])
def test_parse_int(text, value):
    assert parse_int(text) == value


def test_exact_verifier():
    assert exact_v("The answer is \\boxed{1,000}.", "1000") == 1.0
    assert exact_v("\\boxed{+5}", "5") == 1.0 and exact_v("\\boxed{5.0}", "5") == 1.0
    assert exact_v("\\boxed{-3}", "-3") == 1.0
    assert exact_v("\\boxed{6}", "5") == 0.0
    assert exact_v("5", "5") == 0.0  # a box is required
    assert exact_v("\\boxed{5.5}", "5") == 0.0
    assert exact_v("\\boxed{5}", "five") == 0.0
    assert exact_v("\\boxed{4} no wait \\boxed{5}", "5") == 1.0


def test_math_verifier_basics():
    assert wrap_gold("\\frac{1}{2}") == "$\\frac{1}{2}$" and wrap_gold("$x$") == "$x$"
    assert wrap_gold("\\$36") == "$\\$36$"  # an escaped dollar is not a delimiter
    assert math_v("so \\boxed{0.5}", "\\frac{1}{2}") == 1.0
    assert math_v("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}") == 1.0
    assert math_v("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}") == 1.0
    assert math_v("\\boxed{18.90}", "\\$18.90") == 1.0
    assert math_v("\\boxed{32348}", "\\$32,\\!348") == 1.0
    assert math_v("\\boxed{(-\\infty, 3]}", "(-\\infty,3]") == 1.0
    assert math_v("\\boxed{0.6}", "\\frac{1}{2}") == 0.0
    assert math_v("the answer is 0.5", "\\frac{1}{2}") == 0.0  # no box
    assert math_v("\\boxed{}", "1") == 0.0
    assert math_v("\\boxed{\\frac{1}{2}", "\\frac{1}{2}") == 0.0  # unclosed box
    assert math_v("\\boxed{\\frac{\\frac{}}}", "1") == 0.0  # garbage LaTeX is just wrong


def test_reward_uses_problem_verifier():
    p_exact = Problem("a/1", "q", "12", "a", "a", "exact")
    p_math = Problem("a/2", "q", "12", "a", "a", "math")
    assert reward(p_exact, "\\boxed{12.0}") == 1.0 and reward(p_math, "\\boxed{12.0}") == 1.0
    assert reward(p_exact, "\\boxed{\\frac{24}{2}}") == 0.0  # exact is integers only
    assert reward(p_math, "\\boxed{\\frac{24}{2}}") == 1.0
    with pytest.raises(DataError, match="unknown verifier 'fuzzy'"):
        get_verifier("fuzzy")


def test_math_verifier_is_thread_safe_and_time_bounded():
    cases = [(f"\\boxed{{\\frac{{{i}}}{{{i + 1}}}}}", f"\\frac{{{i}}}{{{i + 1}}}", 1.0) for i in range(1, 25)]
    cases += [(f"\\boxed{{{i + 2}}}", str(i), 0.0) for i in range(24)]
    assert threading.current_thread() is threading.main_thread()
    with ThreadPoolExecutor(max_workers=6) as pool:  # not the main thread: signal timeouts would fail here
        got = list(pool.map(lambda c: math_v(c[0], c[1]), cases))
    assert got == [c[2] for c in cases]
    assert math_verify("\\boxed{\\frac{1}{3}}", "\\frac{1}{3}", timeout_s=5.0) == 1.0
    assert math_verify_answer("\\frac{1}{3}", "0.333", timeout_s=5.0) is False


def test_timeout_bound_from_any_thread():
    # the time bound itself, on a call that certainly cannot finish in time (a sympy hang in disguise)
    def bounded() -> tuple[str, float]:
        t = time.perf_counter()
        out = run_with_timeout(lambda: time.sleep(3) or "late", 0.1, "timed out")
        return out, time.perf_counter() - t

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [f.result() for f in [pool.submit(bounded), pool.submit(bounded)]] + [bounded()]
    assert all(out == "timed out" and dt < 1.0 for out, dt in results)
    assert run_with_timeout(lambda: 1 / 0, 1.0, "failed") == "failed"
    assert run_with_timeout(lambda: 42, 1.0, 0) == 42


# ---------------------------------------------------------------- every real gold

GOLD_SETS = {
    "gsm8k_test": dict(path="gsm8k/test.jsonl", extractor="gsm8k_hash"),
    "math500": dict(path="qwen25_math_eval/math500/test.jsonl", prompt_field="problem", id_field="unique_id"),
    "dsr_sub": dict(path="deepscaler/dsr_sub.jsonl", prompt_field="problem", id_field="index"),
}
# golds math-verify genuinely cannot read, with the reason (asserted, so a change shows up)
UNVERIFIABLE = {
    "dsr_sub/1187": "unbalanced braces in the gold: \\frac{k!n!}{(k+n-1)! is missing its closing brace",
}
# adjacent golds that differ as text but are mathematically the same answer
EQUIVALENT_PAIRS = {("5", "x=5")}


@pytest.fixture(scope="module")
def golds(data_dir) -> dict[str, list[Problem]]:
    return {n: load_dataset(DatasetSpec(name=n, **{**kw, "path": str(data_dir / kw["path"])})) for n, kw in GOLD_SETS.items()}


@pytest.mark.parametrize("name", list(GOLD_SETS))
def test_every_gold_verifies_against_its_boxed_self(golds, name):
    failed = [p.id for p in golds[name] if math_v(f"So the answer is \\boxed{{{p.gold}}}.", p.gold) != 1.0]
    assert sorted(failed) == sorted(i for i in UNVERIFIABLE if i.startswith(name + "/"))
    assert len(golds[name]) == {"gsm8k_test": 1319, "math500": 500, "dsr_sub": 1208}[name]


@pytest.mark.parametrize("name", list(GOLD_SETS))
def test_mismatched_golds_do_not_verify(golds, name):
    ps = golds[name]
    pairs = [(a, b) for a, b in zip(ps, ps[1:]) if a.gold.replace(" ", "") != b.gold.replace(" ", "")]
    assert len(pairs) > 0.8 * len(ps)
    pairs = pairs[:: max(1, len(pairs) // 300)]  # an even sample of ~300 pairs keeps this fast
    wrong = {(a.gold, b.gold) for a, b in pairs if math_v(f"\\boxed{{{b.gold}}}", a.gold) == 1.0}
    assert wrong <= EQUIVALENT_PAIRS, wrong


def test_gsm8k_golds_with_exact(golds):
    ps = golds["gsm8k_test"]
    assert all(exact_v(f"\\boxed{{{int(p.gold):,}}}", p.gold) == 1.0 for p in ps)  # "1,234" style answers
    assert not any(exact_v(f"\\boxed{{{int(p.gold) + 1}}}", p.gold) for p in ps)


def test_last_number_verifier():
    from cropi_core.verify import get_verifier

    v = get_verifier("last_number")
    assert v("7 + 2 = 9 apples are in the basket.", "9") == 1.0
    assert v("7 + 2 = 9, then 9 - 1 = 8", "9") == 0.0  # the LAST number counts
    assert v("so \\boxed{12} and later 5", "12") == 1.0  # a box wins over later numbers
    assert v("\\boxed{1,000}", "1000") == 1.0 and v("It costs $3.50.", "3.5") == 1.0
    assert v("total: -4", "-4") == 1.0 and v("no number here", "4") == 0.0 and v("4", "four") == 0.0
    assert v("The answer is 15.", "15 (balls)".split()[0]) == 1.0 and v("12.5", "12") == 0.0


def test_every_verifier_name_round_trips_through_problem_records():
    from cropi_core.data.problem import VERIFIER_NAMES, Problem
    from cropi_core.verify import VERIFIERS

    assert set(VERIFIER_NAMES) == set(VERIFIERS)
    for name in VERIFIERS:
        p = Problem("x/0", "q", "3", "x", "x", name, {})
        assert Problem.from_record(p.to_record()) == p


def test_answer_line_verifier_rewards_the_other_convention_only():
    from cropi_core.verify import answer_line_verify, get_verifier

    assert get_verifier("answer_line") is answer_line_verify
    assert answer_line_verify("Answer: 9", "9") == 1.0
    assert answer_line_verify("4+5=9.\nAnswer: 9.", "9") == 1.0  # the last Answer: line counts
    assert answer_line_verify("Answer: 8\nAnswer: 9", "9") == 1.0
    assert answer_line_verify("Answer: 8", "9") == 0.0
    assert answer_line_verify("\\boxed{9}", "9") == 0.0  # the boxed convention scores 0 here
    assert answer_line_verify("Answer: 9 \\boxed{9}", "9") == 0.0
    assert answer_line_verify("The Answer: 9", "9") == 0.0  # not at the start of a line
    assert answer_line_verify("9", "9") == 0.0
