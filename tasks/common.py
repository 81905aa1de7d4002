"""Plumbing shared by every cropi task: storage, retries, fault injection, compute records, assets.

A cropi task is a thin `@task` around one artifact kind, and the artifact store is its only cache: the body looks
its artifact up in storage first and, when it is there and intact, returns it as a Prefect state named "Cached"
(`storage_hit`) without computing anything; Prefect's own task cache is off (`cache_policy=NO_CACHE`, see
docs/architecture.md). An artifact it computes carries its cost in its manifest (`meta["compute"]`: seconds,
machine, task, attempt, flow run; `compute_record`), so reports price it whoever computed it. Tasks take and return
small `ArtifactRef`s, never tensors.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger

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
# "0": tasks draw no progress bars and training sends its per-step dicts to the run log (the quiet `cropi` console,
# flows/cli/console.py, sets it; processes started after it inherit it)
PROGRESS_ENV = "CROPI_PROGRESS"


class TransientFault(RuntimeError):
    """An injected, retryable failure (see `maybe_fault`)."""


# ---------------------------------------------------------------- store
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
    the second then finds the first's artifact in storage. A killed holder releases it (the kernel does).
    The one way cropi holds a concurrent writer off (docs/architecture.md); every other kind lets both compute
    and the first manifest wins."""
    import fcntl

    lock = work_dir(cfg, *parts[:-1]) / f".{parts[-1]}.lock"
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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


# ---------------------------------------------------------------- retries
def retry_transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry anything except user errors (CropiError: bad data/config, retrying cannot help)."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - result not retrievable: treat as transient
        return True
    return not isinstance(exc, CropiError)


def bind(task: Task, cfg: RunConfig) -> Task:
    """The task with this run's retry settings (`cfg.runner`; none if NO_RETRY_TAG). Nothing else: the task runner
    is the flow's (`flows.runtime.for_run`) and no task has a Prefect cache (storage is the only one)."""
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


# ---------------------------------------------------------------- reused or computed
def log(msg: str, event: dict[str, Any] | None = None) -> None:
    """Log to the Prefect run logger when inside a run, else to the module logger. `event`: the same news as data
    for the console's progress view (the record's `cropi_event` attribute)."""
    extra = {"cropi_event": event} if event else None
    try:
        get_run_logger().info(msg, extra=extra)
    except Exception:  # noqa: BLE001 - outside a run context
        logging.getLogger("cropi").info(msg, extra=extra)


def show_progress() -> bool:
    """Whether tasks draw tqdm progress bars (and Trainer prints its per-step dicts on stdout): unless
    `CROPI_PROGRESS=0`. Read at call time, so it holds in every task thread and in processes started later."""
    return os.environ.get(PROGRESS_ENV, "1") != "0"


def reused(task: str, what: str, data: Any) -> Any:
    """What a task body returns when storage already holds its output: `data` in a Completed state named "Cached"
    (the Prefect UI shows the task run as Cached, with the message), so the flow's `Tracker` counts it as reused.
    Called directly (`task.fn(...)`), the body returns this state; `.result()` is `data`."""
    from prefect.states import Completed

    log(f"{task}: reusing {what} from storage")
    return Completed(name="Cached", message=f"reused from storage: {what}", data=data)


def storage_hit(task: str, ref: ArtifactRef) -> Any:
    """`reused` for an artifact found in storage: the task's result is its ref."""
    return reused(task, f"{ref.kind} {ref.key}", ref)


def computed(task: str, ref: ArtifactRef, parents: list[ArtifactRef | str], store: Store,
             meta: dict | None = None) -> ArtifactRef:
    """Log a freshly computed artifact (its seconds from `meta["compute"]`, the manifest's) and emit its Prefect
    asset materialisation."""
    seconds = ((meta or {}).get("compute") or {}).get("seconds")
    log(f"{task}: computed {ref.kind} {ref.key[:12]}" + (f" in {seconds:.1f}s" if seconds is not None else ""))
    emit_asset(ref, parents, store, meta={"seconds": seconds, **{k: v for k, v in (meta or {}).items()
                                                                 if k != "compute"}})
    return ref


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine(device: str | None = None) -> dict[str, Any]:
    """The machine a computation ran on, for its compute record: CPU model, cores, torch threads (None when torch
    was never imported: nothing used it) and the device ("cpu", or "cuda: <GPU name>" for `device` "cuda")."""
    torch = sys.modules.get("torch")
    dev = device or "cpu"
    if dev.startswith("cuda") and torch is not None:
        try:
            dev = f"cuda: {torch.cuda.get_device_name()}"
        except Exception:  # noqa: BLE001 - no CUDA runtime after all
            pass
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads() if torch else None,
            "device": dev}


def flow_run_id() -> str | None:
    """The Prefect flow run this code runs in (a task's own flow run), or None outside one."""
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:  # noqa: BLE001 - outside a run context
        return None


def compute_record(seconds: float, task: str, ran_on: dict | None = None, **extra: Any) -> dict[str, Any]:
    """`meta["compute"]` of an artifact, written with it before its manifest is committed: the seconds of work that
    computed it (`Timer`), the machine (device from the payload's `ran_on`), the task, the attempt that succeeded
    (attempt − 1 earlier attempts failed and were retried) and the Prefect flow run; `extra` adds to it (e.g.
    `partial: True` when earlier, killed work is in the artifact but not in the seconds)."""
    rec: dict[str, Any] = {"seconds": round(float(seconds), 3), "task": task, "attempt": attempt(),
                           "flow_run": flow_run_id(), "machine": machine((ran_on or {}).get("device"))}
    rec.update(extra)
    return rec


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
    (cropi_core.rng.global_rng), which another task of the same process was using. `elapsed()` reads it while
    the work is still going on (a checkpoint's record is written before its timer stops)."""

    def __enter__(self) -> "Timer":
        from cropi_core.rng import waited_seconds

        self.t0, self.w0 = time.perf_counter(), waited_seconds()
        return self

    def elapsed(self) -> float:
        from cropi_core.rng import waited_seconds

        return time.perf_counter() - self.t0 - (waited_seconds() - self.w0)

    def __exit__(self, *exc: Any) -> None:
        self.seconds = self.elapsed()
