"""What `cropi run`, `cropi compare` and `cropi select` show while they work, and the summary they end with.

Quiet (the default): what the libraries print during a run — Prefect's log lines, TRL's per-step dicts, warnings
(FutureWarning etc.), transformers' messages — goes to `<run folder>/train.log`, and the terminal shows one
progress view (stage, task, counts, ETA): a live line on a terminal, or, when stdout is not a terminal (CI, a
pipe, a file), one plain line per task finished and per stage, with no redraw and no ANSI codes. `--verbose`
keeps today's console: everything the libraries print, as they print it. Both end with the summary.

Library mechanisms only, all undone when the run ends (CliRunner tests run many commands in one process):
- the console handlers of configured loggers (Prefect's on the root logger and uvicorn's, transformers') are
  swapped, in place, for handlers on train.log with the same formatter and level;
- `logging.captureWarnings` sends warnings to the `py.warnings` logger, hence to train.log;
- `CROPI_PROGRESS=0` (`tasks.common.show_progress`) turns off the tqdm bars of cropi's tasks and Trainer's,
  and training sends its per-step dicts to the task's Prefect run logger (so to train.log and the UI);
  transformers' own bars are switched off with `transformers.utils.logging.disable_progress_bar`;
- a handler on the `prefect` logger watches flow and task runs begin and finish, for the view.
Task threads share all of it. Processes started during the run inherit `CROPI_PROGRESS`: a `cropi compare
--workers N` worker logs to `runs/<name>-compare/logs/`, a Ray worker to Ray's session logs (`ray.init` with
`log_to_driver` off, `flows.runtime.task_runner`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table

from tasks.common import PROGRESS_ENV

LOG_NAME = "train.log"
_FINISHED = re.compile(r"Finished in state (\w+)")
_STATUS = {"Completed": "computed", "Cached": "reused"}


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class View:
    """The progress view: fed by `Watcher` (any thread), drawn as a rich live line or as plain lines."""

    def __init__(self, out: IO[str], title: str, *, stages: int | None, runs: int = 1, quiet: bool = True) -> None:
        self.console = terminal(out)
        self.live = quiet and self.console.is_terminal and not self.console.is_dumb_terminal
        self.lines = quiet and not self.live
        self.title, self.stages, self.runs = title, stages, runs
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.t_first_stage: float | None = None
        self.run: str | None = None
        self.runs_done = 0
        self.stage: int | None = None
        self.stages_done = 0
        self.stage_tasks = 0
        self.stage_t0 = 0.0
        self.tasks_per_stage: list[int] = []
        self.done = self.computed = self.reused = self.failed = 0
        self.activity = ""
        self.progress = None

    # ------------------------------------------------------------ events (called under no lock, any thread)
    def flow_begins(self, name: str) -> None:
        with self.lock:
            if name.startswith("stage-"):
                self.stage, self.stage_tasks, self.stage_t0 = int(name.split("-", 1)[1]), 0, time.monotonic()
                self.t_first_stage = self.t_first_stage or self.stage_t0
                n = f" ({self.stage + 1} of {self.stages})" if self.stages else ""
                self.say(f"{self.run_prefix()}stage {self.stage}{n} begins")
            elif name.startswith("curriculum-"):
                self.run, self.stage, self.stages_done = name.removeprefix("curriculum-"), None, 0
                if self.runs > 1:
                    self.say(f"run {self.run} begins")

    def flow_finished(self, name: str, state: str) -> None:
        with self.lock:
            if name.startswith("stage-") and self.stage is not None:
                self.stages_done += 1
                self.tasks_per_stage.append(self.stage_tasks)
                self.say(f"{self.run_prefix()}stage {self.stage} {'done' if state == 'Completed' else state.lower()}: "
                         f"{self.stage_tasks} task runs in {time.monotonic() - self.stage_t0:.1f}s", always=True)
                self.stage = None

    def task_finished(self, name: str, state: str) -> None:
        status = _STATUS.get(state, state.lower())
        with self.lock:
            if name.startswith("report-"):  # writes the report: no artifact, not among the run's task counts
                self.activity = "report written"
                return
            self.activity = f"{name} {status}"
            self.done += 1
            self.stage_tasks += 1
            if status == "computed":
                self.computed += 1
            elif status == "reused":
                self.reused += 1
            else:
                self.failed += 1
            self.say(f"{self.where()}{name}: {status}")

    def task_says(self, name: str, msg: str) -> None:
        if not msg.startswith("{"):  # a TRL dict: train.log's, not the view's
            self.activity = f"{name}: {msg.splitlines()[0][:80]}"

    def event(self, ev: dict[str, Any]) -> None:
        if "run_done" in ev:
            with self.lock:
                self.runs_done, self.stage, self.stages_done = int(ev["done"]), None, 0
                self.say(f"run {ev['run_done']} finished ({ev['done']} of {ev['total']})", always=True)

    # ------------------------------------------------------------ drawing
    def run_prefix(self) -> str:
        return f"{self.run} " if self.runs > 1 and self.run else ""

    def where(self) -> str:
        if not self.stages:  # cropi select: one scoring pass, no stages
            return ""
        at = f"stage {self.stage}" if self.stage is not None else "final" if self.stages_done else "offline"
        return f"{self.run_prefix()}{at} · "

    def say(self, line: str, always: bool = False) -> None:
        """One plain line (line mode), or a line above the live view for stage / run news."""
        stamp = f"[{clock(time.monotonic() - self.t0)}] "
        if self.lines:
            self.console.print(stamp + line, soft_wrap=True, markup=False)
        elif self.live and always and self.progress is not None:
            self.progress.console.print(stamp + line, soft_wrap=True, markup=False)

    def fraction(self) -> float | None:
        """How much of the run is done: stages done (plus the current stage's task runs against the previous
        stage's count), over every run; None without stages (cropi select)."""
        if not self.stages:
            return None
        within = 0.0
        if self.stage is not None and self.tasks_per_stage:
            within = min(0.95, self.stage_tasks / max(1, self.tasks_per_stage[-1]))
        run = min(1.0, (self.stages_done + within) / self.stages)
        return min(1.0, (self.runs_done + (run if self.runs_done < self.runs else 0.0)) / self.runs)

    def eta(self, f: float | None) -> str:
        if not f or self.t_first_stage is None or f >= 1:
            return "–"
        spent = time.monotonic() - self.t_first_stage
        return clock(spent * (1 - f) / f)

    def status(self) -> dict[str, Any]:
        with self.lock:
            f = self.fraction()
            where = f"stage {self.stage}" if self.stage is not None else "final" if self.stages_done else "offline"
            if self.stages:
                where += f" · {self.stages_done}/{self.stages} stages"
            else:
                where = "scoring"
            if self.runs > 1:
                where = f"run {min(self.runs_done + 1, self.runs)}/{self.runs} · " + where
            return {"completed": None if f is None else 100 * f, "where": where, "activity": self.activity,
                    "counts": f"{self.done} tasks ({self.computed} computed, {self.reused} reused"
                              + (f", {self.failed} failed)" if self.failed else ")"),
                    "eta": self.eta(f)}

    @contextlib.contextmanager
    def showing(self) -> Iterator[None]:
        if self.lines:
            self.console.print(self.title, soft_wrap=True, markup=False)
        if not self.live:
            yield
            return
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console.print(self.title, soft_wrap=True, markup=False)
        p = Progress(SpinnerColumn(), TextColumn("{task.fields[where]}"), BarColumn(bar_width=24),
                     TextColumn("{task.fields[counts]} · {task.fields[activity]}"), TimeElapsedColumn(),
                     TextColumn("ETA {task.fields[eta]}"), console=self.console, transient=True,
                     refresh_per_second=4)
        tid = p.add_task("", total=100 if self.stages else None, **{k: v for k, v in self.status().items()
                                                                     if k != "completed"})
        stop = threading.Event()

        def tick() -> None:  # the view's numbers, four times a second
            while not stop.wait(0.25):
                s = self.status()
                p.update(tid, completed=s.pop("completed") or 0, **s)

        self.progress = p
        with p:
            t = threading.Thread(target=tick, daemon=True, name="cropi-view")
            t.start()
            try:
                yield
            finally:
                stop.set()
                t.join()
                self.progress = None


class Watcher(logging.Handler):
    """Turns Prefect's flow / task run records (and cropi's `cropi_event`s) into `View` events."""

    def __init__(self, view: View) -> None:
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            ev = getattr(record, "cropi_event", None)
            if isinstance(ev, dict):
                self.view.event(ev)
            task = getattr(record, "task_run_name", None)
            flow = getattr(record, "flow_run_name", None)
            done = _FINISHED.match(msg)
            if task:
                if done:
                    self.view.task_finished(task, done.group(1))
                else:
                    self.view.task_says(task, msg)
            elif flow:
                if msg.startswith("Beginning"):
                    self.view.flow_begins(flow)
                elif done:
                    self.view.flow_finished(flow, done.group(1))
        except Exception:  # noqa: BLE001 - the view never breaks a run
            self.handleError(record)


def terminal(out: IO[str]) -> Console:
    """A rich console on `out`: colours and live redraw only on a terminal; elsewhere wide plain text."""
    c = Console(file=out, highlight=False)
    return c if c.is_terminal else Console(file=out, highlight=False, width=200, no_color=True)


def _console_handlers() -> list[tuple[logging.Logger, int, logging.Handler]]:
    """(logger, index, handler) of every handler that writes to the terminal: Prefect's console handler (on the
    root logger, uvicorn, fastapi) and plain StreamHandlers (transformers' default handler, ...)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [lg for lg in list(logging.Logger.manager.loggerDict.values())
                                       if isinstance(lg, logging.Logger)]
    return [(lg, i, h) for lg in loggers for i, h in enumerate(lg.handlers)
            if isinstance(h, PrefectConsoleHandler) or type(h) is logging.StreamHandler]


@contextlib.contextmanager
def to_file(path: Path) -> Iterator[None]:
    """Send the libraries' console output to `path` (appended) for the duration (see the module docstring)."""
    import prefect  # noqa: F401 - Prefect's logging config is in place before its handlers are swapped
    from transformers.utils import logging as hf_logging

    hf_logging.get_verbosity()  # transformers' default handler exists before it is swapped
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed below
    f.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv[1:]) or 'cropi'}\n")
    swapped, made = [], {}
    for lg, i, h in _console_handlers():
        if h not in made:
            fh = logging.StreamHandler(f)
            fh.setFormatter(h.formatter)
            fh.setLevel(h.level)
            for flt in h.filters:
                fh.addFilter(flt)
            made[h] = fh
        lg.handlers[i] = made[h]
        swapped.append((lg, i, h))
    capturing = logging._warnings_showwarning is None  # type: ignore[attr-defined]  # nobody captures yet
    if capturing:
        logging.captureWarnings(True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    old_env = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "0"
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = old_env
        if bars:
            hf_logging.enable_progress_bar()
        if capturing:
            logging.captureWarnings(False)
        for lg, i, h in swapped:
            if i < len(lg.handlers) and lg.handlers[i] is made[h]:
                lg.handlers[i] = h
            else:
                with contextlib.suppress(ValueError):
                    lg.handlers.remove(made[h])
                lg.addHandler(h)
        f.close()
        _quiet_exit()


_EXIT_HOOKED = False


def _quiet_exit() -> None:
    """Prefect stops its temporary API server at interpreter exit and says so on the console, after the summary:
    hooked after the server's own exit hook, so it runs first, this raises Prefect's loggers to warnings."""
    global _EXIT_HOOKED
    if not _EXIT_HOOKED:
        _EXIT_HOOKED = True
        atexit.register(lambda: logging.getLogger("prefect").setLevel(logging.WARNING))


@contextlib.contextmanager
def session(log_file: Path, title: str, *, verbose: bool, stages: int | None = None, runs: int = 1) -> Iterator[View]:
    """The console of one command: quiet (train.log + the view; its first line names train.log) or `verbose`
    (today's console, no view). An error still ends the command with its one `error:` line on stderr."""
    view = View(sys.stdout, title if verbose else f"{title}; full log: {log_file}", stages=stages, runs=runs,
                quiet=not verbose)
    if verbose:
        yield view
        return
    watcher = Watcher(view)
    prefect_logger = logging.getLogger("prefect")
    with to_file(log_file):
        prefect_logger.addHandler(watcher)
        try:
            with view.showing():
                yield view
        finally:
            prefect_logger.removeHandler(watcher)


# ---------------------------------------------------------------- summaries
def _table(*columns: str) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c, justify="left" if c in ("method", "group") else "right")
    return t


