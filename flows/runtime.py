"""What flows share: submitting bound tasks while keeping their futures (what each task run computed or reused,
read from its final Prefect state), and the task runner chosen by `RunnerConfig`."""

from __future__ import annotations

from typing import Any

import contextlib

from prefect import Flow, Task, unmapped
from prefect.futures import PrefectFuture, wait

from cropi_core.config import RunConfig
from cropi_core.errors import ConfigError
from flows.outputs import Tally
from storage import ArtifactRef, StorageError, Store
from tasks.common import GPU_TAG, bind, show_progress


class Tracker:
    """Submits tasks with this run's retries (and GPU placement) and remembers every future, by task name."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.futures: list[tuple[str, PrefectFuture]] = []

    def _placement(self, task: Task):
        """Tasks that run a model carry GPU_TAG on their decorator; on Ray they get `runner.gpus_per_task` GPUs."""
        r = self.cfg.runner
        if r.kind == "ray" and r.gpus_per_task > 0 and GPU_TAG in task.tags:
            from prefect_ray.context import remote_options

            return remote_options(num_gpus=r.gpus_per_task)  # Ray schedules the task on a GPU slot
        return contextlib.nullcontext()

    def submit(self, task: Task, *, wait_for: list | None = None, **params: Any) -> PrefectFuture:
        with self._placement(task):
            fut = bind(task, self.cfg).submit(wait_for=wait_for, **params)
        self.futures.append((task.name, fut))
        return fut

    def map(self, task: Task, over: dict[str, list], **params: Any) -> list[PrefectFuture]:
        """One run of `task` per element of the lists in `over`; every other parameter is passed whole."""
        if not any(over.values()):
            return []
        with self._placement(task):
            futs = list(bind(task, self.cfg).map(**over, **{n: unmapped(v) for n, v in params.items()}))
        self.futures += [(task.name, f) for f in futs]
        return futs

    def tally(self) -> Tally:
        """What this flow's task runs did, from their final states: "Cached" = the body found its artifact in
        storage; any other completed run computed the artifact (or gradient chunk) its result names. Per flow,
        with no process-global state: on Ray the states come back from the workers with the results."""
        wait([f for _, f in self.futures])
        t = Tally(task_runs=len(self.futures))
        for name, f in self.futures:
            s = f.state
            if s.is_failed() or s.is_crashed():
                t.failed += 1
            elif s.name == "Cached":
                t.reused += 1
            elif s.is_completed():
                t.computed.append((name, result_key(f.result())))
        return t


def result_key(x: Any) -> str:
    """The artifact a task result names: a ref's key, or a chunk result's "key" (`<grads key>:<chunk>`)."""
    if isinstance(x, ArtifactRef):
        return x.key
    if isinstance(x, dict) and "key" in x:
        return str(x["key"])
    return str(x)


def counts_line(c: dict[str, Any]) -> str:
    """The counts as the CLI and the scheduled run's log print them."""
    return f"{c['task_runs']} task runs, {c['computed']} computed, {c['reused']} reused"


def failed_attempts(store: Store, computed: list[tuple[str, str]]) -> int:
    """Attempts that failed (and were retried) before the ones that computed these artifacts, from their compute
    records (`attempt` − 1; a gradient chunk's is in its array's `compute.chunks`)."""
    n = 0
    for _, key in computed:
        base, _, chunk = key.partition(":")
        try:
            c = store.manifest(base).meta.get("compute") or {}
        except StorageError:
            continue
        if chunk:
            chunks = c.get("chunks") or []
            c = chunks[int(chunk)] if int(chunk) < len(chunks) and chunks[int(chunk)] else {}
        n += max(0, int(c.get("attempt") or 1) - 1)
    return n


def computed_seconds(store: Store, computed: list[tuple[str, str]]) -> float | None:
    """Compute seconds of the artifacts these task runs computed, from their manifests (a gradient array's seconds
    already sum its chunks', so a chunk counts through its array); None when one has no recorded seconds."""
    from tasks.reports import seconds_of

    secs = [seconds_of(store, k) for k in dict.fromkeys(key.partition(":")[0] for _, key in computed)]
    return None if any(s is None for s in secs) else float(sum(secs))  # type: ignore[arg-type]


def for_run(flow: Flow, cfg: RunConfig) -> Flow:
    """`flow` as this run executes it: the task runner of `cfg.runner`. Nothing is persisted on Prefect's side:
    the artifact store is the only cache (tasks run with `cache_policy=NO_CACHE` and look their artifact up in
    storage first), so task results travel in memory (through Ray on Ray) and no result records pile up or
    outlive the artifacts they point at; the tasks carry only their tags and the run's retry settings (`bind`)."""
    return flow.with_options(task_runner=task_runner(cfg), persist_result=False)


def task_runner(cfg: RunConfig):
    """ThreadPoolTaskRunner for `runner.kind == "local"` (one worker unless num_cpus says otherwise: torch
    already uses every core inside a task), prefect-ray's RayTaskRunner for "ray"."""
    r = cfg.runner
    if r.kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise ConfigError("runner.kind: ray needs the [ray] extra (pip install 'cropi[ray]')") from None
        init = {"include_dashboard": False}
        if not show_progress():  # the quiet console: workers' output stays in Ray's session logs
            init["log_to_driver"] = False
        if r.num_cpus:
            init["num_cpus"] = r.num_cpus
        return RayTaskRunner(address=r.address, init_kwargs=init) if r.address else RayTaskRunner(init_kwargs=init)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=r.num_cpus or 1)
