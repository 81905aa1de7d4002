"""`compare(config, methods, seeds)`: CROPI against the paper's baselines at an equal budget (PAPER.md §7).

Every (method, seed) run is the `curriculum` flow on a copy of `config` that differs only in

- `name`               → `<name>-<method>-s<seed>` (its own run folder; names are not hashed),
- `selection.method`   → cropi and cropi+dapo = "popi", dapo = "full", the others by their own name; cropi is the
  config's own selection (scoring rule, fusion, re-scoring schedule), cropi-paper the paper's (`paper_selection`),
- `train.dynamic_sampling` → True for dapo (DAPO's dynamic sampling on the full pool) and cropi+dapo (POPI
  selection, dynamic sampling inside each stage's training: the two are complementary), else as configured,
- `train.seed`, `selection.seed` → the configured values + seed (GRPO sampling order/generation, random subsets).

So all runs start from the SAME bootstrap checkpoint with the same offline rollouts, step budget, batch, K and
test sets, and every artifact two runs have in common (bootstrap, offline rollouts, stage-0 gradients and
scores, stage-0 evaluations, a selection shared by full/dapo, ...) has the same storage key and is computed once.
Seed 0 of method "cropi" is exactly `cropi run` on the same config.

Wall-clock costs are compute seconds per artifact, read from its manifest (`meta["compute"]["seconds"]`,
`tasks.reports.seconds_of`): whichever run or process computed an artifact recorded its cost with it, so a
comparison prices everything it reuses — from an earlier `cropi run`, another comparison or a killed run of this
one — exactly as what it computes itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import flow

from cropi_core.config import RunConfig
from cropi_core.errors import ConfigError
from flows.outputs import RunSummary, StageOutputs
from storage import ArtifactRef
from flows.runtime import computed_seconds, for_run
from tasks.common import get_store, local_root, log
from tasks.reports import pricer

METHODS = ("cropi", "cropi-paper", "full", "random", "pass_rate", "learnability", "influence_once", "dapo",
           "cropi+dapo")
SELECTION_METHOD = {"cropi": "popi", "cropi-paper": "popi", "dapo": "full", "cropi+dapo": "popi"}
DYNAMIC_SAMPLING = ("dapo", "cropi+dapo")
# what each method needs before stage 0 besides the bootstrap: offline rollouts of the pool (pass rates, or the
# responses POPI sketches) and of the validation sets (POPI's targets)
NEEDS_OFFLINE = {"cropi": ("pool", "val"), "cropi-paper": ("pool", "val"), "cropi+dapo": ("pool", "val"),
                 "influence_once": ("pool", "val"), "pass_rate": ("pool",), "learnability": ("pool",)}


def paper_selection(cfg: RunConfig) -> None:
    """Set the paper's CROPI selection on `cfg` in place: POPI cosine over the whole pool, re-scored every stage, no
    conflict gate, no fusion with learnability (the sketch itself stays as configured: `influence.projector` etc.)."""
    cfg.selection.method = "popi"
    cfg.selection.fusion = "none"
    cfg.selection.rescore = "every"
    cfg.influence.score = "cosine"
    cfg.influence.candidates = None
    cfg.influence.candidates_by = "random"
    cfg.influence.ess_power = 0.0
    cfg.selection.gate_probe = None


def parse_methods(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """"cropi,full" or a list → validated method names in the given order (ConfigError on unknown/empty)."""
    if spec is None:
        return list(METHODS)
    items = [m.strip() for m in spec.split(",")] if isinstance(spec, str) else [str(m).strip() for m in spec]
    items = [m for m in items if m]
    bad = [m for m in items if m not in METHODS]
    if bad:
        raise ConfigError(f"--methods: unknown method {bad[0]!r} (choose from {','.join(METHODS)})")
    if not items:
        raise ConfigError("--methods: no method given")
    return list(dict.fromkeys(items))


def method_config(cfg: RunConfig, method: str, seed: int) -> RunConfig:
    """The RunConfig of one (method, seed) run (see the module docstring for what changes)."""
    if method not in METHODS:
        raise ConfigError(f"compare: unknown method {method!r} (choose from {','.join(METHODS)})")
    c = cfg.model_copy(deep=True)
    c.name = f"{cfg.name}-{method}-s{seed}"
    c.selection.method = SELECTION_METHOD.get(method, method)
    if method == "cropi-paper":
        paper_selection(c)
    c.selection.seed = cfg.selection.seed + seed
    c.train.seed = cfg.train.seed + seed
    c.train.dynamic_sampling = True if method in DYNAMIC_SAMPLING else cfg.train.dynamic_sampling
    return c


def compare_dir(cfg: RunConfig) -> Path:
    """`<local storage root>/runs/<name>-compare/` (or `./runs/<name>-compare/` for remote roots)."""
    base = local_root(cfg)
    p = (base / "runs" if base is not None else Path("runs")) / f"{cfg.name}-compare"
    p.mkdir(parents=True, exist_ok=True)
    return p.resolve()


# ---------------------------------------------------------------- one run → plain numbers
def selection_cost(s: StageOutputs, kept: bool) -> list[ArtifactRef]:
    """The artifacts that choosing stage s's prompts cost. A stage that kept the previous selection pays only for what
    decided to keep it (the drift check, a gate) and for a re-score that the reliability guard
    (selection.rescore_reliability) then did not train on (its sketches and scores); the kept selection itself was
    paid for by the stage that made it."""
    if not kept:
        return s.scoring
    return [*s.shaping.values(), *s.grads.values(), *([s.scores] if s.scores is not None else [])]


def _sum(xs: list[float | None]) -> float | None:
    return None if any(x is None for x in xs) else float(sum(xs))  # type: ignore[arg-type]


def run_record(cfg: RunConfig, method: str, seed: int, out: RunSummary) -> dict[str, Any]:
    """JSON-able numbers of one curriculum run: accuracy per set and step, per-stage selection/health/costs.

    Costs (seconds): `offline` = offline rollouts the method needs (see NEEDS_OFFLINE); per stage `scoring` =
    calibration and candidates (StageOutputs.shaping) + gradient sketches (chunks + finalize) + POPI scores +
    selection, `train` = the GRPO stage. Evaluation,
    online-rollout diagnostics and health are not part of a method's cost. Every cost is read from the
    artifacts' manifests (`seconds_of`); None = an artifact stored before compute seconds were recorded.
    `computed`: what this run of the curriculum computed itself (the rest it found in storage), `counts` its task
    runs computed / reused / failed, `compute_seconds` what the artifacts it computed cost.
    """
    from tasks.reports import collect
    from tasks.artifacts import metric_label
    from tasks.selection import gate_fires

    d = collect(cfg, out)
    price = pricer(get_store(cfg))
    stages = []
    for s, row in zip(out.stages, d["stages"], strict=True):
        kept = s.stage > 0 and s.selection.key == out.stages[s.stage - 1].selection.key
        scoring = _sum([price(r.key) for r in selection_cost(s, kept)])
        if kept:
            scoring = scoring or 0.0
        stages.append({
            **{k: row[k] for k in ("stage", "selected", "pool", "domains", "offline_pass_rate")},
            "online_pass_rate": float(row["online"].mean()) if len(row["online"]) else None,
            **{k: row[k] for k in ("ess_frac", "kl", "train_reward")},
            "scoring_s": scoring, "train_s": price(s.checkpoint.key),
            "reliability": s.reliability, "kept_unreliable": s.kept_unreliable,
            "checkpoint": s.checkpoint.key, "selection": s.selection.key,
            **({"gate_fired": gate_fires(cfg, s.shaping["gate"])}
               if "gate" in s.shaping and not s.kept_unreliable else {}),
        })
    # greedy pass@1, or mean@n of sampled answers when eval.n_samples > 0 (smoother on small test sets), and the
    # standard error of each evaluation over its test prompts (the same numbers as the run report's)
    acc = {n: [[t, a] for t, a in pts] for n, pts in d["acc"].items()}
    se = {n: [[t, e] for t, e in pts] for n, pts in d["se"].items()}
    need = NEEDS_OFFLINE.get(method, ())
    off_keys = ([out.pool_rollouts.key] if "pool" in need else []) + \
               ([r.key for r in out.val_rollouts.values()] if "val" in need else [])
    return {
        "method": method, "seed": seed, "name": cfg.name, "steps_per_stage": cfg.train.steps_per_stage,
        "metric": metric_label(cfg), "acc": acc, "se": se, "roles": d["roles"],
        "stages": stages, "offline_s": _sum([price(k) for k in off_keys]),
        "bootstrap_s": price(out.base_checkpoint.key),
        "base_checkpoint": out.base_checkpoint.key, "final_checkpoint": out.final_checkpoint.key,
        "report": out.report, "computed": [list(c) for c in out.counts.computed], "counts": out.counts.counts(),
        "compute_seconds": computed_seconds(get_store(cfg), out.counts.computed),
    }


# ---------------------------------------------------------------- the flow
def job_record(config: RunConfig, method: str, seed: int) -> dict[str, Any]:
    """Run one (method, seed) curriculum and return its record (priced from the manifests, in this process or a
    parallel worker alike)."""
    from flows.curriculum import curriculum

    c = method_config(config, method, seed)
    t0 = time.perf_counter()
    out = for_run(curriculum, c)(config=c)
    rec = run_record(c, method, seed, out)
    rec["flow_seconds"] = time.perf_counter() - t0
    return rec


@flow(name="cropi-compare", flow_run_name="compare-{config.name}")
def compare(config: RunConfig, methods: list[str] | None = None, seeds: int = 3, workers: int = 1) -> dict[str, Any]:
    """Run every method × seed (seed-major: a complete seed first) and write the comparison report.

    The first run goes alone, in this process (it computes what every run shares: bootstrap, offline rollouts,
    step-0 evaluations, stage-0 sketches), then the others run `workers` at a time, each in its own process
    (`flows/compare_worker.py`) with cores // workers torch threads, reporting to this flow's Prefect server.
    Records, report and artifacts are the same whatever `workers` is. Each later run has a process of its own
    even with one worker: run after run in one process, a real model's memory grew by ≈ 5 GB per run
    (SmolLM2-135M: 7 → 12 GB after one run), which a process's exit gives back.

    Returns {"records": [run_record, ...], "report": path of compare.md, "results": headline numbers}.
    """
    from flows.compare_report import write_report

    if seeds < 1:
        raise ConfigError(f"--seeds: must be ≥ 1 (got {seeds})")
    if workers < 1:
        raise ConfigError(f"--workers: must be ≥ 1 (got {workers})")
    names = parse_methods(methods)
    folder = compare_dir(config)
    jobs = [(m, seed) for seed in range(seeds) for m in names]
    records: list[dict[str, Any]] = []

    def keep(rec: dict[str, Any]) -> None:
        records.append(rec)
        order = {j: i for i, j in enumerate(jobs)}
        records.sort(key=lambda r: order[(r["method"], r["seed"])])
        # partial results survive an interrupted comparison
        (folder / "records.json").write_text(json.dumps(records, indent=1))
        log(f"run {rec['name']} finished ({len(records)} of {len(jobs)})",
            event={"run_done": rec["name"], "done": len(records), "total": len(jobs)})

    keep(job_record(config, *jobs[0]))
    for rec in run_parallel(config, jobs[1:], folder, workers):
        keep(rec)
    report, results = write_report(config, records, folder, names, seeds)
    return {"records": records, "report": str(report), "results": results}


def run_parallel(config: RunConfig, jobs: list[tuple[str, int]], folder: Path, workers: int):
    """Run `jobs` in `workers` processes at a time (`python -m flows.compare_worker`); yield their records as
    they finish. A failed run stops the comparison with a one-line error naming its log."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from cropi_core.errors import CropiError

    (folder / "config.json").write_text(config.model_dump_json())
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    api = prefect_api_url()
    if api:
        env["PREFECT_API_URL"] = api  # the workers' flow runs appear beside this one in the UI

    def one(method: str, seed: int) -> dict[str, Any]:
        name = f"{method}-s{seed}"
        out = folder / "records" / f"{name}.json"
        out.unlink(missing_ok=True)
        with open(logs / f"{name}.log", "w") as log:
            rc = subprocess.run([sys.executable, "-m", "flows.compare_worker", str(folder), method, str(seed)],
                                env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0 or not out.exists():
            tail = (logs / f"{name}.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise CropiError(f"compare: run {config.name}-{name} failed (exit {rc}): {tail[0][:200]} "
                             f"(log: {logs / f'{name}.log'})")
        return json.loads(out.read_text())

    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(one, m, seed) for m, seed in jobs]
        for f in as_completed(futures):
            yield f.result()


def prefect_api_url() -> str | None:
    """The API this process reports to: PREFECT_API_URL, or the temporary server Prefect started for it."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return server.api_url if server.running else None


def run_compare(cfg: RunConfig, methods: list[str] | None = None, seeds: int = 3, workers: int = 1) -> dict[str, Any]:
    """`compare` as the CLI runs it; adds wall seconds."""
    t0 = time.perf_counter()
    out = compare(config=cfg, methods=parse_methods(methods), seeds=seeds, workers=workers)
    out["seconds"] = time.perf_counter() - t0
    return out