def _pm(a: float | None, se: float | None) -> str:
    if a is None:
        return "–"
    return f"{a:.3f}" if se is None or se != se else f"{a:.3f} ± {se:.3f}"


def cost_line(wall: float, compute: float | None) -> str:
    c = "unpriced" if compute is None else f"{compute:.1f}s"
    return f"cost: {wall:.1f}s wall, {c} of compute (what it computed now; reused artifacts cost nothing again)"


def run_summary(view: View, summary: dict[str, Any]) -> None:
    """`cropi run`'s last lines: accuracy per evaluation step, counts, cost, final checkpoint, report."""
    from flows.runtime import counts_line

    out = view.console
    rows = summary.get("accuracy") or []
    if rows:
        steps = sorted({r["step"] for r in rows})
        groups = list(dict.fromkeys(r["group"] for r in rows))
        t = _table("step", *groups)
        cell = {(r["group"], r["step"]): _pm(r["accuracy"], r["se"]) for r in rows}
        for s in steps:
            t.add_row(str(s), *[cell.get((g, s), "–") for g in groups])
        out.print(f"accuracy ({summary.get('metric', 'accuracy')} ± SE) per training step:", soft_wrap=True)
        out.print(t)
    out.print(f"done in {summary['seconds']:.1f}s (flow {summary['flow_seconds']:.1f}s): "
              f"{counts_line(summary['counts'])}", soft_wrap=True)
    out.print(cost_line(summary["seconds"], summary.get("compute_seconds")), soft_wrap=True)
    out.print(f"final checkpoint: {summary['final_checkpoint']}", soft_wrap=True)
    out.print(f"report: {summary['report']}", soft_wrap=True)


