"""The embedded synthetic suite: seeded, verifiable integer arithmetic in six domains.

Built for a ~1M-parameter character-level model that gets ~2 minutes of supervised warm-up on two CPU cores.
Such a model learns *facts* (single-digit sums, products, comparisons) in that budget, but not multi-digit
algorithms (carries): a 2-digit adder needs ~10k steps. So each domain is a small table of facts asked in six
phrasings ("Compute 7*8.", "What is 7*8?", "7*8=?", ...), and difficulty grows with the size of the table and
the number of facts an answer chains. The warm-up never sees a val/test/pool prompt, but it sees the same facts
in other phrasings, so pass rates are intermediate and differ by domain and level (`meta["level"]`, 1 = easiest; `meta["op"]` = the operation).

The multi-step domains (`two_step`, `word`) also carry a worked solution (`meta["work"]`, e.g. "2+3=5. 5+4=9.").
The warm-up teaches it for half of those problems and the bare `\\boxed{}` answer for the other half
(`BootstrapConfig.worked_fraction`), so the starting policy has two habits on exactly these domains and RL can
learn, domain-wide, which one pays. They are the targeted domains of the embedded default (a third of the pool).

The benchmark's learnable, transferable skill is a format habit (`BootstrapConfig.unboxed_fraction`,
`unboxed_domains`): the warm-up teaches 30% of the problems of `two_step`, `word` AND `sub` the unboxed answer
`Answer: 9` (reward 0), so the starting policy loses ~30% of its answers there to format. GRPO unlearns it
domain-wide, on unseen test prompts too. `sub` is untargeted (no validation set) but shares the skill, as math
domains share reasoning in the paper; `add`, `mul`, `max` share nothing with the targeted domains. This is the
structure CROPI's gradient alignment can find: half the pool carries the skill, a third is targeted.

Domain    example                          level 1              level 2                     level 3
add       Compute 4+5.                     a,b ≤ 5              a,b ≤ 9 (one ≥ 6)           teen + digit, no carry
sub       What is 13-5?                    a ≤ 9                10 ≤ a ≤ 18, answer ≤ 9     teen − digit, no borrow
mul       7*8=?                            a,b ∈ 2..5           a,b ∈ 2..9 (one ≥ 6)        digit × 10 or 11
two_step  Compute 2+3+1.                   a+b+c, digits ≤ 3    a+b+c, digits ≤ 9           a*b+c, a,b ≤ 5
word      Tom has 3 apples and buys 4 more. How many apples does he have?   add / take away / bags of
max       Which is larger, 47 or 38?       digits               2-digit, tens differ        2-digit, same tens
"""

from __future__ import annotations

import hashlib
import random
import string
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Iterable

from cropi_core.config import SYNTHETIC_DOMAINS
from cropi_core.data.problem import DataSplits, Problem
from cropi_core.errors import ConfigError

if TYPE_CHECKING:
    from cropi_core.config import SyntheticConfig

# Every character a synthetic prompt, answer, instruction or `\boxed{}` response may use: printable ASCII
# plus newline (chat templates put newlines between turns). Sorted, no duplicates.
CHARSET: str = "\n" + "".join(sorted(set(string.printable) - set(string.whitespace) | {" "}))

Sample = tuple[str, int, dict]  # prompt, integer answer, meta
_NAMES = [("Tom", "he"), ("Ann", "she"), ("Sam", "he"), ("Mia", "she"), ("Ben", "he"), ("Eva", "she"),
          ("Max", "he"), ("Zoe", "she")]
_ITEMS = ["apples", "pens", "cards", "books", "coins", "eggs", "cups", "balls"]


_PHRASES = ["Compute {e}.", "What is {e}?", "{e}=?", "Find {e}.", "Calculate {e}.", "Evaluate {e}."]


def _ask(r: random.Random, expr: str) -> str:
    return r.choice(_PHRASES).format(e=expr)


def _add(r: random.Random) -> Sample:
    level = r.randint(1, 3)
    if level == 1:
        a, b = r.randint(0, 5), r.randint(0, 5)
    elif level == 2:
        while max(a := r.randint(0, 9), b := r.randint(0, 9)) < 6:
            pass
    else:  # a teen plus a digit without carry: a digit fact plus copying the tens
        while (a := r.randint(10, 19)) % 10 + (b := r.randint(0, 9)) >= 10:
            pass
        if r.random() < 0.5:
            a, b = b, a
    return _ask(r, f"{a}+{b}"), a + b, {"level": level, "op": "add"}


