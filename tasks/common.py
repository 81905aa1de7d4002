"""Plumbing shared by every cropi task: cache keys, result storage, retries, fault injection, assets, ledger.

A cropi task is a thin `@task` around one artifact kind. Its Prefect cache key IS the storage artifact key
(computed from parent keys + the config section's `.hashable()`), results are persisted under the storage
root, and the task body checks storage first, so a fresh Prefect database (or lost result records) still
recomputes nothing. Tasks take and return small `ArtifactRef`s, never tensors.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger
from prefect.cache_policies import CacheKeyFnPolicy

from cropi_core.config import RunConfig
from cropi_core.errors import ConfigError, CropiError
from storage import ArtifactRef, Store, open_store

FAULT_ENV = "CROPI_FAULT"
KILL_ENV = "CROPI_KILL"  # chaos benchmark only: SIGKILL inside the named task (see maybe_kill)
# Prefect tag on every task that runs a model (bootstrap, rollouts, grads chunks, train, evaluate, health): a tag
# concurrency limit on it (`prefect concurrency-limit create gpu 1`) keeps concurrent runs from sharing one GPU
GPU_TAG = "gpu"
# Prefect tag on tasks that retrying cannot help (reading the user's data; sealing a chunked array, whose missing
# chunks the flow recomputes instead): `bind` gives every other task `runner.retries`
NO_RETRY_TAG = "no-retry"


class TransientFault(RuntimeError):
    """An injected, retryable failure (see `maybe_fault`)."""


# ---------------------------------------------------------------- store + result storage
@functools.lru_cache(maxsize=16)
def _store(root: str, verify: str | None) -> Store:
    return open_store(root, verify=verify)


def get_store(cfg: RunConfig) -> Store:
    """The (process-cached) store named by `cfg.storage.root`, checking payloads per `cfg.storage.verify`.

    A verify mode the config leaves at its default yields to `$CROPI_STORAGE_VERIFY` (then "sampled")."""
    st = cfg.storage
    return _store(st.root, st.verify if "verify" in st.model_fields_set else None)


def local_root(cfg: RunConfig) -> Path | None:
    """The storage root as a local folder, or None for remote (s3://, memory://, ...) roots."""
    root = cfg.storage.root
    if root.startswith("file://"):
        return Path(root[len("file://"):]).resolve()
    if "://" in root:
        return None
    return Path(root).expanduser().resolve()


def work_dir(cfg: RunConfig, *parts: str) -> Path:
    """A local scratch folder that survives a killed process (mid-stage training checkpoints live here).

    Under `<root>/work/` for local roots, else under the user cache (the artifacts themselves go to storage).
    """
    base = local_root(cfg)
    if base is None:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cropi"
    p = base.joinpath("work", *parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def work_lock(cfg: RunConfig, *parts: str) -> Iterator[None]:
    """Exclusive lock (flock) for the work folder `work_dir(cfg, *parts)`: two runs on one root (or two threads)
    computing the same artifact take turns instead of sharing — and deleting — each other's scratch files;
    the second then finds the first's artifact in storage. A killed holder releases it (the kernel does)."""
    import fcntl

    lock = work_dir(cfg, *parts[:-1]) / f".{parts[-1]}.lock"
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def results_dir(cfg: RunConfig) -> Path:
    """Where Prefect persists task results (a pathlib.Path: a bare string would be read as a block name)."""
    return work_dir(cfg, "prefect-results")


def run_dir(cfg: RunConfig) -> Path:
    """The run folder for reports: `<local storage root>/runs/<name>/`, or `./runs/<name>/` for remote roots."""
    from cropi_core.config import check_run_name

    base = local_root(cfg)
    runs = (base / "runs") if base is not None else Path("runs")
    try:
        p = runs / check_run_name(cfg.name)
    except ValueError as err:
        raise ConfigError(f"name: {err}") from None
    if runs.resolve() not in p.resolve().parents:  # a symlinked runs/<name> pointing elsewhere
        raise ConfigError(f"name: run folder {p} resolves outside {runs}")
    p.mkdir(parents=True, exist_ok=True)
    return p.resolve()


# ---------------------------------------------------------------- cache policy + binding
def artifact_intact(store: Store, key: str) -> bool:
    """Default check behind a Prefect cache hit: False only if artifact `key` is damaged in storage (corrupt
    manifest, payload failing the store's verify mode, or a manifest moved aside by a reader; it warns, naming
    the artifact). Never-written artifacts and keys that are not artifact keys (gradient chunks) pass."""
    from storage.keys import KEY_RE

    return not KEY_RE.match(key) or store.state(key) != "damaged"


def key_policy(key_fn: Callable[..., str], intact: Callable[[Store, str], bool] | None = None) -> CacheKeyFnPolicy:
    """Prefect cache policy whose key is `key_fn(**task_parameters)` (the storage artifact key).

    A cached result is only a pointer to storage: if the artifact is gone or damaged (`intact(store, key)`
    false; default `artifact_intact`) the key is made unique, Prefect misses, and the task body — which checks
    storage first — recomputes it instead of handing downstream tasks a ref to corrupt bytes.
    """
    check = intact or artifact_intact

    def cache_key(_ctx: Any, params: dict[str, Any]) -> str:
        # namespaced by storage root: a cache hit must mean "this artifact is in THIS store" (two runs with
        # different roots sharing one Prefect server would otherwise skip writing to the second root)
        # and by the store's identity: a wiped and recreated root (e.g. an s3 bucket, whose Prefect records live
        # in a local cache dir) must not serve stale hits for artifacts it no longer holds
        cfg = params.get("cfg")
        root = ""
        if isinstance(cfg, RunConfig):
            root = f"{local_root(cfg) or cfg.storage.root}|{get_store(cfg).identity()}"
        key = key_fn(**params)
        if isinstance(cfg, RunConfig) and not check(get_store(cfg), key):
            return f"{key}-recompute-{uuid.uuid4().hex}"
        return f"{key}-{hashlib.sha256(root.encode()).hexdigest()[:12]}"

    return CacheKeyFnPolicy(cache_key_fn=cache_key)


def retry_transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry anything except user errors (CropiError: bad data/config, retrying cannot help)."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - result not retrievable: treat as transient
        return True
    return not isinstance(exc, CropiError)


def bind(task: Task, cfg: RunConfig) -> Task:
    """The task with this run's retry settings (`cfg.runner`; none if NO_RETRY_TAG). Result storage and persistence
    are not set here: the flow sets them once and its tasks inherit them (`flows.runtime.for_run`)."""
    if NO_RETRY_TAG in task.tags:
        return task
    return task.with_options(retries=cfg.runner.retries, retry_delay_seconds=cfg.runner.retry_delay_s,
                             retry_condition_fn=retry_transient)


# ---------------------------------------------------------------- fault injection
def fault_budget(name: str) -> int:
    """How many leading attempts of task `name` must fail, from CROPI_FAULT="grads:1,train:2" (0 if unset)."""
    for item in os.environ.get(FAULT_ENV, "").split(","):
        if ":" in item:
            n, count = item.split(":", 1)
            if n.strip() == name:
                return int(count)
        elif item.strip() == name:
            return 1
    return 0


def attempt() -> int:
    """1-based attempt number of the current task run (1 outside a task)."""
    try:
        from prefect.runtime import task_run

        return int(task_run.run_count or 1)
    except Exception:  # noqa: BLE001 - outside a task run
        return 1


def maybe_fault(name: str) -> None:
    """Raise TransientFault while this task run's attempt ≤ the CROPI_FAULT budget for `name`."""
    n = fault_budget(name)
    a = attempt()
    if a <= n:
        LEDGER.add(name, f"attempt-{a}", "fault")
        raise TransientFault(f"injected transient fault in {name} (attempt {a} of {n} failing)")


def maybe_kill(name: str) -> None:
    """Chaos hook (`benchmarks/chaos.py --inside`): SIGKILL this process group when CROPI_KILL names this task,
    at the worst moment for "nothing half-registered" — its payload written, its manifest not yet committed."""
    if os.environ.get(KILL_ENV) == name:
        import signal

        os.killpg(os.getpgrp(), signal.SIGKILL)


# ---------------------------------------------------------------- cancellation
# Set when the flow run this process executes is being cancelled (flows.scheduled watches its state). Prefect lets
# a running task finish before the flow ends (or kills the process after its grace period), so long model tasks
# check this at every step and stop early, keeping their mid-stage checkpoints.
CANCEL = threading.Event()


class RunCancelled(CropiError):
    """The flow run is being cancelled; raised inside a task at a safe point (not retried)."""


def check_cancelled(where: str) -> None:
    """Raise RunCancelled if this process's flow run is being cancelled (call between units of work)."""
    if CANCEL.is_set():
        raise RunCancelled(f"{where}: stopped, the flow run is being cancelled")


# ---------------------------------------------------------------- ledger: what ran in this process
@dataclass
class Ledger:
    """Counts task bodies that computed an artifact vs found it in storage (thread-safe, per process)."""

    events: list[tuple[str, str, str]] = field(default_factory=list)  # (task, key, "computed"|"storage-hit")
    lock: threading.Lock = field(default_factory=threading.Lock)
    # compute seconds per computed key, kept across reset() (flows.compare prices reused artifacts with them)
    seconds: dict[str, float] = field(default_factory=dict)
    # optional JSON-lines file that every timed computation is appended to as it happens, so the seconds of a
    # killed comparison's finished artifacts survive it (flows.compare points it at its folder)
    sink: Path | None = None

    def add(self, task: str, key: str, outcome: str, seconds: float | None = None) -> None:
        with self.lock:
            self.events.append((task, key, outcome))
            if seconds is not None:
                self.seconds[key] = float(seconds)
                if self.sink is not None:
                    with open(self.sink, "a") as f:
                        f.write(json.dumps({"key": key, "seconds": float(seconds)}) + "\n")

    def reset(self) -> None:
        with self.lock:
            self.events.clear()

    def count(self, outcome: str) -> int:
        with self.lock:
            return sum(1 for e in self.events if e[2] == outcome)

    def computed(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(t, k) for t, k, o in self.events if o == "computed"]

    def __reduce__(self):  # Ray pickles task functions by value: a worker process uses its own ledger
        return (_process_ledger, ())


LEDGER = Ledger()


def _process_ledger() -> Ledger:
    return LEDGER


def log(msg: str) -> None:
    """Log to the Prefect run logger when inside a run, else to the module logger."""
    try:
        get_run_logger().info(msg)
    except Exception:  # noqa: BLE001 - outside a run context
        logging.getLogger("cropi").info(msg)


def storage_hit(task: str, ref: ArtifactRef) -> ArtifactRef:
    LEDGER.add(task, ref.key, "storage-hit")
    log(f"{task}: reusing {ref.kind} {ref.key[:12]} from storage")
    return ref


def computed(task: str, ref: ArtifactRef, parents: list[ArtifactRef | str], store: Store, seconds: float,
             meta: dict | None = None) -> ArtifactRef:
    """Record a freshly computed artifact and emit its Prefect asset materialisation."""
    LEDGER.add(task, ref.key, "computed", seconds)
    log(f"{task}: computed {ref.kind} {ref.key[:12]} in {seconds:.1f}s")
    emit_asset(ref, parents, store, meta={"seconds": round(seconds, 3), **(meta or {})})
    return ref


# ---------------------------------------------------------------- assets
def asset_key(uri: str) -> str:
    """A Prefect asset key for an artifact URI (asset keys need a scheme)."""
    return uri if "://" in uri else "file://" + str(Path(uri).resolve())


def emit_asset(ref: ArtifactRef, parents: list[ArtifactRef | str], store: Store, meta: dict | None = None) -> None:
    """Emit `prefect.asset.materialization.succeeded` for `ref` with its parents as upstream assets.

    Artifact URIs are content-derived, known only at run time, so events are emitted directly in the same
    shape `@materialize` uses (resource = the asset, related = upstream assets with role "asset").
    """
    try:
        from prefect.events import emit_event

        upstream = []
        for p in parents:
            uri = p.uri if isinstance(p, ArtifactRef) else store.uri(p)
            upstream.append({"prefect.resource.id": asset_key(uri), "prefect.resource.role": "asset"})
            emit_event(event="prefect.asset.referenced", resource={"prefect.resource.id": asset_key(uri)})
        upstream.append({"prefect.resource.id": "cropi", "prefect.resource.role": "asset-materialized-by"})
        emit_event(
            event="prefect.asset.materialization.succeeded",
            resource={"prefect.resource.id": asset_key(ref.uri), "prefect.resource.name": f"{ref.kind}:{ref.key[:12]}"},
            related=upstream,
            payload={"kind": ref.kind, "key": ref.key, **(meta or {})},
        )
    except Exception as err:  # noqa: BLE001 - lineage events must never fail a task
        logging.getLogger("cropi").debug("asset event not emitted: %s", err)


class Timer:
    """Seconds of a task's own work: wall time less the time its thread waited for torch's generator
    (cropi_core.rng.global_rng), which another task of the same process was using."""

    def __enter__(self) -> "Timer":
        from cropi_core.rng import waited_seconds

        self.t0, self.w0 = time.perf_counter(), waited_seconds()
        return self

    def __exit__(self, *exc: Any) -> None:
        from cropi_core.rng import waited_seconds

        self.seconds = time.perf_counter() - self.t0 - (waited_seconds() - self.w0)