def compare_summary(view: View, out_: dict[str, Any], times, wall) -> None:  # noqa: ANN001
    """`cropi compare`'s last lines: final accuracy per method, speed-ups, counts, cost, report."""
    out = view.console
    res = out_["results"]
    t = _table("method", "targeted", "untargeted", "step speed-up", "wall speed-up")
    for m, row in res["methods"].items():
        # mean over seeds ± the evaluation's standard error, as the report's table
        acc = [_pm((row.get(f"{g}_final") or [None])[0], (row.get(f"{g}_se") or [None])[-1]) for g in ("tgt", "unt")]
        su = "step_speedup" in row
        t.add_row(m, *acc, times(row["step_speedup"]) if su else "", wall(row) if su else "")
    recs = out_["records"]
    counts = [r.get("counts") or {} for r in recs]
    n = {k: sum(c.get(k, 0) for c in counts) for k in ("task_runs", "computed", "reused")}
    secs = [r.get("compute_seconds") for r in recs]
    out.print(f"final accuracy (mean over seeds ± SE) of {len(recs)} runs:", soft_wrap=True)
    out.print(t)
    for v in res.get("verdicts", {}).values():  # does influence earn its scoring on this pool (compare.md)
        out.print(v["text"].replace("**", "").replace("`", ""), soft_wrap=True, markup=False)
    out.print(f"compared {len(recs)} runs in {out_['seconds']:.1f}s: {n['task_runs']} task runs, "
              f"{n['computed']} computed, {n['reused']} reused", soft_wrap=True)
    out.print(cost_line(out_["seconds"], None if any(s is None for s in secs) else sum(secs)), soft_wrap=True)
    out.print(f"report: {out_['report']}", soft_wrap=True)