def _sub(r: random.Random) -> Sample:
    level = r.randint(1, 3)
    if level == 1:
        a = r.randint(0, 9)
        b = r.randint(0, a)
    elif level == 2:
        a = r.randint(10, 18)
        b = r.randint(a - 9, 9)
    else:  # a teen minus a digit without borrow
        a = r.randint(10, 19)
        b = r.randint(0, a % 10)
    return _ask(r, f"{a}-{b}"), a - b, {"level": level, "op": "sub"}


def _mul(r: random.Random) -> Sample:
    level = r.randint(1, 3)
    if level == 1:
        a, b = r.randint(2, 5), r.randint(2, 5)
    elif level == 2:
        while max(a := r.randint(2, 9), b := r.randint(2, 9)) < 6:
            pass
    else:  # a digit times 10 or 11
        a, b = r.randint(2, 9), r.choice([10, 11])
        if r.random() < 0.5:
            a, b = b, a
    return _ask(r, f"{a}*{b}"), a * b, {"level": level, "op": "mul"}


def _two_step(r: random.Random) -> Sample:
    level = r.randint(1, 3)
    if level == 1:
        a, b, c = r.randint(0, 3), r.randint(0, 3), r.randint(0, 3)
    elif level == 2:
        a, b, c = r.randint(0, 9), r.randint(0, 9), r.randint(0, 9)
    if level < 3:
        work = f"{a}+{b}={a + b}. {a + b}+{c}={a + b + c}."
        return _ask(r, f"{a}+{b}+{c}"), a + b + c, {"level": level, "op": "add_add", "work": work}
    a, b, c = r.randint(2, 5), r.randint(2, 5), r.randint(1, 9)
    work = f"{a}*{b}={a * b}. {a * b}+{c}={a * b + c}."
    return _ask(r, f"{a}*{b}+{c}"), a * b + c, {"level": 3, "op": "mul_add", "work": work}


def _word(r: random.Random) -> Sample:
    (name, pron), item = r.choice(_NAMES), r.choice(_ITEMS)
    level = r.randint(1, 3)
    if level == 1:
        a, b = r.randint(1, 5), r.randint(1, 5)
        return (f"{name} has {a} {item} and buys {b} more. How many {item} does {pron} have?", a + b,
                {"level": 1, "op": "add", "work": f"{a}+{b}={a + b}."})
    if level == 2:
        b, d = r.randint(1, 5), r.randint(0, 5)
        return (f"{name} has {b + d} {item} and gives away {b}. How many {item} are left?", d,
                {"level": 2, "op": "sub", "work": f"{b + d}-{b}={d}."})
    a, b = r.randint(2, 3), r.randint(2, 5)
    return (f"{name} has {a} bags of {b} {item}. How many {item} does {pron} have?", a * b,
            {"level": 3, "op": "mul", "work": f"{a}*{b}={a * b}."})


