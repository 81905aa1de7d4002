"""The comparison report: accuracy vs step per method (mean ± spread over seeds), CROPI's speed-up over full data
in steps and in wall-clock (scoring included), a Table-1-style table, selected-set composition per stage and
Figure-6-style offline vs online pass rates. Written as PNG + markdown + results.json in the compare folder and
published as Prefect artifacts.

Definitions (all on the seed-MEAN curves):

- targeted accuracy of a run at step t = mean over the targeted test sets of the accuracy metric (greedy pass@1,
  or mean@n of sampled answers when eval.n_samples > 0); untargeted likewise.
  Evaluations exist at stage boundaries t_i = i·E (i = 0..S), and with eval.every_steps = e also every e steps
  inside each stage (the curves below then have those points too; a method's seeds are cut to the steps all of
  them were evaluated at).
- target A* = full data's final (t = S·E) mean targeted accuracy.
- steps to target t*(method): the first crossing of A* by the piecewise-LINEAR interpolation of the method's mean
  targeted curve between consecutive evaluations: the first i with a(t_i) ≥ A*; t* = 0 if i = 0, else
  t* = t_{i-1} + (A* − a(t_{i-1})) / (a(t_i) − a(t_{i-1})) · (t_i − t_{i-1}). Never reached → no speed-up ("not
  reached"). On a concave curve a coarser grid reads the crossing later; with mid-stage evaluations the report
  also gives the speed-up read from the stage-end points alone, comparable with runs that have no others.
- step speed-up = (S·E) / t*  (the paper's 2.66×: full data's steps over the method's steps to the same accuracy).
- cost c(t) in seconds: offline rollouts the method needs + for each stage begun, its scoring (calibration and
  candidates where configured, sketches, scores, selection; paid at the stage start) + the stage's training time pro rata to the steps done in it. Bootstrap
  (common to all methods), evaluation and diagnostics are excluded.
- wall-clock speed-up = c_full(S·E) / c_method(t*); also reported without the offline rollouts (c with
  offline = 0): they are computed once per (behavior model, pool, sampling config) and shared by every later run
  on the same pool, so for a user who reruns on a pool this is the price that recurs.
- if A* is not above full data's own step-0 accuracy, both speed-ups are undefined (reported as such, not ∞).
The spread is the sample standard deviation over seeds (0 with one seed); plots shade min..max over seeds.
- SE: the standard error of ONE evaluation over its test prompts (mean@n scores per prompt; for a mean of sets
  sqrt(Σ SE²)/J), averaged over seeds: how far a single run's number can move by the choice of test prompts and
  sampling alone. Differences between methods smaller than about 2 SE (and the seed spread) are noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cropi_core.config import RunConfig


# ---------------------------------------------------------------- numbers
def group_curve(rec: dict[str, Any], group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps [S+1], mean accuracy over the run's sets of role `group` [S+1], the standard error of that mean
    [S+1]: sqrt(Σ SE_j²)/J over the group's sets, NaN where a set's SE is unknown, e.g. records written before SEs
    were recorded)."""
    names = [n for n, r in rec["roles"].items() if r == group]
    if not names:
        return np.zeros(0), np.zeros(0), np.zeros(0)

    def matrix(field: str) -> np.ndarray:
        return np.array([[np.nan if v is None else v for _, v in rec[field][n]] for n in names], dtype=float)

    steps = np.array([t for t, _ in rec["acc"][names[0]]], dtype=float)
    se = np.sqrt((matrix("se") ** 2).sum(axis=0)) / len(names) if "se" in rec else np.full(len(steps), np.nan)
    return steps, matrix("acc").mean(axis=0), se


def steps_to_reach(steps: np.ndarray, acc: np.ndarray, target: float) -> float | None:
    """First crossing of `target` by the linear interpolation of (steps, acc); None if never reached."""
    for i in range(len(acc)):
        if acc[i] >= target - 1e-12:
            if i == 0:
                return 0.0
            a0, a1 = acc[i - 1], acc[i]
            return float(steps[i - 1] + (target - a0) / (a1 - a0) * (steps[i] - steps[i - 1]))
    return None


