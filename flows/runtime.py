"""What flows share: submitting bound tasks while keeping their futures (for executed-vs-cached counts), and
the task runner chosen by `RunnerConfig`."""

from __future__ import annotations

from typing import Any

import contextlib

from prefect import Flow, Task, unmapped
from prefect.futures import PrefectFuture, wait

from cropi_core.config import RunConfig
from cropi_core.errors import ConfigError
from tasks.common import GPU_TAG, LEDGER, bind, results_dir


class Tracker:
    """Submits tasks with this run's result storage + retries and remembers every future."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.futures: list[PrefectFuture] = []

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
        self.futures.append(fut)
        return fut

    def map(self, task: Task, over: dict[str, list], **params: Any) -> list[PrefectFuture]:
        """One run of `task` per element of the lists in `over`; every other parameter is passed whole."""
        if not any(over.values()):
            return []
        with self._placement(task):
            futs = list(bind(task, self.cfg).map(**over, **{n: unmapped(v) for n, v in params.items()}))
        self.futures += futs
        return futs

    def counts(self) -> dict[str, int]:
        """Task runs submitted by this flow, how many Prefect served from its cache, and how many failed."""
        wait(self.futures)
        states = [f.state for f in self.futures]
        return {
            "task_runs": len(states),
            "cached": sum(1 for s in states if s.name == "Cached"),
            "failed": sum(1 for s in states if s.is_failed() or s.is_crashed()),
        }


def add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}


def run_counts(flow_counts: dict[str, int]) -> dict[str, Any]:
    """A run's counts from its flows' `Tracker.counts()` and this process's ledger: task runs, computed, failed and
    `reused` = task runs that did not compute because their artifact already existed, whether Prefect's cache
    answered (the body never ran) or the body found it in storage; the split is kept under `reused_via`."""
    cached, hits = flow_counts.get("cached", 0), LEDGER.count("storage-hit")
    return {"task_runs": flow_counts.get("task_runs", 0), "computed": LEDGER.count("computed"), "reused": cached + hits,
            "failed": flow_counts.get("failed", 0), "reused_via": {"prefect_cache": cached, "storage": hits}}


def counts_line(c: dict[str, Any]) -> str:
    """The counts as the CLI and the scheduled run's log print them."""
    return f"{c['task_runs']} task runs, {c['computed']} computed, {c['reused']} reused"


def for_run(flow: Flow, cfg: RunConfig) -> Flow:
    """`flow` as this run executes it: the task runner of `cfg.runner`, and Prefect result persistence set once,
    here, on the flow. Every task and subflow it runs inherits the result storage (`<root>/work/prefect-results`, `results_dir`)
    and persistence from the flow run's context (on Ray too: Prefect ships the context's result store to the
    worker); the tasks themselves carry only their cache policy, tags and the run's retry settings (`bind`)."""
    # a pathlib.Path, not a LocalFileSystem block: a flow's storage must be a saved block or a path
    return flow.with_options(task_runner=task_runner(cfg), persist_result=True, result_storage=results_dir(cfg))


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
        if r.num_cpus:
            init["num_cpus"] = r.num_cpus
        return RayTaskRunner(address=r.address, init_kwargs=init) if r.address else RayTaskRunner(init_kwargs=init)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=r.num_cpus or 1)
