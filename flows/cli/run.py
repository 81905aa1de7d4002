"""`cropi run` (the curriculum) and `cropi compare` (CROPI vs baselines at an equal budget)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cropi_core.errors import ConfigError
from flows.cli.common import user_errors
from flows.inputs import prepare


def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML RunConfig (default: the embedded tiny setup)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="override a field: section.key=value (repeatable)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL (default $CROPI_STORAGE or ./.cropi)"),
    name: Optional[str] = typer.Option(None, "--name", help="run name (report folder runs/<name>)"),
) -> None:
    """Run the CROPI curriculum (cached: a rerun recomputes nothing) and print where the report is."""
    with user_errors():
        cfg = prepare(config, set_, storage, name)
        from flows.curriculum import run_curriculum

        summary = run_curriculum(cfg)
    from flows.runtime import counts_line

    typer.echo(f"done in {summary['seconds']:.1f}s (flow {summary['flow_seconds']:.1f}s): "
               f"{counts_line(summary['counts'])}")
    typer.echo(f"final checkpoint: {summary['final_checkpoint']}")
    typer.echo(f"report: {summary['report']}")


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
) -> None:
    """CROPI vs baselines from the same bootstrap at an equal budget, several seeds; prints the report path."""
    from flows.compare import parse_methods, run_compare
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
        out = run_compare(cfg, names, seeds, workers)
    res = out["results"]
    typer.echo(f"compared {len(out['records'])} runs in {out['seconds']:.1f}s")
    for m, row in res["methods"].items():
        tgt, unt = row.get("tgt_final", [float("nan")] * 2), row.get("unt_final", [float("nan")] * 2)
        extra = ""
        if "step_speedup" in row:
            extra = f", step speed-up {times(row['step_speedup'])}, wall speed-up {wall(row)}"
        typer.echo(f"  {m}: targeted {tgt[0]:.3f}±{tgt[1]:.3f}, untargeted {unt[0]:.3f}±{unt[1]:.3f}{extra}")
    typer.echo(f"report: {out['report']}")