def cost_at(rec: dict[str, Any], t: float, offline: bool = True) -> float | None:
    """Seconds spent by a run to reach step t (see the module docstring); None if any part was not timed.
    offline=False leaves out the one-time offline rollouts."""
    E = rec["steps_per_stage"]
    c = rec["offline_s"] if offline else 0.0
    if c is None:
        return None
    for s in rec["stages"]:
        lo = s["stage"] * E
        if t <= lo:  # stage not begun
            break
        if s["scoring_s"] is None or s["train_s"] is None:
            return None
        c += s["scoring_s"] + s["train_s"] * min(1.0, (t - lo) / E)
    return float(c)


def speedup(total_steps: float, t_star: float | None) -> float | None:
    """(S·E) / t*: ∞ when the target holds from step 0, None when never reached."""
    return None if t_star is None else (float("inf") if t_star == 0 else total_steps / t_star)


def common_steps(curves: list[tuple[np.ndarray, ...]]) -> list[tuple[np.ndarray, ...]]:
    """The (steps, values...) curves of one method's seeds cut to the steps all of them were evaluated at (runs
    reused from before eval.every_steps was set have the stage ends only)."""
    if not curves:
        return curves
    keep = set(curves[0][0].tolist()).intersection(*(set(c[0].tolist()) for c in curves[1:]))
    return [tuple(a[np.isin(c[0], list(keep))] for a in c) for c in curves]


