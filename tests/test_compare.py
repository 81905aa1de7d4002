"""`cropi run`, then `cropi compare` on the same root, end to end on the coin task (3 methods, 1 seed, 2 stages × 4
steps): every run starts from the same base checkpoint and offline rollouts, shared artifacts are computed once,
every method is priced from the artifacts' manifests (also what the first `cropi run` computed), and the report
files exist with numbers that follow from the per-run evaluations. Plus the speed-up arithmetic on hand-made
curves."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows_helpers as H
from flows.cli import app
from flows.compare_report import cost_at, steps_to_reach, summarize


@pytest.fixture(scope="module")
def compared(tmp_path_factory, prefect_api):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cmp")
    data = H.write_coin_data(root / "data")
    model = H.train_coin_model(root / "model", data)
    cfg = H.write_config(root / "coin.yaml", H.coin_config(data, model))
    storage = root / "store"
    # `cropi run` first: the comparison's cropi seed 0 is this very run, so it reuses every one of its artifacts
    # (and full / learnability its stage-0 ones) and has to price what another run computed
    ran = CliRunner().invoke(app, ["run", "--config", str(cfg), "--storage", str(storage)])
    assert ran.exit_code == 0, ran.output
    res = CliRunner().invoke(app, ["compare", "--config", str(cfg), "--storage", str(storage),
                                   "--methods", "cropi,full,learnability", "--seeds", "1"])
    torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    return {"storage": storage, "output": res.output, "folder": storage / "runs" / "coin-compare", "config": cfg,
            "api": prefect_api, "run": json.loads((storage / "runs" / "coin" / "summary.json").read_text())}


def test_compare_writes_report_files(compared):
    f = compared["folder"]
    for name in ("compare.md", "results.json", "records.json", "compare_accuracy.png",
                 "compare_composition.png", "compare_offline_online.png"):
        assert (f / name).stat().st_size > 0, name
    assert f"report: {f / 'compare.md'}" in compared["output"]
    md = (f / "compare.md").read_text()
    assert "| cropi |" in md and "| full |" in md and "Figure 6" in md
    assert "wall excl. offline" in md and "without the one-time offline rollouts" in md
    # learnability ran beside cropi: the report and the console say whether influence earned its scoring
    res = json.loads((f / "results.json").read_text())
    v, ms = res["verdicts"]["cropi"], res["methods"]
    assert v["targeted_vs_free"] == pytest.approx(ms["cropi"]["tgt_final"][0] - ms["learnability"]["tgt_final"][0])
    assert v["untargeted_vs_full"] == pytest.approx(ms["cropi"]["unt_final"][0] - ms["full"]["unt_final"][0])
    assert "## Does influence earn its scoring here?" in md and f"- {v['text']}" in md
    assert v["text"].replace("**", "").replace("`", "") in compared["output"]
    # every method's own curriculum report exists too
    for m in ("cropi", "full", "learnability"):
        assert (compared["storage"] / "runs" / f"coin-{m}-s0" / "report.md").exists()
    # no second record of costs beside the manifests
    assert not list(compared["storage"].joinpath("runs").rglob("timings.json*"))


def test_one_worker_runs_each_later_run_in_its_own_process(compared):
    """--workers 1 (the fixture's default): the first run in the CLI's process, each later one in a worker process
    of its own (its log in the compare folder), so no run inherits the memory an earlier one left behind."""
    logs = compared["folder"] / "logs"
    assert sorted(p.name for p in logs.glob("*.log")) == ["full-s0.log", "learnability-s0.log"]
    assert sorted(p.name for p in (compared["folder"] / "records").glob("*.json")) == [
        "full-s0.json", "learnability-s0.json"]


def test_compare_runs_share_base_and_rollouts(compared):
    recs = json.loads((compared["folder"] / "records.json").read_text())
    assert [(r["method"], r["seed"]) for r in recs] == [("cropi", 0), ("full", 0), ("learnability", 0)]
    assert recs[0]["base_checkpoint"] == recs[1]["base_checkpoint"] == recs[2]["base_checkpoint"]
    # every run evaluated the base on the same test sets at step 0 → identical step-0 accuracies
    assert {n: a[0] for n, a in recs[0]["acc"].items()} == {n: a[0] for n, a in recs[1]["acc"].items()}
    cropi, full, _ = recs
    assert [s["selected"] for s in full["stages"]] == [48, 48]  # full = whole pool
    assert all(s["selected"] == 12 for s in cropi["stages"])  # ratio 0.25 of 48
    # costs come from the manifests: cropi pays offline rollouts + scoring, full pays neither
    assert cropi["offline_s"] > 0 and full["offline_s"] == 0
    assert all(s["scoring_s"] > 0 and s["train_s"] > 0 for s in cropi["stages"])
    assert sum(s["scoring_s"] for s in full["stages"]) < sum(s["scoring_s"] for s in cropi["stages"])  # selection only


def test_compare_results_follow_from_records(compared):
    recs = json.loads((compared["folder"] / "records.json").read_text())
    res = json.loads((compared["folder"] / "results.json").read_text())
    full = next(r for r in recs if r["method"] == "full")
    tsets = [n for n, role in full["roles"].items() if role == "test_targeted"]
    final = sum(full["acc"][n][-1][1] for n in tsets) / len(tsets)
    assert math.isclose(res["target"], final)
    assert math.isclose(res["methods"]["full"]["tgt_final"][0], final)
    # full reaches its own final accuracy no later than its last step → speed-up ≥ 1 (or ∞ if already at step 0)
    sp = res["methods"]["full"]["step_speedup"]
    assert sp >= 1.0 if not res.get("degenerate") else math.isnan(sp)


def test_speedup_interpolation():
    steps = [0, 10, 20, 30]
    assert steps_to_reach(steps, [0.1, 0.2, 0.4, 0.5], 0.3) == pytest.approx(15.0)
    assert steps_to_reach(steps, [0.1, 0.2, 0.4, 0.5], 0.1) == 0.0
    assert steps_to_reach(steps, [0.1, 0.2, 0.4, 0.5], 0.6) is None
    # non-monotone curve: the FIRST crossing counts
    assert steps_to_reach(steps, [0.1, 0.5, 0.2, 0.5], 0.3) == pytest.approx(5.0)


def _rec(method: str, acc_t: list[float], offline: float, scoring: float, train: float) -> dict:
    return {"method": method, "seed": 0, "steps_per_stage": 10, "offline_s": offline,
            "roles": {"t": "test_targeted", "u": "test_untargeted"},
            "acc": {"t": [[10 * i, a] for i, a in enumerate(acc_t)], "u": [[10 * i, 0.5] for i in range(len(acc_t))]},
            "stages": [{"stage": k, "scoring_s": scoring, "train_s": train, "selected": 1, "domains": {}}
                       for k in range(len(acc_t) - 1)]}


def test_step_and_wall_speedup_definitions():
    full = _rec("full", [0.1, 0.2, 0.3, 0.4], 0.0, 0.0, 100.0)
    cropi = _rec("cropi", [0.1, 0.3, 0.5, 0.6], 20.0, 10.0, 100.0)
    # cropi reaches 0.4 at step 15: offline 20 + stage 0 (10 + 100) + stage 1 scoring 10 + half of 100
    assert cost_at(cropi, 15.0) == pytest.approx(20 + 110 + 10 + 50)
    s = summarize([full, cropi], ["full", "cropi"])
    c = s["methods"]["cropi"]
    assert s["target"] == pytest.approx(0.4)
    assert c["steps_to_target"] == pytest.approx(15.0)
    assert c["step_speedup"] == pytest.approx(30 / 15)
    assert c["wall_speedup"] == pytest.approx(300 / 190)
    # without the one-time offline rollouts (20 s): 300 / (110 + 10 + 50)
    assert cost_at(cropi, 15.0, offline=False) == pytest.approx(170)
    assert c["wall_speedup_excl_offline"] == pytest.approx(300 / 170)


def test_mid_stage_points_sharpen_the_crossing_and_stage_ends_are_kept():
    """Stages of 10 steps, evaluated every 5 (eval.every_steps): full data's target is its final 0.4 (step 30).
    cropi's curve 0.1 @0, 0.4 @5, 0.45 @10, ...: the target is crossed at step 5 → 30 / 5 = 6×. Read from the
    stage ends alone (0.1 @0, 0.45 @10) the crossing is interpolated to 10 · 0.3 / 0.35 = 8.571 → 3.5×. A second
    seed evaluated at the stage ends only cuts both seeds to the common steps."""
    full = _rec("full", [0.1, 0.2, 0.3, 0.4], 0.0, 0.0, 100.0)
    fine = _rec("cropi", [0.1, 0.45, 0.5, 0.5], 0.0, 0.0, 100.0)
    fine["acc"]["t"] = [[0, 0.1], [5, 0.4], [10, 0.45], [15, 0.5], [20, 0.5], [25, 0.5], [30, 0.5]]
    fine["acc"]["u"] = [[t, 0.5] for t, _ in fine["acc"]["t"]]
    c = summarize([full, fine], ["full", "cropi"])["methods"]["cropi"]
    assert c["steps"] == [0, 5, 10, 15, 20, 25, 30]
    assert c["steps_to_target"] == pytest.approx(5.0) and c["step_speedup"] == pytest.approx(6.0)
    assert c["step_speedup_stage_ends"] == pytest.approx(30 / (10 * 0.3 / 0.35))
    assert "step_speedup_stage_ends" not in summarize([full, fine], ["full", "cropi"])["methods"]["full"]

    coarse = {**_rec("cropi", [0.1, 0.45, 0.5, 0.5], 0.0, 0.0, 100.0), "seed": 1}
    c = summarize([full, fine, coarse], ["full", "cropi"])["methods"]["cropi"]
    assert c["steps"] == [0, 10, 20, 30] and c["step_speedup"] == pytest.approx(3.5)
    assert c["step_speedup_per_seed"] == pytest.approx([3.5, 3.5])


def test_untimed_cost_is_reported_unpriced_not_not_reached():
    """Full data's stage-1 training computed by another run on the root (no seconds here): CROPI still reaches
    the target (step speed-up defined), its wall-clock is "unpriced", not "not reached"."""
    from flows.compare_report import wall

    full = _rec("full", [0.1, 0.2, 0.3, 0.4], 0.0, 0.0, 100.0)
    full["stages"][1]["train_s"] = None
    cropi = _rec("cropi", [0.1, 0.3, 0.5, 0.6], 20.0, 10.0, 100.0)
    c = summarize([full, cropi], ["full", "cropi"])["methods"]["cropi"]
    assert c["step_speedup"] == pytest.approx(2.0) and c["wall_speedup"] is None and c["wall_unpriced"]
    assert wall(c) == wall(c, "_excl_offline") == "unpriced"
    slow = _rec("cropi", [0.1, 0.1, 0.2, 0.3], 20.0, 10.0, 100.0)  # never reaches 0.4
    assert wall(summarize([full, slow], ["full", "cropi"])["methods"]["cropi"]) == "not reached"


def test_flat_full_curve_gives_undefined_not_infinite_speedup():
    flat = _rec("full", [0.3, 0.3, 0.3], 0.0, 0.0, 50.0)
    s = summarize([flat], ["full"])
    assert s["methods"]["full"]["steps_to_target"] == 0.0
    assert math.isnan(s["methods"]["full"]["step_speedup"]) and math.isnan(s["methods"]["full"]["wall_speedup"])


def test_speedup_undefined_when_full_data_does_not_improve():
    full = _rec("full", [0.4, 0.3, 0.3, 0.2], 0.0, 0.0, 50.0)
    cropi = _rec("cropi", [0.4, 0.6, 0.7, 0.8], 5.0, 5.0, 50.0)
    s = summarize([full, cropi], ["full", "cropi"])
    assert s["degenerate"] and math.isnan(s["methods"]["cropi"]["step_speedup"])
    assert math.isnan(s["methods"]["cropi"]["wall_speedup"])


def test_ablation_merge_relabels_cropi_and_measures_against_base_full(tmp_path):
    from benchmarks.compare_ablations import merge

    base = [_rec("full", [0.1, 0.2, 0.3, 0.4], 0.0, 0.0, 100.0), _rec("cropi", [0.1, 0.2, 0.3, 0.5], 0.0, 0.0, 100.0)]
    # an ablation with twice as many, half as long stages (5-step evaluations) reaching 0.4 at step 10
    fast = _rec("cropi", [0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5], 0.0, 0.0, 50.0)
    fast["steps_per_stage"] = 5
    fast["acc"] = {n: [[5 * i, a] for i, (_, a) in enumerate(v)] for n, v in fast["acc"].items()}
    records, methods = merge(base, {"E5": [fast, _rec("full", [0.9] * 4, 0, 0, 1)]})
    assert methods == ["full", "cropi", "cropi[E5]"]
    assert [r["method"] for r in records] == ["full", "cropi", "cropi[E5]"]  # the ablation's own full run is dropped
    s = summarize(records, methods)
    assert s["target"] == pytest.approx(0.4)  # from the BASE full-data run
    assert s["methods"]["cropi[E5]"]["steps_to_target"] == pytest.approx(10.0)
    assert s["methods"]["cropi[E5]"]["step_speedup"] == pytest.approx(3.0)
    bad = [dict(fast, metric="mean@8 (T=0.5)")]
    with pytest.raises(Exception, match="metric"):
        merge(base, {"x": bad})


def test_stage_scoring_cost_includes_calibration_and_candidates():
    """A stage's scoring seconds (run report cost table and compare records) = calibration + candidates + every
    sketch chunk and finalize + scores + selection; training and evaluation are not in it."""
    from flows.outputs import RunSummary, StageOutputs
    from tasks.reports import cost_rows
    from storage import ArtifactRef

    ref = lambda kind, key: ArtifactRef(kind=kind, key=key, uri=f"memory://{key}")  # noqa: E731
    st = StageOutputs(stage=0, input_checkpoint=ref("checkpoint", "t0"), selection=ref("selection", "sel"),
                      checkpoint=ref("checkpoint", "t1"), online=ref("rollouts", "on"), health=ref("health", "h"),
                      evals={"test": ref("evaluation", "ev")}, grads={"pool": ref("grads", "gp"), "val": ref("grads", "gv")},
                      shaping={"calibration": ref("calibration", "cal"), "candidates": ref("candidates", "cand")},
                      scores=ref("scores", "sc"))
    summary = RunSummary(name="x", base_checkpoint=st.input_checkpoint, final_checkpoint=st.checkpoint,
                         pool=ref("dataset", "pool"), pool_rollouts=ref("rollouts", "rp"), val_rollouts={},
                         tests={}, evals0={}, stages=[st], refreshes=[])
    # what each manifest's compute.seconds says (a gradient array's already sums its chunks and finalizing)
    seconds = {"cal": 3.0, "cand": 0.25, "gp": 15.5, "gv": 2.0, "sc": 0.125, "sel": 0.125, "t1": 100.0, "ev": 50.0,
               "rp": 40.0}
    # 3 + 0.25 + 15.5 + 2 + 0.125 + 0.125 = 21.0; training 100 and evaluation 50 apart
    rows = cost_rows(summary, seconds.get)
    assert (rows[1]["scoring"], rows[1]["training"], rows[1]["evaluation"]) == ("21.0", "100.0", "50.0")
    assert rows[0]["offline (amortised)"] == "40.0" and rows[1]["offline (amortised)"] == "40.0"
    del seconds["gv"]  # an artifact stored before compute seconds were recorded: the stage's scoring is unpriced
    assert cost_rows(summary, seconds.get)[1]["scoring"] == "–"


def test_seconds_of_reads_the_manifest(tmp_path):
    """`seconds_of(store, key)`: the compute record written with the artifact; None without one (an artifact
    stored before they were recorded) or for a key the store does not hold."""
    from storage import artifact_key, open_store
    from tasks.reports import seconds_of

    store = open_store(tmp_path / "s")
    keys = [artifact_key("scores", parents=[], config={"i": i}) for i in range(3)]
    for key, meta in zip(keys, [{"compute": {"seconds": 2.5}}, {}]):
        with store.writer("scores", key, parents=[], config={}, meta=meta) as w:
            w.put_json("x.json", 1)
    assert seconds_of(store, keys[0]) == 2.5
    assert seconds_of(store, keys[1]) is None and seconds_of(store, keys[2]) is None


def test_compare_after_run_prices_every_method_from_manifests(compared):
    """`cropi run`, then `cropi compare --methods cropi,full,learnability --seeds 1` on the same root: the cropi run
    of the comparison IS the earlier run (it computed nothing), and full and learnability reuse its stage-0
    artifacts; yet every method's wall-clock speed-up is priced (never "unpriced"), each cost being what the
    manifests of the artifacts it needs say, whoever computed them."""
    from storage import open_store
    from tasks.reports import seconds_of

    res = json.loads((compared["folder"] / "results.json").read_text())
    recs = {r["method"]: r for r in json.loads((compared["folder"] / "records.json").read_text())}
    assert recs["cropi"]["computed"] == []  # everything was the first `cropi run`'s
    first = {k for _, k in compared["run"]["computed"]}
    assert recs["cropi"]["final_checkpoint"] == compared["run"]["final_checkpoint"]
    assert not {k for _, k in recs["full"]["computed"] + recs["learnability"]["computed"]} & first
    for m in ("cropi", "full", "learnability"):
        row = res["methods"][m]
        assert not row.get("wall_unpriced") and not row.get("wall_unpriced_excl_offline"), (m, row)
        assert recs[m]["offline_s"] is not None and all(s["scoring_s"] is not None and s["train_s"] is not None
                                                        for s in recs[m]["stages"]), m
    md = (compared["folder"] / "compare.md").read_text()
    assert "unpriced" not in md and "unpriced" not in compared["output"]
    # cropi's costs are exactly the first run's artifacts' recorded seconds
    store = open_store(str(compared["storage"]))
    stage0 = compared["run"]["stages"][0]
    assert recs["cropi"]["stages"][0]["train_s"] == seconds_of(store, stage0["checkpoint"]) > 0
    assert {k for k in stage0["grads"].values()} <= first  # sketched by `cropi run`, priced in the comparison
    assert recs["cropi"]["stages"][0]["scoring_s"] >= sum(seconds_of(store, k) for k in stage0["grads"].values()) > 0
    # learnability pays the pool's offline rollouts, computed by `cropi run`
    assert recs["learnability"]["offline_s"] == seconds_of(store, compared["run"]["pool_rollouts"]) > 0


def test_cropi_plus_dapo_is_popi_selection_with_dynamic_sampling():
    """The 8th method: POPI selection (CROPI's) with DAPO's dynamic sampling in training; in the default list."""
    from cropi_core.config import RunConfig
    from flows.compare import METHODS, method_config, parse_methods

    c = method_config(RunConfig(), "cropi+dapo", 2)
    assert c.selection.method == "popi" and c.train.dynamic_sampling and c.train.seed == 2
    assert "cropi+dapo" in parse_methods(None) and len(METHODS) == 9
    assert not method_config(RunConfig(), "cropi", 0).train.dynamic_sampling


def test_cropi_paper_is_the_papers_selection_whatever_the_config_sets():
    """cropi-paper: POPI cosine over the whole pool, re-scored every stage, no fusion — even when the config's own
    cropi uses the cascade, the inner product, the fusion and the drift schedule; the sketch stays as configured."""
    from cropi_core.config import RunConfig
    from flows.compare import method_config

    cfg = RunConfig()
    for dotted, v in (("influence.score", "inner"), ("influence.candidates", 2.0), ("influence.candidates_by",
                      "learnability"), ("selection.fusion", "learnability_rrf"), ("selection.rescore", "drift"),
                      ("influence.sparse_ratio", 0.5)):
        section, field = dotted.split(".")
        setattr(getattr(cfg, section), field, v)
    mine, paper = method_config(cfg, "cropi", 1), method_config(cfg, "cropi-paper", 1)
    assert (mine.influence.score, mine.selection.fusion, mine.selection.rescore) == ("inner", "learnability_rrf", "drift")
    assert paper.selection.method == "popi" and paper.influence.score == "cosine"
    assert paper.influence.candidates is None and paper.selection.fusion == "none" and paper.selection.rescore == "every"
    assert paper.influence.sparse_ratio == 0.5 and paper.name.endswith("-cropi-paper-s1")
    assert "fusion" not in paper.hashable("selection") and "k_fusion" not in paper.hashable("selection")  # paper keys


def test_killed_compare_resumes_without_recomputing(compared):
    """SIGKILL `cropi compare` (its whole process group, as a pre-empted machine) while its second run trains, then
    rerun the same command: it completes, every run's record is there, and nothing the killed process finished
    is computed again (every artifact the resume computes was absent from the store when it started)."""
    storage, name = compared["storage"], "coinkill"
    args = ["compare", "--config", str(compared["config"]), "--storage", str(storage), "--methods", "full,random",
            "--seeds", "1", "--name", name]
    folder = storage / "runs" / f"{name}-compare"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PREFECT_API_URL": compared["api"],
           "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and p.poll() is None:
            recs = json.loads((folder / "records.json").read_text()) if (folder / "records.json").exists() else []
            if len(recs) == 1:
                break  # `full` is recorded; `random` is starting
            time.sleep(0.1)
        time.sleep(3.0)  # into random's first stage (its selection and GRPO steps)
        assert p.poll() is None, "the compare finished before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert [r["method"] for r in json.loads((folder / "records.json").read_text())] == ["full"]
    before = {m.parent.name for m in storage.rglob("manifest.json")}

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    recs = json.loads((folder / "records.json").read_text())
    assert [(r["method"], r["seed"]) for r in recs] == [("full", 0), ("random", 0)]
    # each record lists what the resumed process computed for that run (the rest it found in storage)
    recomputed = [(t, k) for r in recs for t, k in r["computed"] if k.partition(":")[0] in before]
    assert recomputed == [], recomputed
    assert recs[0]["computed"] == []  # full was finished before the kill: reused whole


def test_parallel_compare_gives_the_same_records(compared, tmp_path, monkeypatch):
    """`--workers 2` on a fresh root: the first run goes alone, the other two run in two worker processes at
    once; every run's accuracies equal those of the one-process comparison (same bytes), and the workers' logs
    and records are in the compare folder."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' torch threads, as the fixture's
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    storage = tmp_path / "store"
    try:
        res = CliRunner().invoke(app, ["compare", "--config", str(compared["config"]), "--storage", str(storage),
                                       "--methods", "cropi,full,random", "--seeds", "1", "--workers", "2"])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    folder = storage / "runs" / "coin-compare"
    recs = json.loads((folder / "records.json").read_text())
    assert [(r["method"], r["seed"]) for r in recs] == [("cropi", 0), ("full", 0), ("random", 0)]
    seq = {r["method"]: r for r in json.loads((compared["folder"] / "records.json").read_text())}
    for r in recs[:2]:
        assert r["acc"] == seq[r["method"]]["acc"], r["method"]
        assert r["final_checkpoint"] == seq[r["method"]]["final_checkpoint"]
    assert (folder / "logs" / "full-s0.log").exists() and (folder / "records" / "random-s0.json").exists()
    assert recs[1]["offline_s"] == 0 and all(s["train_s"] for r in recs for s in r["stages"])  # priced from manifests
    assert "--workers: must be ≥ 1" in CliRunner().invoke(app, ["compare", "--workers", "0"]).output



def _graded(method: str, tgt: float, unt: float, scoring: float = 0.0, se: float = 1 / 32) -> dict:
    """A one-stage record (10 steps, 100 s of training): targeted 0.4 → tgt, untargeted 0.5 → unt, every
    evaluation's SE `se`, `scoring` s paid at the stage start."""
    rec = _rec(method, [0.4, tgt], 0.0, scoring, 100.0)
    rec["acc"]["u"] = [[0, 0.5], [10, unt]]
    rec["se"] = {n: [[t, se] for t, _ in rec["acc"][n]] for n in rec["acc"]}
    return rec


@pytest.mark.parametrize("tgt, unt, scoring, says, targeted, kept", [
    # SE = 1/32 = 0.03125; learnability ends at 0.5 targeted and full data at 0.5 on both (exact in binary);
    # A* = 0.5, which learnability reaches at step 10 (100 s: 1.00× on the clock)
    (0.5625, 0.484375, 50, "earns its scoring", "ahead", True),                       # +2 SE (at the bar), −0.5 SE
    (0.6250, 0.4375, 50, "buys targeted accuracy with untargeted", "ahead", False),   # +4 SE, −2 SE
    # +1 SE: reaches 0.5 at t* = 10 · 0.1 / 0.13125 = 7.62 steps; 50 s scoring + 76.2 s = 126 s (0.79×) > 100 s
    (0.53125, 0.5, 50, "does not earn its scoring here** (level with", "level", True),
    # the same curve without scoring: 76.2 s (1.31×) beats learnability's 100 s
    (0.53125, 0.5, 0, "level with learnability on accuracy and reaches full data's accuracy sooner", "level", True),
    (0.4375, 0.5, 50, "does not earn its scoring here** (behind", "behind", True),    # −2 SE, never reaches A*
])
def test_verdict_reads_the_bars_against_learnability_and_full_data(tgt, unt, scoring, says, targeted, kept):
    from flows.compare_report import verdict

    full, free = _graded("full", 0.5, 0.5), _graded("learnability", 0.5, 0.5)
    cropi = _graded("cropi", tgt, unt, scoring)
    v = verdict(summarize([full, free, cropi], ["full", "learnability", "cropi"]), "cropi")
    assert v["targeted_vs_free_se"] == pytest.approx((tgt - 0.5) * 32)
    assert v["untargeted_vs_full_se"] == pytest.approx((unt - 0.5) * 32)
    assert (v["targeted"], v["untargeted_kept"]) == (targeted, kept)
    assert says in v["text"]
    # without learnability, or without the method's SEs (older records), there is nothing to say
    assert verdict(summarize([full, cropi], ["full", "cropi"]), "cropi") is None
    no_se = {k: v for k, v in cropi.items() if k != "se"}
    assert verdict(summarize([full, free, no_se], ["full", "learnability", "cropi"]), "cropi") is None


def test_verdict_names_a_quiet_conflict_gate():
    """A cropi record whose every stage-0 gate stayed quiet (it trained learnability's selection): the verdict says
    so instead of advising learnability; one probe that fired (seed 1) keeps the ordinary verdict."""
    from flows.compare_report import verdict

    full, free = _graded("full", 0.5, 0.5), _graded("learnability", 0.5, 0.5)
    quiet = _graded("cropi", 0.5, 0.5, 5)
    quiet["stages"][0]["gate_fired"] = False
    v = verdict(summarize([full, free, quiet], ["full", "learnability", "cropi"]), "cropi")
    assert "conflict gate found nothing in this pool" in v["text"] and "(in 1 of 1 probes)" in v["text"]
    fired = {**_graded("cropi", 0.5, 0.5, 5), "seed": 1}
    fired["stages"][0]["gate_fired"] = True
    v = verdict(summarize([full, free, quiet, fired], ["full", "learnability", "cropi"]), "cropi")
    assert "does not earn its scoring here" in v["text"]


def test_a_kept_stage_pays_for_its_check_and_for_a_rescore_it_did_not_train_on():
    """A stage that keeps the previous selection is charged what decided that (the drift check's health artifact)
    and, when the reliability guard discarded a re-score, that re-score's sketches and scores; never the kept
    selection again. A stage that trains on its own selection pays everything in `StageOutputs.scoring`."""
    from flows.compare import selection_cost
    from flows.outputs import StageOutputs
    from storage import ArtifactRef

    ref = lambda kind, key: ArtifactRef(kind=kind, key=key, uri=f"memory://{key}")  # noqa: E731
    base = dict(stage=1, input_checkpoint=ref("checkpoint", "t1"), selection=ref("selection", "sel0"),
                checkpoint=ref("checkpoint", "t2"), online=ref("rollouts", "on"), health=ref("health", "h"), evals={})
    quiet = StageOutputs(**base, shaping={"drift": ref("health", "drift")})
    guarded = StageOutputs(**base, shaping={"drift": ref("health", "drift")}, grads={"pool": ref("grads", "gp")},
                           scores=ref("scores", "sc"), reliability=0.2, kept_unreliable=True)
    assert [r.key for r in selection_cost(quiet, kept=True)] == ["drift"]
    assert [r.key for r in selection_cost(guarded, kept=True)] == ["drift", "gp", "sc"]
    assert [r.key for r in selection_cost(guarded, kept=False)] == ["drift", "gp", "sc", "sel0"]
