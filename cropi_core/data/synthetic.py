"""The embedded synthetic suite: seeded, verifiable integer arithmetic in six domains.

Prompts are short (a ~1M-parameter character-level model has to learn them) and answers are exact
integers checked by the `exact` verifier. Each domain mixes three difficulty levels in equal parts
(`meta["level"]`, 1 = easiest; `meta["op"]` = the operation), so a briefly warm-started tiny model solves
the easy level and little of the hard one: intermediate pass rates per domain, with `add2`/`sub`/`word`
easier than `mul`/`two_step`. Level 1 needs only digit-wise facts (no carry, no borrow, multiples of 10).

Domain    prompt                                        level 1            level 2              level 3
add2      Compute 47+38.                                no carry           units carry, <100    sum ≥ 100
add3      Compute 472+385.                              no carry           one carry            ≥ 2 carries
sub       Compute 83-47.                                no borrow          borrow               (two levels)
mul       Compute 7*38.  /  Compute 38*7.               7*30 (b%10==0)     b in 11..19          b in 21..99
two_step  Compute 3*4+5.  /  Compute 6*19-17.           a*b±c, b,c < 10    b < 10, c ≥ 10       b ≥ 10
word      Tom has 12 apples and buys 7 more. How many apples does he have?   add / take away / groups
"""

from __future__ import annotations

import random
import string
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


def _carries(a: int, b: int) -> int:
    n, carry = 0, 0
    while a or b:
        carry = 1 if a % 10 + b % 10 + carry >= 10 else 0
        n += carry
        a, b = a // 10, b // 10
    return n


def _pick(r: random.Random, draw: Callable[[], tuple[int, int]], level_of: Callable[[int, int], int], levels: int):
    """Operands of a uniformly chosen level (rejection sampling: every level is reasonably likely)."""
    want = r.randint(1, levels)
    while True:
        a, b = draw()
        if level_of(a, b) == want:
            return a, b, want


def _add2(r: random.Random) -> Sample:
    def level(a: int, b: int) -> int:
        return 1 if _carries(a, b) == 0 else 2 if a + b < 100 else 3

    a, b, lv = _pick(r, lambda: (r.randint(10, 99), r.randint(10, 99)), level, 3)
    return f"Compute {a}+{b}.", a + b, {"level": lv, "op": "add"}


def _add3(r: random.Random) -> Sample:
    a, b, lv = _pick(r, lambda: (r.randint(100, 999), r.randint(100, 999)), lambda a, b: 1 + min(_carries(a, b), 2), 3)
    return f"Compute {a}+{b}.", a + b, {"level": lv, "op": "add"}


def _sub(r: random.Random) -> Sample:
    def draw() -> tuple[int, int]:
        a = r.randint(20, 99)
        return a, r.randint(10, a)

    a, b, lv = _pick(r, draw, lambda a, b: 2 if a % 10 < b % 10 else 1, 2)
    return f"Compute {a}-{b}.", a - b, {"level": lv, "op": "sub"}


def _mul(r: random.Random) -> Sample:
    a, b, lv = _pick(r, lambda: (r.randint(2, 9), r.randint(10, 99)),
                     lambda a, b: 1 if b % 10 == 0 else 2 if b < 20 else 3, 3)
    x, y = (a, b) if r.random() < 0.5 else (b, a)  # both orders: 1440 distinct prompts
    return f"Compute {x}*{y}.", a * b, {"level": lv, "op": "mul"}


def _two_step(r: random.Random) -> Sample:
    level = r.randint(1, 3)
    a = r.randint(2, 9)
    b = r.randint(2, 9) if level < 3 else r.randint(10, 99)
    c = r.randint(1, 9) if level == 1 else r.randint(10, 99) if level == 2 else r.randint(1, 99)
    if r.random() < 0.5 or c > a * b:
        return f"Compute {a}*{b}+{c}.", a * b + c, {"level": level, "op": "mul_add"}
    return f"Compute {a}*{b}-{c}.", a * b - c, {"level": level, "op": "mul_sub"}


def _word(r: random.Random) -> Sample:
    (name, pron), item = r.choice(_NAMES), r.choice(_ITEMS)
    level = r.randint(1, 3)
    if level == 1:
        a, b = r.randint(2, 30), r.randint(2, 20)
        return f"{name} has {a} {item} and buys {b} more. How many {item} does {pron} have?", a + b, {"level": 1, "op": "add"}
    if level == 2:
        a = r.randint(5, 40)
        b = r.randint(1, a - 1)
        return f"{name} has {a} {item} and gives away {b}. How many {item} are left?", a - b, {"level": 2, "op": "sub"}
    a, b = r.randint(2, 6), r.randint(2, 9)
    return f"{name} has {a} bags of {b} {item}. How many {item} does {pron} have?", a * b, {"level": 3, "op": "mul"}


DOMAINS: dict[str, Callable[[random.Random], Sample]] = {
    "add2": _add2, "add3": _add3, "sub": _sub, "mul": _mul, "two_step": _two_step, "word": _word,
}
assert tuple(DOMAINS) == SYNTHETIC_DOMAINS, "keep cropi_core.config.SYNTHETIC_DOMAINS in sync"


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
        n_pool = cfg.pool_per_domain.get(d, cfg.pool_size)
        probs = generate_problems(d, n_val + cfg.test_size + n_pool, cfg.seed)
        if n_val:
            val[f"val/{d}"] = probs[:n_val]
        (test_t if d in cfg.targeted else test_u)[f"test/{d}"] = probs[n_val : n_val + cfg.test_size]
        pool += probs[n_val + cfg.test_size :]
    random.Random(f"cropi-pool:{cfg.seed}").shuffle(pool)
    return DataSplits(pool=pool, val=val, test_targeted=test_t, test_untargeted=test_u)