def _mean_std(x: list[float]) -> tuple[float, float]:
    a = np.asarray([v for v in x if v is not None and np.isfinite(v)], dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


COSTS = (("", True), ("_excl_offline", False))  # key suffix, offline rollouts included


def summarize(records: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Per method: mean/min/max curves, final accuracies (mean, std), steps to target, speed-ups, costs."""
    by = {m: [r for r in records if r["method"] == m] for m in methods}
    by = {m: rs for m, rs in by.items() if rs}
    out: dict[str, Any] = {"methods": {}, "target": None}
    for m, rs in by.items():
        row: dict[str, Any] = {"seeds": [r["seed"] for r in rs]}
        for g, short in (("test_targeted", "tgt"), ("test_untargeted", "unt")):
            curves = common_steps([group_curve(r, g) for r in rs])
            if not curves or curves[0][0].size == 0:
                continue
            steps = curves[0][0]
            mat = np.stack([c[1] for c in curves])
            row["steps"] = steps.tolist()
            row[f"{short}_mean"] = mat.mean(0).tolist()
            row[f"{short}_min"] = mat.min(0).tolist()
            row[f"{short}_max"] = mat.max(0).tolist()
            row[f"{short}_final"] = _mean_std(mat[:, -1].tolist())
            ses = np.stack([c[2] for c in curves])
            row[f"{short}_se"] = [float(np.nanmean(c)) if np.isfinite(c).any() else None for c in ses.T]
        sets = sorted({n for r in rs for n in r["acc"]})
        row["sets_final"] = {n: _mean_std([r["acc"][n][-1][1] for r in rs if n in r["acc"]]) for n in sets}
        row["sets_final_se"] = {n: _nanmean([r["se"][n][-1][1] for r in rs if n in r.get("se", {})]) for n in sets}
        row["total_steps"] = rs[0]["steps_per_stage"] * len(rs[0]["stages"])
        for sfx, offline in COSTS:
            costs = [cost_at(r, row["total_steps"], offline) for r in rs]
            row[f"total_cost{sfx}_s"] = _mean_std(costs) if None not in costs else (float("nan"), float("nan"))
        row["offline_s"] = _mean_std([r["offline_s"] for r in rs])
        row["scoring_s"] = _mean_std([sum(s["scoring_s"] or 0 for s in r["stages"]) + (r["offline_s"] or 0) for r in rs])
        gates = [s["gate_fired"] for r in rs for s in r["stages"] if "gate_fired" in s]
        if gates:  # the conflict gate (selection.gate_probe): how many of its decisions stayed quiet
            row["gate_quiet"] = [sum(not g for g in gates), len(gates)]
        out["methods"][m] = row
    if "full" in out["methods"] and "tgt_mean" in out["methods"]["full"]:
        target = out["methods"]["full"]["tgt_mean"][-1]
        out["target"] = target
        T = out["methods"]["full"]["total_steps"]
        # full data never beat its own starting point: "steps to full data's final accuracy" is 0 for everyone
        # and says nothing, so the speed-ups are reported as undefined (NaN) instead of ∞
        degenerate = target <= out["methods"]["full"]["tgt_mean"][0] + 1e-12
        out["degenerate"] = degenerate
        for m, row in out["methods"].items():
            if "tgt_mean" not in row:
                continue
            t_star = steps_to_reach(np.asarray(row["steps"]), np.asarray(row["tgt_mean"]), target)
            row["steps_to_target"] = t_star
            row["step_speedup"] = speedup(T, t_star)
            ends = np.isclose(np.mod(row["steps"], by[m][0]["steps_per_stage"]), 0)
            if not ends.all():  # a finer grid (eval.every_steps): the same rule on the stage-end points alone
                row["step_speedup_stage_ends"] = speedup(T, steps_to_reach(
                    np.asarray(row["steps"])[ends], np.asarray(row["tgt_mean"])[ends], target))
            # wall-clock at t* on the seed-mean cost curve (costs of each seed at t*, averaged)
            for sfx, offline in COSTS:
                cs = [cost_at(r, t_star, offline) for r in by[m]] if t_star is not None else [None]
                c_star = float(np.mean(cs)) if None not in cs else None
                full_cost = out["methods"]["full"][f"total_cost{sfx}_s"][0]
                row[f"cost_to_target{sfx}_s"] = c_star
                row[f"wall_speedup{sfx}"] = (None if c_star is None or not np.isfinite(full_cost) else
                                             full_cost / c_star if c_star > 0 else float("inf"))
                # reached, but a cost this folder never timed (artifacts computed by another run on the root)
                row[f"wall_unpriced{sfx}"] = t_star is not None and row[f"wall_speedup{sfx}"] is None
            # per-seed step speed-ups against the same target (spread of the headline metric)
            per = [speedup(T, steps_to_reach(st, a, target))
                   for st, a, _ in common_steps([group_curve(r, "test_targeted") for r in by[m]])]
            row["step_speedup_per_seed"] = per
            if degenerate:
                row["step_speedup"] = row["wall_speedup"] = row["wall_speedup_excl_offline"] = float("nan")
                if "step_speedup_stage_ends" in row:
                    row["step_speedup_stage_ends"] = float("nan")
                row["step_speedup_per_seed"] = [float("nan")] * len(per)
    return out


FREE = "learnability"  # the heuristic an influence method must beat: read from the offline rollouts, no gradient pass
NOT_SCORED = ("full", "random", "pass_rate", "learnability", "dapo")


def verdict(summary: dict[str, Any], method: str) -> dict[str, Any] | None:
    """Does `method` earn its scoring on this pool? Its final accuracies against learnability p(1−p) (free) and full
    data, in SEs of one evaluation (the method's own final SE), read as the issue's bars: targeted ≥ learnability
    + 2 SE is "ahead", ≤ − 2 SE "behind", else "level"; untargeted within 1 SE of full data's (or above) is "kept".
    None when learnability, full data or an SE is missing."""
    ms = summary["methods"]
    row, free, full = ms.get(method, {}), ms.get(FREE, {}), ms.get("full", {})
    need = ("tgt_final", "unt_final", "tgt_se", "unt_se")
    if not all(k in r for r in (row, free, full) for k in need):
        return None
    se_t, se_u = row["tgt_se"][-1], row["unt_se"][-1]
    if se_t is None or se_u is None or not (se_t > 0 and se_u > 0):
        return None
    d_t = row["tgt_final"][0] - free["tgt_final"][0]
    d_u = row["unt_final"][0] - full["unt_final"][0]
    out = {"method": method, "targeted_vs_free": d_t, "targeted_vs_free_se": d_t / se_t,
           "untargeted_vs_full": d_u, "untargeted_vs_full_se": d_u / se_u,
           "targeted": "ahead" if d_t >= 2 * se_t else "behind" if d_t <= -2 * se_t else "level",
           "untargeted_kept": d_u >= -se_u,
           "wall_excl_offline": row.get("wall_speedup_excl_offline"),
           "free_wall_excl_offline": free.get("wall_speedup_excl_offline")}
    # the clock as the table writes it ("unpriced" where this folder never timed a cost)
    nums = (f"targeted {d_t:+.3f} ({d_t / se_t:+.1f} SE) vs learnability, untargeted {d_u:+.3f} "
            f"({d_u / se_u:+.1f} SE) vs full data, clock excl. offline {wall(row, '_excl_offline')} vs "
            f"learnability's {wall(free, '_excl_offline')}")
    quiet, decided = row.get("gate_quiet", [0, 0])
    if decided and quiet == decided:
        out["text"] = (f"**{method}'s conflict gate found nothing in this pool that conflicts with the target** (in "
                       f"{decided} of {decided} probes), so it trained learnability's selection and paid only the "
                       f"probe: {nums}.")
        return out
    if out["targeted"] == "ahead":
        out["text"] = (f"**{method} earns its scoring here**: {nums}." if out["untargeted_kept"] else
                       f"**{method} buys targeted accuracy with untargeted accuracy here**: {nums}.")
    elif (out["targeted"] == "level" and out["untargeted_kept"] and _faster(out["wall_excl_offline"],
                                                                            out["free_wall_excl_offline"])):
        out["text"] = (f"**{method} is level with learnability on accuracy and reaches full data's accuracy sooner "
                       f"on the clock here**: {nums}.")
    else:
        where = "level with" if out["targeted"] == "level" else "behind"
        out["text"] = (f"**{method} does not earn its scoring here** ({where} learnability, which needs no gradient "
                       f"pass; on this pool `selection.method: learnability` is the cheaper choice): {nums}.")
    return out


def _faster(a: float | None, b: float | None) -> bool:
    """Speed-up a beats speed-up b (None = target not reached; NaN = undefined or unpriced: never faster)."""
    if a is None or not np.isfinite(a) and not np.isinf(a):
        return False
    return b is None or (np.isfinite(b) or np.isinf(b)) and a > b


def _nanmean(x: list[float | None]) -> float | None:
    a = np.asarray([v for v in x if v is not None and np.isfinite(v)], dtype=float)
    return float(a.mean()) if a.size else None


# ---------------------------------------------------------------- markdown helpers
def _pm(ms: tuple[float, float] | list[float] | None, se: float | None = None) -> str:
    """"mean ± seed std [SE x]": the spread over seeds, then one evaluation's standard error."""
    if ms is None or not np.isfinite(ms[0]):
        return "–"
    return f"{ms[0]:.3f} ± {ms[1]:.3f}" + (f" [SE {se:.3f}]" if se is not None and np.isfinite(se) else "")


def _curve(row: dict[str, Any], short: str) -> str:
    """The seed-mean curve of group `short` (tgt, unt): "accuracy±SE" per evaluation."""
    return " ".join(f"{a:.3f}" if e is None or not np.isfinite(e) else f"{a:.3f}±{e:.3f}"
                    for a, e in zip(row.get(f"{short}_mean", []), row.get(f"{short}_se", [None] * 99)))


UNPRICED = ("unpriced: an artifact this cost needs (offline rollouts, a stage's scoring or training, here or in full "
            "data's runs) was stored before cropi recorded compute seconds in manifests (no `compute.seconds`) — "
            "delete it from storage to have it recomputed and priced, or compare on a fresh root")


def wall(row: dict[str, Any], sfx: str = "") -> str:
    """A method's wall-clock speed-up as the reports write it: `times`, or "unpriced" (see UNPRICED)."""
    if f"wall_speedup{sfx}" not in row:
        return "–"
    return "unpriced" if row.get(f"wall_unpriced{sfx}") else times(row[f"wall_speedup{sfx}"])


def times(v: float | None) -> str:
    """A speed-up as the reports write it: "2.66×", "not reached", "undefined" or "∞ (at step 0)"."""
    if v is None:
        return "not reached"
    if np.isnan(v):
        return "undefined"
    if not np.isfinite(v):
        return "∞ (at step 0)"
    return f"{v:.2f}×"


# ---------------------------------------------------------------- plots
LINES = ("-", "--", ":", "-.")  # methods often coincide (cropi = influence_once at stage 0): keep both visible
def _plots(summary: dict[str, Any], records: list[dict[str, Any]], folder: Path, groups: dict[str, str]) -> dict[str, Path]:
    from tasks.reports import plotter

    plt, paths, save = plotter(folder)
    ms = summary["methods"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, short, title in ((axes[0], "tgt", "targeted"), (axes[1], "unt", "untargeted")):
        for i, (m, row) in enumerate(ms.items()):
            if f"{short}_mean" not in row:
                continue
            st = row["steps"]
            ax.plot(st, row[f"{short}_mean"], marker="os^vDP*"[i % 7], ls=LINES[i % 4], color=f"C{i}",
                    lw=2.5 if m == "cropi" else 1.5, label=m)
            ax.fill_between(st, row[f"{short}_min"], row[f"{short}_max"], color=f"C{i}", alpha=0.15)
        if short == "tgt" and summary["target"] is not None:
            ax.axhline(summary["target"], color="k", ls=":", lw=1, label="full data, final")
        ax.set(xlabel="GRPO step", ylabel=f"{title} accuracy (mean of sets)",
               title=f"{title.capitalize()} accuracy vs step (mean, min–max over seeds)")
        ax.legend(fontsize=7)
    save(fig, "compare_accuracy")

    # where each method spends its budget: the selected set by domain group (targeted / conflicting / distractor),
    # one stacked bar per method and stage (mean over seeds)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * sum(len(r["stages"]) for r in records[:1]) * len(ms)), 4))
    labels: list[str] = []
    shares = {g: [] for g in GROUPS}
    for m in ms:
        rs = [r for r in records if r["method"] == m]
        for k in range(len(rs[0]["stages"])):
            labels.append(f"{m}\ns{k}")
            for g, v in group_shares(rs, k, groups).items():
                shares[g].append(v)
    x = np.arange(len(labels))
    bottoms = np.zeros(len(labels))
    for g, color in zip(GROUPS, ("C2", "C3", "C7")):
        ax.bar(x, shares[g], 0.7, bottom=bottoms, color=color, label=g)
        bottoms += np.asarray(shares[g])
    ax.set_xticks(x, labels, fontsize=6)
    ax.set(ylim=(0, 1), ylabel="share of selected prompts", title="Selected-set composition by domain group")
    ax.legend(fontsize=7)
    save(fig, "compare_composition")

    # Figure 6: offline (β) vs online (θ_m) pass rate of the selected prompts, per method and stage
    fig, ax = plt.subplots(figsize=(7, 4))
    labels, off, on = [], [], []
    for m in ms:
        rs = [r for r in records if r["method"] == m]
        for k in range(len(rs[0]["stages"])):
            labels.append(f"{m}\ns{k}")
            off.append(np.nanmean([r["stages"][k]["offline_pass_rate"] or np.nan for r in rs]))
            on.append(np.nanmean([np.nan if r["stages"][k]["online_pass_rate"] is None else r["stages"][k]["online_pass_rate"]
                                  for r in rs]))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, off, 0.4, label="offline (β)")
    ax.bar(x + 0.2, on, 0.4, label="online (θ_m)")
    ax.set_xticks(x, labels, fontsize=6)
    ax.set(ylabel="mean pass rate of selected prompts", title="Offline vs online pass rate (Figure 6)")
    ax.legend(fontsize=7)
    save(fig, "compare_offline_online")
    return paths


def targeted_domains_of(cfg: RunConfig) -> set[str]:
    d = cfg.data
    if d.synthetic is not None:
        return set(d.synthetic.targeted)
    return {s.domain or s.name for s in d.targeted}


GROUPS = ("targeted", "conflicting", "distractor")


def domain_groups(cfg: RunConfig) -> dict[str, str]:
    """Domain → "targeted" (its validation set drives selection), "conflicting" (`SyntheticConfig.conflict_domains`:
    its verifier rewards another answer convention) or "distractor" (every other domain: learnable, off-target).
    Domains not named here (real pools) count as distractors."""
    tdom = targeted_domains_of(cfg)
    syn = cfg.data.synthetic
    conflict = set(syn.conflict_domains) if syn is not None else set()
    doms = set(syn.domains) if syn is not None else tdom
    return {d: "targeted" if d in tdom else "conflicting" if d in conflict else "distractor" for d in doms}


def group_shares(rs: list[dict[str, Any]], k: int, groups: dict[str, str]) -> dict[str, float]:
    """Mean over the runs `rs` of the share of stage k's selected prompts in each domain group."""
    out = {}
    for g in GROUPS:
        out[g] = float(np.mean([sum(v for d, v in r["stages"][k]["domains"].items() if groups.get(d, "distractor") == g)
                                / max(1, r["stages"][k]["selected"]) for r in rs]))
    return out


def _mean_of(xs: list) -> float:
    """Mean of the measured values (None and NaN left out); NaN when none was measured."""
    v = [float(x) for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _num(x: float) -> str:
    """A stage mean for the composition table: three decimals, "–" where no run of the method measured it."""
    return "–" if not np.isfinite(x) else f"{x:.3f}"


# ---------------------------------------------------------------- the report
def write_report(cfg: RunConfig, records: list[dict[str, Any]], folder: Path, methods: list[str],
                 seeds: int) -> tuple[Path, dict[str, Any]]:
    """Write compare.md, the PNGs and results.json into `folder`; publish them as Prefect artifacts."""
    from tasks.reports import md_table, publish, publish_report, slug

    summary = summarize(records, methods)
    groups = domain_groups(cfg)
    paths = _plots(summary, records, folder, groups)
    ms = summary["methods"]
    sets = sorted({n for r in records for n in r["acc"]})
    roles = {n: r["roles"][n] for r in records for n in r["roles"]}
    tsets = [n for n in sets if roles.get(n) == "test_targeted"]
    usets = [n for n in sets if roles.get(n) == "test_untargeted"]

    head = ["method"] + tsets + ["targeted avg"] + usets + ["untargeted avg", "steps to A*", "step speed-up",
                                                              "wall speed-up", "wall excl. offline", "cost (s)",
                                                              "offline (s)"]
    table_rows = []
    for m, row in ms.items():
        fse = row.get("sets_final_se", {})
        r = [m] + [_pm(row["sets_final"].get(n), fse.get(n)) for n in tsets] + \
            [_pm(row.get("tgt_final"), (row.get("tgt_se") or [None])[-1])] + \
            [_pm(row["sets_final"].get(n), fse.get(n)) for n in usets] + \
            [_pm(row.get("unt_final"), (row.get("unt_se") or [None])[-1]),
             "–" if row.get("steps_to_target") is None else f"{row['steps_to_target']:.1f}",
             times(row.get("step_speedup")) if "step_speedup" in row else "–",
             wall(row), wall(row, "_excl_offline"),
             _pm(row.get("total_cost_s")), _pm(row.get("offline_s"))]
        table_rows.append(dict(zip(head, r)))

    comp_rows = []
    for m in ms:
        rs = [r for r in records if r["method"] == m]
        for k in range(len(rs[0]["stages"])):
            doms = sorted({d for r in rs for d in r["stages"][k]["domains"]})
            mean = {d: np.mean([r["stages"][k]["domains"].get(d, 0) for r in rs]) for d in doms}
            sel = np.mean([r["stages"][k]["selected"] for r in rs])
            share = group_shares(rs, k, groups)
            f = lambda key: _mean_of([r["stages"][k].get(key) for r in rs])  # noqa: E731
            comp_rows.append({"method": m, "stage": k, "selected": f"{sel:.0f}",
                              **{f"{g} share": f"{share[g]:.2f}" for g in GROUPS},
                              "domains": ", ".join(f"{d}:{v:.0f}" for d, v in mean.items()),
                              "offline pass": f"{f('offline_pass_rate'):.3f}",
                              "online pass": f"{f('online_pass_rate'):.3f}", "ESS/K": f"{f('ess_frac'):.3f}",
                              "KL": f"{f('kl'):.4f}", "reliability": _num(f("reliability")),
                              "scoring s": f"{f('scoring_s'):.1f}", "train s": f"{f('train_s'):.1f}"})

    verdicts = [v for m in ms if m not in NOT_SCORED and (v := verdict(summary, m)) is not None]
    c = cfg
    cr = ms.get("cropi", {})
    headline = (f"CROPI step speed-up over full data: **{times(cr.get('step_speedup'))}** "
                f"(wall-clock incl. scoring: **{wall(cr)}**, without the one-time offline rollouts: "
                f"**{wall(cr, '_excl_offline')}**); target A* = full data's final "
                f"targeted accuracy = {summary['target']:.3f}." if "step_speedup" in cr and summary["target"] is not None
                else "Speed-up needs both `cropi` and `full` in --methods.")
    if any(row.get(f"wall_unpriced{sfx}") for row in ms.values() for sfx, _ in COSTS):
        headline += f" Wall-clock {UNPRICED}."
    if summary.get("degenerate"):
        headline += (" **Undefined here:** full data's final targeted accuracy is not above its step-0 accuracy, so "
                     "every method 'reaches' it at step 0.")
    md = [f"# CROPI vs baselines: `{c.name}`\n",
          f"{len(records)} runs: methods {', '.join(ms)}; seeds {sorted({r['seed'] for r in records})} "
          f"(of {seeds} requested). All from base checkpoint `{records[0]['base_checkpoint'][:12]}`; "
          f"{c.train.stages} stages × {c.train.steps_per_stage} GRPO steps, {c.train.prompts_per_step} prompts × "
          f"{c.train.num_generations} generations per step, offline K = {c.rollout.num_generations} (val {c.rollout.num_generations_val}), "
          f"selection ratio {c.selection.ratio}.\n",
          f"Accuracy metric: {records[0].get('metric', 'greedy pass@1')}.\n", headline + "\n",
          "## Final accuracy (Table 1 style; mean ± sample std over seeds [SE of one evaluation])\n",
          md_table(table_rows),
          *(["## Does influence earn its scoring here?\n",
             "Against learnability p(1−p) — read from the same offline rollouts, no gradient pass — on targeted "
             "accuracy (ahead: ≥ 2 SE of one evaluation), and against full data on untargeted accuracy (kept: within "
             "1 SE or above):\n", *(f"- {v['text']}" for v in verdicts), ""] if verdicts else []),
          "Step speed-up per seed (same target): " + "; ".join(
              f"{m}: " + ", ".join(times(v) for v in row.get("step_speedup_per_seed", [])) for m, row in ms.items()) + "\n",
          *(["Step speed-up read from the stage-end evaluations alone (as without eval.every_steps): " + "; ".join(
              f"{m}: {times(row.get('step_speedup_stage_ends'))}" for m, row in ms.items()
              if "step_speedup_stage_ends" in row) + "\n"] if any("step_speedup_stage_ends" in r for r in ms.values())
            else []),
          "## Definitions\n", (__doc__ or "").split("Definitions (all on the seed-MEAN curves):", 1)[-1].strip() + "\n",
          "## Accuracy vs step\n", f"![accuracy]({paths['compare_accuracy'].name})\n",
          md_table([{"method": m, "steps": " ".join(f"{s:g}" for s in row.get("steps", [])),
                     "targeted (mean ± SE)": _curve(row, "tgt"), "untargeted (mean ± SE)": _curve(row, "unt")}
                    for m, row in ms.items()]),
          "## Selected-set composition, pass rates and off-policy health per stage (mean over seeds)\n",
          "Domain groups: " + "; ".join(f"{g}: {', '.join(sorted(d for d, x in groups.items() if x == g)) or '–'}"
                                        for g in GROUPS) + ".\n",
          md_table(comp_rows),
          f"![composition]({paths['compare_composition'].name})\n",
          "## Offline vs online pass rate of the selected prompts (Figure 6)\n",
          f"![offline vs online]({paths['compare_offline_online'].name})\n",
          "## Runs\n", md_table([{"method": r["method"], "seed": r["seed"], "run report": r["report"],
                                  "final checkpoint": r["final_checkpoint"][:12]} for r in records])]
    text = "\n".join(md)
    report = folder / "compare.md"
    report.write_text(text)
    results = {"target": summary["target"], "degenerate": bool(summary.get("degenerate")), "methods": {m: {k: v for k, v in row.items()} for m, row in ms.items()},
               "verdicts": {v["method"]: v for v in verdicts}}
    (folder / "results.json").write_text(json.dumps(results, indent=1, default=float))

    key = slug(cfg) + "-compare"
    publish("table", f"{key}-table", f"{cfg.name}: CROPI vs baselines (final accuracy, speed-ups)", table=table_rows)
    publish_report(key, key, text, paths, f"{cfg.name}: comparison report", {n: f"{cfg.name}: {n}" for n in paths})
    return report, results
