"""One lock for torch's default random generator, which is process-wide and shared by every thread.

Seeded sampling (`rollout.hf.generate`: fork_rng → manual_seed → generate → restore) and GRPO training (TRL seeds
the default generator and samples from it) both use that one generator. Run side by side in threads — as Prefect
runs a stage's online rollouts next to its training, and the evaluations of several test sets next to each other —
one thread's reseed or restore lands in the middle of the other's draws, so the same inputs train a different
policy from run to run. Holding this lock makes each of them see only its own seeded stream, so results no longer
depend on thread timing. (CROPI runs also differed for another reason, fixed in `projection.jl.energy_ratios`:
per-process coordinate masks.)

The time a thread spends waiting for the lock is counted (`waited_seconds`) so that compute timers can leave it
out: an artifact's recorded cost stays its own work, not the queue in front of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.RLock()
_WAITED = threading.local()


@contextmanager
def global_rng() -> Iterator[None]:
    """Hold torch's default generator for the block (re-entrant)."""
    t0 = time.perf_counter()
    with _LOCK:
        _WAITED.seconds = waited_seconds() + time.perf_counter() - t0
        yield


def waited_seconds() -> float:
    """Seconds this thread has waited for `global_rng` so far (monotone: take differences)."""
    return getattr(_WAITED, "seconds", 0.0)
