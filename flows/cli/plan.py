"""`cropi plan`: what a config will cost before anything runs (cropi_core/plan.py does the arithmetic), and the checks
that need no model run: the model's shape parses, the data files exist and parse into splits, the storage root is
writable, every task's peak memory fits the device. One `error: ...` line per problem on stderr, exit code 2 if any.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from flows.cli.common import EXIT_USER_ERROR, user_errors
from flows.inputs import default_config, parse_sets

REPO = Path(__file__).resolve().parents[2]
RATES = REPO / "benchmarks" / "rates.json"
GPU_CHECK = REPO / "benchmarks" / "out" / "gpu_sketch.json"  # what scripts/gpu_check.sh writes: sketch throughput
GPU_RATES = REPO / "benchmarks" / "out" / "gpu_rates.json"  # and benchmarks/gpu_curriculum.py's forward/fwdbwd/generate
DEVICES = ("h100", "h200", "a100", "cpu")


def default_device(cfg) -> tuple[str, str]:  # noqa: ANN001
    """(device key, why) when --gpu is not given: a GPU (h100) when the config asks for one, else the CPU."""
    wants = [why for cond, why in (
        (cfg.rollout.backend == "vllm", "rollout.backend vllm"), (cfg.train.use_vllm, "train.use_vllm"),
        (cfg.runner.gpus_per_task > 0, "runner.gpus_per_task > 0"), (cfg.model.device.startswith("cuda"), "model.device cuda"),
        (cfg.train.mixed_precision == "bf16", "train.mixed_precision bf16")) if cond]
    if wants:
        return "h100", f"--gpu not given: h100, because the config asks for a GPU ({', '.join(wants)})"
    return "cpu", "--gpu not given: cpu, because nothing in the config asks for a GPU"


def host_memory() -> float | None:
    """Physical memory of this machine in bytes (None where sysconf cannot say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def build_data(cfg) -> tuple[Any, list[str], list[str]]:  # noqa: ANN001
    """(splits or None, problems, notes): every missing local data file is one problem; then the splits are built
    (no model loaded), a malformed file being one problem; what the loaders log (rows skipped) becomes notes."""
    from cropi_core.data import build_splits
    from cropi_core.errors import CropiError

    problems = [f"data.{group}[{i}].path: file not found: {spec.path}"
                for group in ("pool", "targeted", "untargeted") for i, spec in enumerate(getattr(cfg.data, group))
                if "://" not in spec.path and not Path(spec.path).expanduser().exists()]
    if problems:
        return None, problems, []
    log = logging.getLogger("cropi_core.data")
    handler, propagate = _Collect(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        return build_splits(cfg.data), [], handler.lines
    except CropiError as err:
        return None, [" ".join(str(err).split())], handler.lines
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def plan(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML RunConfig (default: the embedded tiny setup)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="override a field: section.key=value (repeatable)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL to check (default $CROPI_STORAGE or ./.cropi)"),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="device kind: h100, h200, a100 or cpu (default: h100 when the "
                                                          "config asks for a GPU, else cpu)"),
    gpus: int = typer.Option(1, "--gpus", help="devices of that kind (the runner decides how many it uses at once)"),
    response_fill: Optional[float] = typer.Option(None, "--response-fill", help="mean response length as a share of "
                                                  "max_new_tokens (default: rates.json's, 0.25)"),
    rates: Optional[Path] = typer.Option(None, "--rates", help=f"device rates JSON (default {RATES.relative_to(REPO)})"),
    measured: Optional[list[Path]] = typer.Option(None, "--measured", help="a scripts/gpu_check.sh result to apply "
                                                  "(benchmarks/gpu_curriculum.py's or gpu_sketch.py's JSON; repeatable; "
                                                  f"default: {GPU_RATES.relative_to(REPO)} and "
                                                  f"{GPU_CHECK.relative_to(REPO)} where they exist)"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
) -> None:
    """Predict a run's cost before anything runs: per task kind (base, rollouts, calibration, grads, scores, train,
    evaluation, health) the FLOPs, device-seconds, wall-seconds on --gpus devices, peak memory and storage bytes,
    and the totals for this config and for full data to the same number of GRPO steps. Says which rates are
    measured and which assumed. Checks the model's shape, the data files, the storage root and memory; one line
    per problem, exit code 2 if any."""
    from cropi_core.config import load_config
    from cropi_core.errors import ConfigError, CropiError
    from cropi_core.plan import apply_measurements, data_sizes, estimate, load_rates, model_shape

    with user_errors():
        cfg = load_config(default_config(config), parse_sets(set_, storage), check_files=False)
        if gpu is not None and gpu not in DEVICES:
            raise ConfigError(f"--gpu: one of {', '.join(DEVICES)} (got {gpu!r})")
        if gpus < 1:
            raise ConfigError(f"--gpus: must be ≥ 1 (got {gpus})")
        if response_fill is not None and not 0 < response_fill <= 1:
            raise ConfigError(f"--response-fill: must be in (0, 1] (got {response_fill})")
        rates_path = rates or RATES
        try:
            rate_data = json.loads(Path(rates_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"{rates_path}: cannot read the rates file ({type(err).__name__})") from None
        table = load_rates(rate_data, str(rates_path))
    device, why_device = (gpu, f"--gpu {gpu}") if gpu else default_device(cfg)
    notes = [why_device]
    found = []
    for path in measured or [p for p in (GPU_RATES, GPU_CHECK) if p.is_file()]:
        name = str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)
        try:
            found.append((name, json.loads(Path(path).read_text(encoding="utf-8"))))
        except (OSError, ValueError) as err:
            if measured:  # named on the command line: a problem; a stale default file is only a note
                with user_errors():
                    raise ConfigError(f"--measured {path}: cannot read it ({type(err).__name__})") from None
            notes.append(f"{name} is not a gpu_check.sh result: ignored")
    table, measured_notes = apply_measurements(table, device, found)
    notes += measured_notes

    problems: list[str] = []
    shape, p = model_shape(cfg)
    problems += p
    if shape is not None and p:
        notes.append(f"model shape from {shape.source} (the model itself was not found)")
    splits, p, logged = build_data(cfg)
    problems += p
    try:
        from flows.inputs import probe_storage

        probe_storage(cfg.storage.root)
    except CropiError as err:
        problems.append(" ".join(str(err).split()))

    result = None
    if shape is not None and splits is not None:
        data = data_sizes(splits, cfg, logged)
        mem = host_memory()
        with user_errors():
            result = estimate(cfg, shape, data, table, device, gpus, response_fill,
                              host_memory=mem if device == "cpu" else None)
        result.notes[:0] = notes
        problems += result.problems
    if as_json:
        out = result.to_json() if result is not None else {"config": cfg.name, "device": device}
        out["problems"] = problems
        typer.echo(json.dumps(out, indent=2, default=str))
    elif result is not None:
        render(result)
    for line in problems:
        typer.echo(f"error: {line}", err=True)
    if problems:
        raise typer.Exit(EXIT_USER_ERROR)


# ---------------------------------------------------------------------------------------------- rendering
COLUMNS = ("kind", "runs", "FLOPs", "device-s", "wall", "peak memory", "storage", "rates", "what")


def rows_of(p) -> list[list[str]]:  # noqa: ANN001
    from cropi_core.plan import fmt_bytes, fmt_flops, fmt_seconds

    out = []
    for t in p.tasks:
        mem = fmt_bytes(t.memory.total) + (" (host)" if t.on_host else "")
        store = fmt_bytes(t.storage_bytes) + (f" +{fmt_bytes(t.scratch_bytes)} scratch" if t.scratch_bytes else "")
        tag = " [report]" if t.report_only else ""
        out.append([t.kind, str(t.runs), fmt_flops(t.flops), fmt_seconds(t.device_s), fmt_seconds(t.wall_s), mem,
                    store, t.rate, t.label + tag])
    return out


def text_lines(p) -> list[str]:  # noqa: ANN001
    """The plan as plain text lines (what a pipe or a test sees; the terminal gets the same in rich tables)."""
    from cropi_core.plan import fmt_bytes, fmt_count, fmt_flops, fmt_seconds

    s, d = p.shape, p.data
    lines = [f"cropi plan: {p.config} on {p.gpus} × {p.device_name} ({p.device}); {p.slots} model task(s) at once",
             f"model: {fmt_count(s.params)} parameters ({s.params:,}; N for FLOPs {s.matmul_params:,}), {s.layers} layers, "
             f"hidden {s.hidden}, {s.heads}/{s.kv_heads} heads, MLP {s.intermediate}, vocabulary {s.vocab:,}"
             f"{', tied head' if s.tied else ''}; shape from {s.source}",
             f"data: pool {d.pool.prompts:,} prompts (~{d.pool.prompt_tokens:.0f} tokens each, template included); "
             + "validation " + ", ".join(f"{v.name.removeprefix('val/')} {v.prompts}" for v in d.val)
             + f"; {len(d.tests)} test sets, {sum(t.prompts for t in d.tests):,} prompts",
             "responses (tokens): " + ", ".join(f"{k} mean {p.lengths[k + '_mean_response']:.0f} / padded "
                                                f"{p.lengths[k + '_padded_response']:.0f}" for k in ("rollout", "train", "eval")),
             f"scoring: {p.schedule} — the pool is sketched in "
             + (f"{p.scored_stages[1]}" if p.scored_stages[0] == p.scored_stages[1] else
                f"{p.scored_stages[0]} to {p.scored_stages[1]}") + " stage(s)", ""]
    rows = [list(COLUMNS)] + rows_of(p)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    st = p.step
    lines += ["", f"one GRPO step (identical for CROPI and full data): {st.sequences} sequences, "
                  f"{fmt_count(st.padded_tokens)} tokens per step (padded; {fmt_count(st.real_tokens)} real): "
              + "; ".join(f"{k} {fmt_flops(st.flops[k])} FLOPs, {fmt_seconds(st.seconds[k])}" for k in st.flops if st.flops[k])
              + f" — {fmt_flops(st.total_flops)} FLOPs, {fmt_seconds(st.total_s)} per step", ""]
    head = ["totals", "steps", "FLOPs", "device-hours", f"wall on {p.gpus}", "storage"]
    trows = [head] + [[t.label, str(t.steps), fmt_flops(t.flops), f"{t.device_s / 3600:.3g}", fmt_seconds(t.wall_s),
                       fmt_bytes(t.storage_bytes)] for t in p.totals]
    full = p.totals[-1]
    for t in p.totals[:-1]:
        trows.append([f"  {t.label} − full data", "", fmt_flops(t.flops - full.flops),
                      f"{(t.device_s - full.device_s) / 3600:.3g}", fmt_seconds(t.wall_s - full.wall_s),
                      fmt_bytes(t.storage_bytes - full.storage_bytes)])
    tw = [max(len(r[i]) for r in trows) for i in range(len(head))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, tw)).rstrip() for r in trows]
    lines += ["", "peak memory of one task, by part:"] + [
        f"  {t.kind}{' (online)' if t.report_only and t.kind == 'rollouts' else ''}: "
        + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in t.memory.parts.items() if v) for t in p.tasks]
    lines += ["", "rates used (measured = timed by the named command; extrapolated = a measured rate applied to "
                  "another model, shape or device; assumed = not measured, why given):"]
    for what, r in p.rates:
        lines.append(f"  {r.status:<12} {what}: {r.value:.4g} — {r.source}")
    notes = list(p.notes) + [f"{t.kind}: {n}" for t in p.tasks for n in t.notes]
    if notes:
        lines += ["", "notes:"] + [f"  - {n}" for n in notes]
    return lines


def render(p) -> None:  # noqa: ANN001
    """Plain text when stdout is not a terminal; rich tables when it is."""
    if not sys.stdout.isatty():
        typer.echo("\n".join(text_lines(p)))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    lines = text_lines(p)
    split = lines.index("")
    for line in lines[:split]:
        con.print(line, markup=False, highlight=False)
    table = Table(*COLUMNS, show_lines=False)
    for r in rows_of(p):
        table.add_row(*r)
    con.print(table)
    for line in lines[split + 2 + len(p.tasks):]:
        con.print(line, markup=False, highlight=False)
