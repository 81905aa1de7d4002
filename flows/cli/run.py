"""`cropi run` (the curriculum) and `cropi compare` (CROPI vs baselines at an equal budget)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cropi_core.errors import ConfigError
from flows.cli import console
from flows.cli.common import user_errors
from flows.inputs import prepare

VERBOSE = typer.Option(False, "--verbose", "-v", help="print everything the libraries print (Prefect's log, TRL's "
                       "per-step dicts, warnings, progress bars) instead of the progress view and train.log")


def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML RunConfig (default: the embedded tiny setup)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="override a field: section.key=value (repeatable)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL (default $CROPI_STORAGE or ./.cropi)"),
    name: Optional[str] = typer.Option(None, "--name", help="run name (report folder runs/<name>)"),
    verbose: bool = VERBOSE,
) -> None:
    """Run the CROPI curriculum (cached: a rerun recomputes nothing); show its progress, then the accuracy per
    step, what it computed and reused, its cost and where the report is (the full log: runs/<name>/train.log)."""
    with user_errors():
        cfg = prepare(config, set_, storage, name)
        from flows.curriculum import run_curriculum
        from tasks.common import run_dir

        t = cfg.train
        with console.session(run_dir(cfg) / console.LOG_NAME, f"cropi run {cfg.name}: {t.stages} stages × "
                             f"{t.steps_per_stage} GRPO steps", verbose=verbose, stages=t.stages) as view:
            summary = run_curriculum(cfg)
    console.run_summary(view, summary)


def compare(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML RunConfig (default: the embedded tiny setup)"),
    methods: str = typer.Option("cropi,cropi-paper,full,random,pass_rate,learnability,influence_once,dapo,cropi+dapo",
                                "--methods",
                                help="comma-separated methods to compare"),
    seeds: int = typer.Option(3, "--seeds", help="seeds per method (train.seed/selection.seed + 0..N-1)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="override a field: section.key=value (repeatable)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL (default $CROPI_STORAGE or ./.cropi)"),
    name: Optional[str] = typer.Option(None, "--name", help="base run name (report folder runs/<name>-compare)"),
    workers: int = typer.Option(1, "--workers", "-w", help="runs at a time, each in its own process with "
                                "cores/workers torch threads (the first run goes alone: it computes what all share)"),
    verbose: bool = VERBOSE,
) -> None:
    """CROPI vs baselines from the same bootstrap at an equal budget, several seeds; shows their progress, then
    each method's final accuracy and speed-ups, the cost and the report path (full log: runs/<name>-compare/)."""
    from flows.compare import compare_dir, parse_methods, run_compare
    from flows.compare_report import times, wall

    with user_errors():
        names = parse_methods(methods)
        if seeds < 1:
            raise ConfigError(f"--seeds: must be ≥ 1 (got {seeds})")
        if workers < 1:
            raise ConfigError(f"--workers: must be ≥ 1 (got {workers})")
        cfg = prepare(config, set_, storage, name)
        if len(cfg.name) > 80:  # runs are named <name>-<method>-s<seed> (at most 100 characters)
            raise ConfigError(f"name: at most 80 characters for cropi compare (got {len(cfg.name)})")
        title = (f"cropi compare {cfg.name}: {len(names)} methods × {seeds} seeds, {cfg.train.stages} stages each"
                 + (f", {workers} at a time" if workers > 1 else ""))
        with console.session(compare_dir(cfg) / console.LOG_NAME, title, verbose=verbose, stages=cfg.train.stages,
                             runs=len(names) * seeds) as view:
            out = run_compare(cfg, names, seeds, workers)
    console.compare_summary(view, out, times, wall)

