"""`Problem`: one normalised, verifiable question; `DataSplits`: pool + validation + test sets of a run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cropi_core.errors import DataError

VERIFIER_NAMES = ("math", "exact", "last_number", "answer_line")


@dataclass(frozen=True)
class Problem:
    """A question with a gold answer the verifier `verifier` can check.

    id:     globally unique and stable ("gsm8k_test/17", "syn/mul/123")
    prompt: the question text only (no chat template, no instruction)
    gold:   normalised gold answer ("72", "\\frac{3}{7}")
    source: dataset name ("gsm8k_test", "synthetic"); domain: "gsm8k", "Algebra", "mul", ...
    meta:   JSON-able extras (difficulty level, original row, ...)
    """

    id: str
    prompt: str
    gold: str
    source: str
    domain: str
    verifier: str = "math"
    meta: dict = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict (one line of a dataset artifact)."""
        return asdict(self)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> "Problem":
        """Inverse of `to_record`; DataError naming the missing/odd field."""
        if not isinstance(d, dict):
            raise DataError(f"problem record must be a mapping, got {type(d).__name__}")
        for name in ("id", "prompt", "gold", "source", "domain"):
            if not isinstance(d.get(name), str):
                raise DataError(f"problem record {d.get('id', '?')!r}: field {name!r} missing or not a string (got {d.get(name)!r:.60})")
        verifier = d.get("verifier", "math")
        if verifier not in VERIFIER_NAMES:
            raise DataError(f"problem record {d['id']!r}: field 'verifier' must be one of {VERIFIER_NAMES} (got {verifier!r})")
        unknown = set(d) - {"id", "prompt", "gold", "source", "domain", "verifier", "meta"}
        if unknown:
            raise DataError(f"problem record {d['id']!r}: unknown fields {sorted(unknown)}")
        return cls(d["id"], d["prompt"], d["gold"], d["source"], d["domain"], verifier, dict(d.get("meta") or {}))


@dataclass
class DataSplits:
    """Everything a run reads: the training pool, targeted validation sets (drive selection), and tests.

    Set names: "val/<name>", "test/<name>" (name = dataset name, or the synthetic domain).
    """

    pool: list[Problem]
    val: dict[str, list[Problem]]
    test_targeted: dict[str, list[Problem]]
    test_untargeted: dict[str, list[Problem]]

    def eval_sets(self) -> dict[str, list[Problem]]:
        """All validation and test sets by name (val first, then targeted tests, then untargeted)."""
        return {**self.val, **self.test_targeted, **self.test_untargeted}

    def sizes(self) -> dict[str, int]:
        """Number of problems per set, pool included (for logs and reports)."""
        return {"pool": len(self.pool), **{k: len(v) for k, v in self.eval_sets().items()}}

    def all_problems(self) -> list[Problem]:
        return self.pool + [p for ps in self.eval_sets().values() for p in ps]
