"""Put CROPI ablations next to a finished comparison: one report, the same target A* and definitions.

An ablation is a `cropi compare --methods cropi --name <name> --set <knob>=<value>` run (e.g. a selection ratio or
stage length). Its `cropi` runs are relabelled `cropi[<label>]` and merged with every run of the base comparison,
then `flows.compare_report.write_report` writes compare.md + PNGs + results.json into OUT. Speed-ups are measured
against the base comparison's full-data runs (A* = their final targeted accuracy), so the ablation does not rerun
them. The artifacts the ablation shares with the base (offline rollouts, stage-0 sketches) are priced in its
wall-clock cost from their manifests (compute seconds recorded by whichever run computed them).

    python -m benchmarks.compare_ablations OUT BASE_FOLDER ratio0.25=ABLATION_FOLDER [label=FOLDER ...] \
        [--config configs/tiny.yaml]
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cropi_core.config import load_config
from flows.compare_report import write_report


def load_records(folder: Path) -> list[dict]:
    p = folder / "records.json"
    if not p.exists():
        raise typer.BadParameter(f"{p}: no records.json (run `cropi compare` into this folder first)")
    return json.loads(p.read_text())


def merge(base: list[dict], ablations: dict[str, list[dict]]) -> tuple[list[dict], list[str]]:
    """Base records + each ablation's `cropi` records relabelled `cropi[label]`; methods in report order."""
    records = list(base)
    methods = list(dict.fromkeys(r["method"] for r in base))
    metric = base[0].get("metric")
    for label, recs in ablations.items():
        mine = [dict(r, method=f"cropi[{label}]") for r in recs if r["method"] == "cropi"]
        if not mine:
            raise typer.BadParameter(f"ablation {label!r}: no cropi runs in its records.json")
        if mine[0].get("metric") != metric:
            raise typer.BadParameter(f"ablation {label!r}: metric {mine[0].get('metric')!r} differs from the base's {metric!r}")
        records += mine
        methods.append(f"cropi[{label}]")
    return records, methods


def main(out: Path, base: Path, ablation: list[str], config: Path | None = None) -> None:
    cfg = load_config(config)
    abl = {}
    for spec in ablation:
        label, sep, folder = spec.partition("=")
        if not sep:
            raise typer.BadParameter(f"ablation {spec!r}: expected label=FOLDER")
        abl[label] = load_records(Path(folder))
    records, methods = merge(load_records(base), abl)
    out.mkdir(parents=True, exist_ok=True)
    seeds = max(r["seed"] for r in records) + 1
    report, _ = write_report(cfg, records, out, methods, seeds)
    print(report)


if __name__ == "__main__":
    typer.run(main)
