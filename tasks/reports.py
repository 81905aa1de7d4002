"""Per-stage and per-run reports: matplotlib PNGs + markdown in the run folder, and the same as Prefect
artifacts (keyed tables, markdown, images as data URLs). `stage_report` and `final_report` are the Prefect tasks
the curriculum flows call; `flows.compare_report` draws and publishes with the same helpers.

Plots: accuracy vs training step (targeted / untargeted), selected-set composition by domain, POPI score
histogram, stage-to-stage selection overlap, offline vs online pass rate of the selected prompts (paper's
Figure 6), off-policy health (ESS, KL), and the lineage graph of the final checkpoint.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from cropi_core.config import RunConfig
from storage import ArtifactRef, StorageError, Store, lineage, render_lineage_png, render_lineage_text
from tasks.artifacts import accuracy_and_se, meta_of, metric_label, pass_rates, read_scores, read_selection
from tasks.common import get_store, run_dir


class StageRecord(Protocol):
    """What a report reads of one stage's outputs (`flows.outputs.StageOutputs`)."""

    stage: int
    selection: ArtifactRef
    checkpoint: ArtifactRef
    online: ArtifactRef
    health: ArtifactRef
    evals: dict[str, ArtifactRef]
    scores: ArtifactRef | None
    reliability: float | None  # split-half reliability of the stage's influence ranking (scored stages)
    kept_unreliable: bool  # the stage kept the previous selection: its re-score was below rescore_reliability

    @property
    def scoring(self) -> list[ArtifactRef]: ...


class RunRecord(Protocol):
    """What a report reads of a curriculum run's outputs (`flows.outputs.RunSummary`, a dataclass)."""

    final_checkpoint: ArtifactRef
    pool_rollouts: ArtifactRef
    val_rollouts: dict[str, ArtifactRef]
    tests: dict[str, ArtifactRef]
    evals0: dict[str, ArtifactRef]
    stages: list[StageRecord]


def slug(cfg: RunConfig) -> str:
    """Prefect artifact key prefix (lowercase letters, digits, dashes)."""
    return "cropi-" + (re.sub(r"[^a-z0-9-]+", "-", cfg.name.lower()).strip("-") or "run")