def _max(r: random.Random) -> Sample:
    level = r.randint(1, 3)
    while True:
        if level == 1:
            a, b = r.randint(0, 9), r.randint(0, 9)
        else:
            a, b = r.randint(10, 99), r.randint(10, 99)
        if a != b and (level == 1 or (a // 10 == b // 10) == (level == 3)):
            break
    form = r.choice(["Which is larger, {a} or {b}?", "What is the larger of {a} and {b}?", "max({a},{b})=?",
                     "Find the larger number: {a}, {b}."])
    return form.format(a=a, b=b), max(a, b), {"level": level, "op": "max"}


DOMAINS: dict[str, Callable[[random.Random], Sample]] = {
    "add": _add, "sub": _sub, "mul": _mul, "two_step": _two_step, "word": _word, "max": _max,
}
assert tuple(DOMAINS) == SYNTHETIC_DOMAINS, "keep cropi_core.config.SYNTHETIC_DOMAINS in sync"


def worked_response(p: Problem) -> str | None:
    """The worked solution of a multi-step synthetic problem ("2+3=5. 5+4=9. \\boxed{9}"), None for one-fact
    domains (their only response is the direct `\\boxed{answer}`)."""
    work = p.meta.get("work") if p.meta else None
    return f"{work} \\boxed{{{p.gold}}}" if work else None


def generate_problems(domain: str, n: int, seed: int, exclude: Iterable[str] = (), id_prefix: str = "syn",
                      strict: bool = True) -> list[Problem]:
    """`n` distinct problems of `domain` (ids "<id_prefix>/<domain>/<i>"), deterministic in (domain, seed).

    Prompts in `exclude` are never produced (e.g. validation/test prompts when generating warm-up data).
    A larger `n` extends the list (the first items stay the same). If the domain has fewer than `n` distinct
    problems left: ConfigError when `strict`, else as many as there are.
    """
    if domain not in DOMAINS:
        raise ConfigError(f"unknown synthetic domain {domain!r} (known: {', '.join(DOMAINS)})")
    gen, rng = DOMAINS[domain], random.Random(f"cropi-synthetic:{seed}:{domain}")
    seen = set(exclude)
    out: list[Problem] = []
    misses = 0
    while len(out) < n:
        prompt, answer, meta = gen(rng)
        if prompt in seen:
            misses += 1
            if misses > 50 * n + 10_000:  # the domain's space is (nearly) exhausted
                if strict:
                    raise ConfigError(f"synthetic domain {domain!r} has fewer than {n} distinct problems (got {len(out)})")
                break
            continue
        seen.add(prompt)
        out.append(Problem(f"{id_prefix}/{domain}/{len(out)}", prompt, str(answer), "synthetic", domain, "exact", meta))
    return out


def generate_mixture(domains: Iterable[str], n: int, seed: int, exclude: Iterable[str] = ()) -> list[Problem]:
    """`n` problems spread evenly over `domains`, shuffled, none with a prompt in `exclude` (e.g. warm-up data).

    A domain that runs out of distinct problems gives its remaining share to the others.
    """
    domains = list(dict.fromkeys(domains))
    if not domains:
        raise ConfigError("generate_mixture needs at least one domain")
    exclude = set(exclude)
    want = {d: n // len(domains) + (1 if i < n % len(domains) else 0) for i, d in enumerate(domains)}
    got = {d: generate_problems(d, want[d], seed, exclude, f"syn{seed}", strict=False) for d in domains}
    while (short := n - sum(map(len, got.values()))) > 0:
        open_ = [d for d in domains if len(got[d]) == want[d]]  # not exhausted yet
        if not open_:
            raise ConfigError(f"synthetic domains {domains} have fewer than {n} distinct problems outside the excluded ones")
        for i, d in enumerate(open_):
            want[d] += short // len(open_) + (1 if i < short % len(open_) else 0)
            got[d] = generate_problems(d, want[d], seed, exclude, f"syn{seed}", strict=False)
    out = [p for d in domains for p in got[d]]
    random.Random(f"cropi-mixture:{seed}").shuffle(out)
    return out


def conflicts(problem_id: str, strength: float, seed: int) -> bool:
    """Whether a conflicting domain's problem uses the `answer_line` convention: a seeded draw per problem id with
    probability `strength` (the same answer for the pool, the tests and the warm-up)."""
    u = int.from_bytes(hashlib.sha256(f"conflict:{seed}:{problem_id}".encode()).digest()[:8], "big") / 2**64
    return u < strength


def with_conventions(problems: list[Problem], conflict_domains: Iterable[str], strength: float,
                     seed: int) -> list[Problem]:
    """`problems` with the verifier `answer_line` (an unboxed `Answer: N`, `SyntheticConfig.conflict_domains`) on
    the drawn share `strength` of the conflicting domains' problems; every other problem unchanged."""
    domains = set(conflict_domains)
    if not domains:
        return problems
    return [replace(p, verifier="answer_line") if p.domain in domains and conflicts(p.id, strength, seed) else p
            for p in problems]


def generate_suite(cfg: "SyntheticConfig") -> DataSplits:
    """Pool (mixed, shuffled), val per targeted domain ("val/<d>"), tests per domain ("test/<d>").

    Per domain one stream of distinct problems is cut into [val | test | pool], so no prompt appears in
    two sets. Targeted domains are a minority of the pool at the defaults (2 of 6 domains).
    """
    pool: list[Problem] = []
    val: dict[str, list[Problem]] = {}
    test_t: dict[str, list[Problem]] = {}
    test_u: dict[str, list[Problem]] = {}
    for d in cfg.domains:
        n_val = cfg.val_size if d in cfg.targeted else 0
        n_pool = cfg.pool_size_of(d)
        n_test = cfg.test_size_of(d)
        probs = generate_problems(d, n_val + n_test + n_pool, cfg.seed)
        if d in cfg.verifiers:
            probs = [replace(p, verifier=cfg.verifiers[d]) for p in probs]
        probs = with_conventions(probs, cfg.conflict_domains, cfg.conflict_strength, cfg.seed)
        if n_val:
            val[f"val/{d}"] = probs[:n_val]
        (test_t if d in cfg.targeted else test_u)[f"test/{d}"] = probs[n_val : n_val + n_test]
        pool += probs[n_val + n_test :]
    random.Random(f"cropi-pool:{cfg.seed}").shuffle(pool)
    return DataSplits(pool=pool, val=val, test_targeted=test_t, test_untargeted=test_u)