def data_url(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode()


def publish(kind: str, key: str, description: str, **content: Any) -> None:
    """`prefect.artifacts.create_<kind>_artifact` (table, markdown, image, ...) with `content`; nothing outside a
    flow run (e.g. a report rebuilt from a script)."""
    try:
        from prefect import artifacts

        getattr(artifacts, f"create_{kind}_artifact")(key=key, description=description, **content)
    except Exception:  # noqa: BLE001 - outside a flow run
        pass


def publish_report(key: str, images: str, md: str, paths: dict[str, Path], description: str,
                   titles: dict[str, str]) -> None:
    """Each PNG as image artifact `<images>-<name>` (described by `titles[name]`), then the markdown as
    `<key>-report` with its PNGs inlined as data URLs (the Prefect UI cannot read local files)."""
    for name, p in paths.items():
        url = data_url(p)
        publish("image", f"{images}-{name.replace('_', '-')}", titles[name], image_url=url)
        md = md.replace(f"]({Path(p).name})", f"]({url})")
    publish("markdown", f"{key}-report", description, markdown=md)


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def md_table(rows: list[dict]) -> str:
    """A markdown table of `rows` (columns: the first row's keys; numbers as `_fmt` writes them)."""
    if not rows:
        return "_(none)_\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- per stage
def stage_rows(cfg: RunConfig, out: StageRecord) -> dict[str, Any]:
    """Numbers of one stage, read back from the artifacts' manifests."""
    sel = read_selection(cfg, out.selection)
    sm, online, health, ck = (meta_of(cfg, r) for r in (out.selection, out.online, out.health, out.checkpoint))
    return {
        "stage": out.stage, "method": sel["method"], "selected": len(sel["indices"]), "pool": sm.get("pool"),
        "domains": sm.get("domains", {}), "offline_pass_rate": float(np.mean(sel["offline_pass_rate"])) if sel["indices"] else None,
        "online_pass_rate": online.get("mean_pass_rate"), "ess_frac": health.get("ess_frac"), "kl": health.get("kl"),
        "train_reward": ck.get("reward_mean"), "checkpoint": out.checkpoint.key,
        "accuracy": {n: accuracy_and_se(cfg, r) for n, r in out.evals.items()},
    }


def _reliability_line(out: StageRecord) -> str:
    """The influence ranking's split-half reliability (scored stages only), and whether it was trained on."""
    rel = getattr(out, "reliability", None)
    if rel is None:
        return ""
    kept = " Below selection.rescore_reliability: this stage kept the previous selection." if getattr(
        out, "kept_unreliable", False) else ""
    return f"Split-half reliability of the influence ranking: {_fmt(rel)}.{kept}\n\n"


@task(name="report-stage", task_run_name="report-s{out.stage}", cache_policy=NO_CACHE)
def stage_report(cfg: RunConfig, out: StageRecord) -> str:
    """Markdown + keyed table for one stage; file `<run folder>/stage_<m>.md`. Returns the file path."""
    r = stage_rows(cfg, out)
    m = r["stage"]
    table = [{"field": k, "value": json.dumps(v) if isinstance(v, dict) else _fmt(v)} for k, v in r.items()]
    md = (f"# {cfg.name}: stage {m}\n\nSelection `{r['method']}`: {r['selected']} of {r['pool']} pool prompts.\n\n"
          f"Composition by domain: {json.dumps(r['domains'])}\n\n"
          f"Pass rate of the selected prompts: offline (β) {_fmt(r['offline_pass_rate'])}, online (θ_{m}) "
          f"{_fmt(r['online_pass_rate'])}. Off-policy health: ESS/K {_fmt(r['ess_frac'])}, KL {_fmt(r['kl'])}.\n\n"
          + _reliability_line(out) +
          f"Accuracy ({metric_label(cfg)}, ± standard error over test prompts) after this stage:\n\n"
          + md_table([{"set": n, "accuracy": pm_se(*a)} for n, a in r["accuracy"].items()])
          + f"\nCheckpoint: `{r['checkpoint']}`\n")
    path = run_dir(cfg) / f"stage_{m}.md"
    path.write_text(md)
    publish("table", f"{slug(cfg)}-stage-{m}", f"{cfg.name} stage {m}", table=table)
    publish("markdown", f"{slug(cfg)}-stage-{m}-report", f"{cfg.name} stage {m} report", markdown=md)
    return str(path)


# ---------------------------------------------------------------- costs
def seconds_of(store: Store, key: str) -> float | None:
    """Compute seconds of artifact `key` from its manifest (`meta["compute"]["seconds"]`, written by whichever run
    computed it; a gradient array's sums its chunks), or None for an artifact stored before they were recorded
    (or not in this store)."""
    try:
        c = store.manifest(key).meta.get("compute") or {}
    except StorageError:
        return None
    s = c.get("seconds") if isinstance(c, dict) else None
    return float(s) if s is not None else None


def pricer(store: Store):
    """`seconds_of` bound to `store`, memoised per key (a report or comparison reads each manifest once)."""
    memo: dict[str, float | None] = {}

    def price(key: str) -> float | None:
        if key not in memo:
            memo[key] = seconds_of(store, key)
        return memo[key]

    return price


def cost_rows(summary: RunRecord, price) -> list[dict]:
    """Seconds per stage: offline rollouts (one-time, then amortised over the stages), scoring (calibration,
    candidates, sketches, scores, selection), GRPO training and evaluation, each priced from its artifacts'
    manifests (`price(key)`: `seconds_of`), whoever computed them. "–": an artifact with no recorded seconds."""
    def secs(keys: list[str]) -> float | None:
        vals = [price(k) for k in keys]
        return None if any(v is None for v in vals) else float(sum(vals))  # type: ignore[arg-type]

    fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    offline = secs([summary.pool_rollouts.key] + [r.key for r in summary.val_rollouts.values()])
    n = max(1, len(summary.stages))
    rows = [{"stage": "offline rollouts (one-time)", "offline (amortised)": fmt(offline), "scoring": "", "training": "",
             "evaluation": fmt(secs([r.key for r in summary.evals0.values()])) + " (step 0)"}]
    for s in summary.stages:
        rows.append({"stage": str(s.stage), "offline (amortised)": fmt(None if offline is None else offline / n),
                     "scoring": fmt(secs([r.key for r in s.scoring])), "training": fmt(secs([s.checkpoint.key])),
                     "evaluation": fmt(secs([r.key for ev in [s.evals, *getattr(s, "step_evals", {}).values()]
                                             for r in ev.values()]))})
    return rows


# ---------------------------------------------------------------- per run
def accuracies(cfg: RunConfig, summary: RunRecord) -> dict[str, Any]:
    """Accuracy and its SE per test set and evaluation step, and each set's role: {"acc", "se", "roles"}."""
    E = cfg.train.steps_per_stage
    roles = {n: meta_of(cfg, d).get("role", "test") for n, d in summary.tests.items()}
    acc: dict[str, list[tuple[int, float]]] = {}
    se: dict[str, list[tuple[int, float | None]]] = {}
    points = [(0, summary.evals0)]
    for s in summary.stages:  # mid-stage evaluations (eval.every_steps), then the stage's end
        points += [(s.stage * E + k, ev) for k, ev in sorted(getattr(s, "step_evals", {}).items())]
        points.append(((s.stage + 1) * E, s.evals))
    for step, evals in points:
        for n, r in evals.items():
            a, e = accuracy_and_se(cfg, r)
            acc.setdefault(n, []).append((step, a))
            se.setdefault(n, []).append((step, e))
    return {"acc": acc, "se": se, "roles": roles}


def collect(cfg: RunConfig, summary: RunRecord) -> dict[str, Any]:
    """Everything the final report plots, as plain numbers."""
    store = get_store(cfg)
    stages = []
    for s in summary.stages:
        sel = read_selection(cfg, s.selection)
        scored = s.scores if s.scores is not None else s.shaping.get("probe_scores")  # a quiet gate: its probe
        scores = read_scores(cfg, scored)[1] if scored is not None else None
        online = pass_rates(store, s.online.key)
        stages.append({**stage_rows(cfg, s), "ids": sel["ids"], "offline": np.asarray(sel["offline_pass_rate"]),
                       "online": online, "scores": scores, "probe_only": s.scores is None and scored is not None})
    return {**accuracies(cfg, summary), "stages": stages}


def group_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Per step: the mean accuracy of the targeted and of the untargeted test sets with its standard error
    (`cropi_core.evaluation.mean_and_se`), and the change since step 0 in units of that SE."""
    from cropi_core.evaluation import mean_and_se

    rows = []
    for group, label in (("test_targeted", "targeted"), ("test_untargeted", "untargeted")):
        names = [n for n, r in d["roles"].items() if r == group and n in d["acc"]]
        if not names:
            continue
        first = None
        for i, (step, _) in enumerate(d["acc"][names[0]]):
            vals = [d["acc"][n][i][1] for n in names]
            if any(v is None for v in vals):
                continue
            m, e = mean_and_se(vals, [d["se"][n][i][1] for n in names])
            first = (m, e) if first is None else first
            rows.append({"group": label, "step": step, "accuracy": m, "se": e, "change": m - first[0]})
    return rows


def pm_se(a: float | None, se: float | None) -> str:
    """"0.612 ± 0.014" (accuracy ± its standard error), "0.612" without an SE."""
    if a is None:
        return "–"
    return f"{a:.3f}" if se is None or not np.isfinite(se) else f"{a:.3f} ± {se:.3f}"


def plotter(folder: Path):
    """(matplotlib.pyplot on the Agg backend, the PNGs written so far by name, `save(fig, name)` writing
    `<folder>/<name>.png`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        p = folder / f"{name}.png"
        fig.tight_layout()
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths[name] = p

    return plt, paths, save


def _plots(cfg: RunConfig, d: dict[str, Any], folder: Path) -> dict[str, Path]:
    plt, paths, save = plotter(folder)
    # accuracy vs step, per set and the mean of each group
    fig, ax = plt.subplots(figsize=(6, 4))
    for group, style in (("test_targeted", "-"), ("test_untargeted", "--")):
        names = [n for n, r in d["roles"].items() if r == group]
        for n in names:
            pts = [(s, a) for s, a in d["acc"].get(n, []) if a is not None]
            ax.plot([s for s, _ in pts], [a for _, a in pts], style, alpha=0.4, label=n)
        label = "targeted" if group == "test_targeted" else "untargeted"
        g = [r for r in group_rows(d) if r["group"] == label]
        if g:
            ax.errorbar([r["step"] for r in g], [r["accuracy"] for r in g],
                        yerr=[1.96 * r["se"] if r["se"] is not None else 0 for r in g], fmt=style, lw=2.5, capsize=3,
                        color="k" if group == "test_targeted" else "0.5", label=f"{label} (mean, 95% CI)")
    ax.set(xlabel="GRPO step", ylabel=f"accuracy ({metric_label(cfg)})", title="Accuracy vs step")
    ax.legend(fontsize=7)
    save(fig, "accuracy")

    st = d["stages"]
    # composition by domain per stage
    fig, ax = plt.subplots(figsize=(6, 4))
    domains = sorted({k for s in st for k in s["domains"]})
    bottom = np.zeros(len(st))
    for dom in domains:
        v = np.array([s["domains"].get(dom, 0) for s in st], dtype=float)
        ax.bar([f"stage {s['stage']}" for s in st], v, bottom=bottom, label=dom)
        bottom += v
    ax.set(ylabel="selected prompts", title="Selected-set composition by domain")
    ax.legend(fontsize=7)
    save(fig, "composition")

    # POPI histogram
    fig, ax = plt.subplots(figsize=(6, 4))
    any_scores = False
    for s in st:
        if s["scores"] is not None:
            v = np.asarray(s["scores"], dtype=float).ravel()
            v = v[np.isfinite(v)]
            if v.size:
                probe = " (gate probe)" if s["probe_only"] else ""
                ax.hist(v, bins=40, alpha=0.5, label=f"stage {s['stage']}{probe}")
                any_scores = True
    ax.set(xlabel="POPI (cosine to validation mean sketch)", ylabel="pool prompts",
           title="POPI score histogram" + ("" if any_scores else " (method does not score)"))
    if any_scores:
        ax.legend(fontsize=7)
    save(fig, "popi_hist")

    # stage-to-stage overlap |S_i ∩ S_j| / |S_j|
    n = len(st)
    ov = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a, b = set(st[i]["ids"]), set(st[j]["ids"])
            ov[i, j] = len(a & b) / max(1, len(b))
    fig, ax = plt.subplots(figsize=(4, 3.5))
    im = ax.imshow(ov, vmin=0, vmax=1, cmap="viridis")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{ov[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    ax.set(xticks=range(n), yticks=range(n), xlabel="stage", ylabel="stage", title="Selection overlap")
    fig.colorbar(im)
    save(fig, "overlap")

    # offline vs online pass rate of the selected prompts (Figure 6)
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(n)
    ax.bar(x - 0.2, [float(np.mean(s["offline"])) if len(s["offline"]) else 0 for s in st], 0.4, label="offline (β)")
    ax.bar(x + 0.2, [float(np.mean(s["online"])) if len(s["online"]) else 0 for s in st], 0.4, label="online (θ_m)")
    ax.set_xticks(x, [f"stage {s['stage']}" for s in st])
    ax.set(ylabel="mean pass rate of selected prompts", title="Offline vs online pass rate (Figure 6)")
    ax.legend()
    save(fig, "offline_online")

    # off-policy health
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [s["ess_frac"] if s["ess_frac"] is not None else np.nan for s in st], "o-", label="ESS / K")
    ax2 = ax.twinx()
    ax2.plot(x, [s["kl"] if s["kl"] is not None else np.nan for s in st], "s--", color="C3", label="KL(π_θ‖β) per token")
    ax.set_xticks(x, [f"stage {s['stage']}" for s in st])
    ax.set(ylabel="ESS / K", title="Off-policy health of the selected prompts")
    ax2.set_ylabel("KL per token")
    fig.legend(loc="lower left", fontsize=7)
    save(fig, "health")
    return paths


def gate_lines(cfg: RunConfig, summary: RunRecord) -> list[str]:
    """One report line per conflict-gate decision (selection.gate_probe)."""
    out = []
    for s in summary.stages:
        if "gate" in s.shaping and getattr(s, "kept_unreliable", False):
            out.append(f"Conflict gate, stage {s.stage}: not decided: the probe's influence ranking had split-half "
                       f"reliability {s.reliability:.3f} < {cfg.selection.rescore_reliability:g} "
                       "(selection.rescore_reliability), so this stage kept the previous selection.\n")
        elif "gate" in s.shaping:
            d = get_store(cfg).read_json(s.shaping["gate"].key, "gate.json")
            out.append(f"Conflict gate, stage {s.stage}: {len(d['conflicting'])} of {d['probed']} probed pool prompts "
                       f"score below {d['threshold']:.3f} (the median − {cfg.selection.gate_score:g} robust SDs), "
                       f"{d['share']:.1%} against {cfg.selection.gate_share:.1%}: " +
                       ("**fired**, so influence ranked the whole pool.\n" if d["fires"] else
                        "**quiet**, so this stage and every later one trained learnability's selection.\n"))
    return out


@task(name="report", cache_policy=NO_CACHE)
def final_report(cfg: RunConfig, summary: RunRecord) -> Path:
    """Write `<run folder>/report.md` with plots and the lineage graph; publish them as Prefect artifacts."""
    folder = run_dir(cfg)
    d = collect(cfg, summary)
    # drawn every time from the artifacts (a second copy of "is this done?" beside the store would go stale)
    paths = _plots(cfg, d, folder)
    graph = lineage(get_store(cfg), summary.final_checkpoint.key)
    paths["lineage"] = render_lineage_png(graph, folder / "lineage.png")
    lineage_txt = render_lineage_text(graph)
    (folder / "lineage.txt").write_text(lineage_txt + "\n")

    acc_rows = []
    for n, pts in d["acc"].items():
        for (step, a), (_, e) in zip(pts, d["se"][n]):
            acc_rows.append({"set": n, "group": d["roles"].get(n, ""), "step": step, "accuracy": a, "se": e})
    grp = group_rows(d)
    grp_tab = [{"group": r["group"], "step": r["step"], "accuracy ± SE": pm_se(r["accuracy"], r["se"]),
                "change vs step 0": f"{r['change']:+.3f}" + (f" ({r['change'] / r['se']:+.1f} SE)"
                                                              if r["se"] else "")} for r in grp]
    stage_tab = [{"stage": s["stage"], "method": s["method"], "selected": s["selected"],
                  "offline_pass_rate": s["offline_pass_rate"], "online_pass_rate": s["online_pass_rate"],
                  "ess_frac": s["ess_frac"], "kl": s["kl"], "checkpoint": s["checkpoint"][:12]} for s in d["stages"]]
    titles = {"accuracy": "Accuracy vs step", "composition": "Selected-set composition", "popi_hist": "POPI histogram",
              "overlap": "Stage-to-stage overlap", "offline_online": "Offline vs online pass rate (Figure 6)",
              "health": "Off-policy health", "lineage": "Lineage of the final checkpoint"}
    md = [f"# CROPI run `{cfg.name}`\n", f"Final checkpoint: `{summary.final_checkpoint.key}`\n",
          f"Selection: `{cfg.selection.method}`, ratio {cfg.selection.ratio}, {cfg.train.stages} stages × "
          f"{cfg.train.steps_per_stage} GRPO steps.\n", *gate_lines(cfg, summary),
          f"## Accuracy: targeted and untargeted means\n\nMetric: {metric_label(cfg)}; ± is the standard error of one "
          "evaluation over its test prompts (for a mean of sets: sqrt(Σ SE²)/J); 95% CI ≈ ± 1.96 SE.\n",
          md_table(grp_tab), "## Stages\n", md_table(stage_tab), "## Accuracy per test set\n",
          md_table([{"set": r["set"], "group": r["group"], "step": r["step"],
                      "accuracy ± SE": pm_se(r["accuracy"], r["se"])} for r in acc_rows]),
          "## Cost (seconds of compute per artifact)\n\nFrom each artifact's manifest (`compute.seconds`), whichever "
          "run computed it; – = stored before compute seconds were recorded.\n",
          md_table(cost_rows(summary, pricer(get_store(cfg))))]
    for name, p in paths.items():
        md.append(f"## {titles[name]}\n\n![{name}]({Path(p).name})\n")
    md.append("## Lineage (from storage manifests)\n\n```\n" + lineage_txt + "\n```\n")
    report = folder / "report.md"
    report.write_text("\n".join(md))

    key = slug(cfg)
    publish("table", f"{key}-accuracy", f"{cfg.name}: accuracy vs step", table=acc_rows)
    publish("table", f"{key}-accuracy-groups", f"{cfg.name}: targeted/untargeted mean accuracy ± SE", table=grp_tab)
    publish("table", f"{key}-stages", f"{cfg.name}: per-stage selection and health", table=stage_tab)
    publish_report(key, f"{key}-plot", "\n".join(md), paths, f"{cfg.name}: CROPI report",
                   {n: f"{cfg.name}: {t}" for n, t in titles.items()})
    publish("markdown", f"{key}-lineage", f"{cfg.name}: artifact lineage", markdown="```\n" + lineage_txt + "\n```\n")
    return report
