"""`cropi run` end to end on a reduced budget: completes with every artifact's compute seconds in its manifest,
reruns compute nothing (storage is the only cache: every task run finds its artifact and shows as Cached, with no
Prefect result records at all), a selection.ratio change reuses rollouts and gradients, injected transient faults
in the grads and train tasks are retried to the same final artifacts, and the console shows progress lines and a
summary while the libraries' output goes to runs/<name>/train.log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows_helpers as H
from flows.cli import app


@pytest.fixture(scope="module")
def coin(tmp_path_factory, prefect_api):
    """Coin data + a warmed-up tiny model (a few seconds); torch on one thread (2 shared cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("coin")
    data = H.write_coin_data(root / "data")
    model = H.train_coin_model(root / "model", data)
    cfg = H.write_config(root / "coin.yaml", H.coin_config(data, model))
    yield {"root": root, "data": data, "model": model, "config": cfg}
    torch.set_num_threads(threads)


def cli(*args: str):
    res = CliRunner().invoke(app, list(args))
    return res


def summary_of(storage: Path, name: str = "coin") -> dict:
    return json.loads((storage / "runs" / name / "summary.json").read_text())


@pytest.fixture(scope="module")
def clean(coin, tmp_path_factory):
    """One uninterrupted run through the CLI; its storage root and summary."""
    storage = tmp_path_factory.mktemp("store-clean")
    res = cli("run", "--config", str(coin["config"]), "--storage", str(storage))
    assert res.exit_code == 0, res.output
    return {"storage": storage, "summary": summary_of(storage), "output": res.output, "stdout": res.stdout}


def kinds(summary: dict) -> list[str]:
    return sorted(t for t, _ in summary["computed"])


def test_run_completes_with_report(clean):
    s = clean["summary"]
    report = Path(s["report"])
    assert f"report: {report}" in clean["output"]
    assert report.exists()
    text = report.read_text()
    for section in ("Accuracy vs step", "Selected-set composition", "POPI histogram", "Stage-to-stage overlap",
                    "Offline vs online pass rate", "Off-policy health", "Lineage"):
        assert section in text
    for png in ("accuracy", "composition", "popi_hist", "overlap", "offline_online", "health", "lineage"):
        assert (report.parent / f"{png}.png").stat().st_size > 1000
    # cost per stage: every artifact of this cold run was computed (and timed) by it
    cost = text.split("## Cost")[1].split("##")[0]
    cells = [c.strip() for line in cost.splitlines() if line.startswith("| ") for c in line.split("|")]
    assert "–" not in cells and cost.count("\n| ") >= 3  # offline row + 2 stages, every one priced
    assert len(s["stages"]) == 2
    k = kinds(s)
    # datasets: pool, val, 2 tests; 1 base model; offline rollouts pool + val; 2 stages × (online rollouts,
    # grads pool + val, scores, selection, health, train, 2 evals) + 2 evals of θ_0
    assert k.count("train") == 2 and k.count("scores") == 2 and k.count("selection") == 2
    assert k.count("grads") == 4 and k.count("grads-chunk") == 2 * (3 + 1)
    assert k.count("rollouts") == 2 + 2 and k.count("evaluate") == 6 and k.count("bootstrap") == 1
    assert s["counts"]["failed"] == 0 and s["counts"]["computed"] == len(s["computed"])
    for st in s["stages"]:
        assert len(st["selected_ids"]) == 12  # ratio 0.25 of 48
    assert s["stages"][0]["checkpoint"] != s["stages"][1]["checkpoint"] == s["final_checkpoint"]


def test_console_shows_progress_and_ends_with_the_summary(coin, clean, tmp_path):
    """A cold `cropi run` whose stdout is not a terminal prints one plain line per task finished and per stage
    (no redraw, no ANSI codes), no TRL dict and no warning, and ends with the summary: accuracy per step,
    computed / reused, cost, report path. What the libraries printed is in runs/<name>/train.log; `--verbose`
    puts it back on the console (a copy of the store without the final checkpoint: stage 1 trains again)."""
    out, s = clean["stdout"], clean["summary"]
    lines = out.splitlines()
    assert "{'loss'" not in out and "\x1b" not in out and "\r" not in out
    assert not [ln for ln in lines if "warning" in ln.lower()], out
    assert "stage 0 (1 of 2) begins" in out and any(ln.endswith("stage 1 · train-s1: computed") for ln in lines)
    last = max(i for i, ln in enumerate(lines) if ln.startswith("["))  # the last progress line
    summary = lines[last + 1:]
    assert summary[0].startswith("accuracy (") and summary[1].split() == ["step", "targeted", "untargeted"]
    rows = [ln.split() for ln in summary[3:-4]]
    assert [r[0] for r in rows] == ["0", "4", "8"] and all(len(r) == 7 and r[2] == r[5] == "±" for r in rows)
    c = s["counts"]
    assert summary[-4].startswith("done in ") and summary[-4].endswith(
        f"{c['task_runs']} task runs, {c['computed']} computed, 0 reused")
    assert summary[-3] == (f"cost: {s['seconds']:.1f}s wall, {s['compute_seconds']:.1f}s of compute "
                           "(what it computed now; reused artifacts cost nothing again)")
    assert summary[-2] == f"final checkpoint: {s['final_checkpoint']}" and summary[-1] == f"report: {s['report']}"
    log = (clean["storage"] / "runs" / "coin" / "train.log").read_text()
    assert log.count("{'loss'") == 2 * 4 and "Task run 'train-s1' - Finished in state Completed()" in log

    from storage import open_store

    storage = tmp_path / "store"
    shutil.copytree(clean["storage"], storage)
    shutil.rmtree(open_store(str(storage)).artifact_dir(s["final_checkpoint"]))
    res = cli("run", "--verbose", "--config", str(coin["config"]), "--storage", str(storage))
    assert res.exit_code == 0, res.output
    assert res.stdout.count("{'loss'") == 4 and "full log" not in res.output and "[0:" not in res.stdout
    assert res.stdout.splitlines()[-1] == f"report: {summary_of(storage)['report']}"


def test_every_artifact_records_what_computed_it(clean):
    """Each manifest carries `compute`: the seconds of work that computed it (a gradient array's = its chunks' +
    finalizing), the machine, the task and the attempt; the cost table is priced from them."""
    from storage import open_store

    store = open_store(str(clean["storage"]))
    computed = {k for _, k in clean["summary"]["computed"]}
    ms = store.find()
    assert ms and {m.key for m in ms} <= computed | {k.partition(":")[0] for k in computed}
    for m in ms:
        c = m.meta["compute"]
        assert c["seconds"] >= 0 and c["attempt"] == 1 and c["flow_run"], (m.kind, c)
        assert {"cpu", "cores", "torch_threads", "device"} <= set(c["machine"]) and c["machine"]["device"] == "cpu"
        if m.kind == "grads":
            chunks = c["chunks"]
            assert len(chunks) == len(m.arrays["grads"].chunks) and not c.get("partial")
            assert c["seconds"] == pytest.approx(c["finalize_seconds"] + sum(x["seconds"] for x in chunks), abs=1e-2)
    trained = [m for m in ms if m.kind == "checkpoint" and m.meta.get("steps")]
    assert len(trained) == 2 and all(m.meta["compute"]["seconds"] > 0 and m.meta["compute"]["task"] == "train"
                                     for m in trained)


def test_second_run_computes_nothing(coin, clean):
    storage = clean["storage"]
    res = cli("run", "--config", str(coin["config"]), "--storage", str(storage))
    assert res.exit_code == 0, res.output
    s = summary_of(storage)
    c = s["counts"]
    assert c["computed"] == 0 and c["task_runs"] > 0 and s["computed"] == []
    # every task found its artifact in storage and ended in a Prefect state named Cached (reported as reused)
    assert c["reused"] == c["task_runs"] and c["failed"] == 0
    assert f"{c['task_runs']} task runs, 0 computed, {c['task_runs']} reused" in res.output
    assert s["final_checkpoint"] == clean["summary"]["final_checkpoint"]
    cost = Path(s["report"]).read_text().split("## Cost")[1].split("##")[0]
    cells = [c.strip() for line in cost.splitlines() if line.startswith("| ") for c in line.split("|")]
    assert "–" not in cells  # priced from the manifests: the first run recorded the seconds with each artifact

    # Prefect's side holds no cache: no result records were written, and with the result folder (and any
    # leftover of an older cropi) gone, the run is the same: each task finds its artifact in storage
    assert not (storage / "work" / "prefect-results").exists()
    shutil.rmtree(storage / "work" / "prefect-results", ignore_errors=True)
    res = cli("run", "--config", str(coin["config"]), "--storage", str(storage))
    assert res.exit_code == 0, res.output
    s = summary_of(storage)
    c = s["counts"]
    assert c["computed"] == 0 and c["reused"] == c["task_runs"] > 0
    assert s["final_checkpoint"] == clean["summary"]["final_checkpoint"]


def test_ratio_change_reuses_rollouts_and_grads(coin, clean):
    storage = clean["storage"]
    before = clean["summary"]
    res = cli("run", "--config", str(coin["config"]), "--storage", str(storage), "--set", "selection.ratio=0.5")
    assert res.exit_code == 0, res.output
    s = summary_of(storage)
    k = kinds(s)
    assert "bootstrap" not in k and "dataset" not in k
    assert s["pool_rollouts"] == before["pool_rollouts"] and s["val_rollouts"] == before["val_rollouts"]
    computed_keys = {key for _, key in s["computed"]}
    assert s["pool_rollouts"] not in computed_keys and not set(s["val_rollouts"].values()) & computed_keys
    # stage 0 scores θ_0 = β: its gradients are reused; later stages follow the new (different) training
    assert s["stages"][0]["grads"] == before["stages"][0]["grads"]
    assert not set(s["stages"][0]["grads"].values()) & computed_keys
    assert not any(t == "grads-chunk" and key.startswith(tuple(s["stages"][0]["grads"].values())) for t, key in s["computed"])
    assert k.count("selection") == 2 and k.count("train") == 2
    assert len(s["stages"][0]["selected_ids"]) == 24


def test_mid_stage_evaluations_add_curve_points_and_keep_every_key(coin, clean):
    """eval.every_steps=2 on 2 stages × 4 steps: the policy after steps 2 and 6 is stored and evaluated, so the
    curve has points 0, 2, 4, 6, 8. Nothing else changes: each stage is retrained once to save its step (same
    inputs, same machine → the same final checkpoints), every other artifact is reused, a rerun computes
    nothing, and without the field the run is the clean one again (stage ends only)."""
    from storage.store import open_store

    storage = clean["storage"]
    base = ["run", "--config", str(coin["config"]), "--storage", str(storage)]
    res = cli(*base, "--set", "eval.every_steps=2")
    assert res.exit_code == 0, res.output
    s = summary_of(storage)
    assert sorted({r["step"] for r in s["accuracy"]}) == [0, 2, 4, 6, 8]
    assert [st["checkpoint"] for st in s["stages"]] == [st["checkpoint"] for st in clean["summary"]["stages"]]
    # the stage-end points are the clean run's evaluations (same checkpoints → same evaluation artifacts)
    ends = {(r["group"], r["step"]): r["accuracy"] for r in s["accuracy"] if r["step"] % 4 == 0}
    assert ends == {(r["group"], r["step"]): r["accuracy"] for r in clean["summary"]["accuracy"]}
    # 2 stages × 1 mid step × 2 test sets (target, other) evaluated; each stage trained again
    assert sorted(t for t, _ in s["computed"]) == ["evaluate"] * 4 + ["train"] * 2

    store = open_store(str(storage))
    for st, clean_st in zip(s["stages"], clean["summary"]["stages"]):
        m = store.manifest(st["checkpoint"])
        step_ckpts = store.find("checkpoint", meta={"run": "coin", "in_stage": m.meta["stage"] - 1})
        assert [c.meta["step"] for c in step_ckpts] == [2]
        mid = step_ckpts[0]
        # parents: the stage's starting checkpoint and its selection, like the stage's final checkpoint
        assert list(mid.parents) == list(m.parents) and mid.key != st["checkpoint"]
        assert mid.meta["global_step"] == (m.meta["stage"] - 1) * 4 + 2

    res = cli(*base, "--set", "eval.every_steps=2")
    assert res.exit_code == 0, res.output
    assert summary_of(storage)["computed"] == []
    res = cli(*base)
    assert res.exit_code == 0, res.output
    s = summary_of(storage)
    assert s["computed"] == [] and sorted({r["step"] for r in s["accuracy"]}) == [0, 4, 8]


def test_energy_allocation_sketches_through_a_shared_calibration(coin, clean):
    """influence.allocation=energy: one calibration artifact per stage, parent of that stage's pool AND val sketches;
    the offline rollouts are reused and a rerun computes nothing."""
    from storage import open_store

    storage = clean["storage"]
    # the coin config sketches with `dense`, which keeps every coordinate: the allocation applies to a masked kind
    args = ("run", "--config", str(coin["config"]), "--storage", str(storage), "--set", "influence.allocation=energy",
            "--set", "influence.projector=grass", "--set", "influence.sparse_ratio=0.25")
    res = cli(*args)
    assert res.exit_code == 0, res.output
    s = summary_of(storage)
    k = kinds(s)
    assert k.count("calibration") == 2 and "bootstrap" not in k
    assert s["pool_rollouts"] == clean["summary"]["pool_rollouts"]
    store = open_store(str(storage))
    for st in s["stages"]:
        parents = [set(store.manifest(g).parents) for g in st["grads"].values()]
        calib = set.intersection(*parents) - {st["grads"]["pool"]}
        calib = [p for p in calib if store.manifest(p).kind == "calibration"]
        assert len(calib) == 1  # the same calibration shapes the pool and every validation sketch
        energy = store.read_json(calib[0], "energy.json")
        assert len(energy) > 10 and all(v >= 0 for v in energy.values()) and max(energy.values()) > 0
    assert s["stages"][0]["grads"] != clean["summary"]["stages"][0]["grads"]  # a new mask: new sketches
    res = cli(*args)
    assert res.exit_code == 0 and summary_of(storage)["counts"]["computed"] == 0


def test_candidates_sketch_a_subset_with_the_full_run_rows(coin, clean):
    """influence.candidates=1: each stage sketches only ⌈1 × 12⌉ drawn scorable pool prompts ∪ the previous stage's
    selection. Those rows are bit-identical to the full sketch's (stage 0 scores the same θ_0 = β), every other row
    is NaN, the selection comes from the candidates, the validation sketches are reused, a rerun computes nothing."""
    import numpy as np

    from storage import open_store

    storage = clean["storage"]
    args = ("run", "--config", str(coin["config"]), "--storage", str(storage), "--set", "influence.candidates=1")
    res = cli(*args)
    assert res.exit_code == 0, res.output
    s, full = summary_of(storage), clean["summary"]
    assert kinds(s).count("candidates") == 2
    store = open_store(str(storage))
    cand = []
    for st in s["stages"]:
        parents = store.manifest(st["grads"]["pool"]).parents
        (c,) = [p for p in parents if store.manifest(p).kind == "candidates"]
        cand.append(store.read_json(c, "candidates.json")["indices"])
    pool_rewards = store.read_ragged(s["pool_rollouts"], "rewards")
    assert all(len(set(np.asarray(pool_rewards[i]).tolist())) > 1 for i in cand[0])  # drawn among the scorable only
    assert len(cand[0]) == 12 and len(cand[0]) < sum(len(set(np.asarray(r).tolist())) > 1 for r in pool_rewards)
    g0 = store.read_array(s["stages"][0]["grads"]["pool"], "grads")  # [48, 32]
    g0_full = store.read_array(full["stages"][0]["grads"]["pool"], "grads")  # [48, 32]
    scored = np.flatnonzero(~np.isnan(g0).any(axis=1))
    assert scored.tolist() == cand[0]
    np.testing.assert_array_equal(g0[scored], g0_full[scored])
    sel = [store.read_json(st["selection"], "selection.json")["indices"] for st in s["stages"]]
    assert set(sel[0]) <= set(cand[0]) and set(sel[1]) <= set(cand[1])
    assert set(sel[0]) <= set(cand[1])  # the previous selection is re-scored
    for name, key in s["stages"][0]["grads"].items():
        if name != "pool":
            assert key == full["stages"][0]["grads"][name]  # validation sketches: the same artifact, reused
    res = cli(*args)
    assert res.exit_code == 0 and summary_of(storage)["counts"]["computed"] == 0


def test_transient_faults_are_retried_to_identical_artifacts(coin, clean, tmp_path, monkeypatch):
    monkeypatch.setenv("CROPI_FAULT", "grads:1,train:1")
    storage = tmp_path / "store"
    res = cli("run", "--config", str(coin["config"]), "--storage", str(storage))
    assert res.exit_code == 0, res.output
    s = summary_of(storage)
    assert s["faults"] == 2 * (3 + 1) + 2  # every grads chunk once, each stage's training once
    from storage import open_store

    store = open_store(str(storage))
    for m in store.find("checkpoint"):
        if m.meta.get("steps"):  # the retry resumed from attempt 1's mid-stage save: its seconds are not all here
            assert m.meta["compute"]["attempt"] == 2 and m.meta["compute"]["partial"] is True
    for m in store.find("grads"):
        assert [c["attempt"] for c in m.meta["compute"]["chunks"]] == [2] * len(m.meta["compute"]["chunks"])
    assert s["counts"]["failed"] == 0
    assert s["final_checkpoint"] == clean["summary"]["final_checkpoint"]
    assert [st["selected_ids"] for st in s["stages"]] == [st["selected_ids"] for st in clean["summary"]["stages"]]
    assert [st["checkpoint"] for st in s["stages"]] == [st["checkpoint"] for st in clean["summary"]["stages"]]


def test_lineage_and_inspect_from_storage(clean):
    storage = str(clean["storage"])
    final = clean["summary"]["final_checkpoint"]
    res = cli("lineage", final[:10], "--storage", storage)
    assert res.exit_code == 0, res.output
    for kind in ("checkpoint", "selection", "scores", "grads", "rollouts", "dataset"):
        assert kind in res.output
    res = cli("inspect", final, "--storage", storage)
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    assert m["kind"] == "checkpoint" and m["key"] == final and len(m["parents"]) == 2


def _run_until(cmd: list[str], env: dict, marker: str, timeout: float = 300) -> tuple[str, bool]:
    """Run `cmd`; SIGKILL its process group as soon as a line containing `marker` appears.
    Returns (output so far, killed)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            start_new_session=True)
    lines, killed, deadline = [], False, time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            if time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return "".join(lines), killed


def test_resume_after_sigkill_in_grads_and_training(coin, clean, prefect_api, tmp_path):
    """Kill `cropi run` during stage-1 gradient chunks, then again during stage-1 training; the rerun
    recomputes only what is missing and ends with the uninterrupted run's checkpoint and selections."""
    import os
    import sys

    storage = tmp_path / "store"
    exe = Path(sys.executable).with_name("cropi")
    # --verbose: the kill points are Prefect's log lines, which the quiet console keeps in train.log
    cmd = [str(exe), "run", "--verbose", "--config", str(coin["config"]), "--storage", str(storage)]
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("CROPI_FAULT", None)

    out1, killed = _run_until(cmd, env, "grads pool stage 1: chunk 1/3 done")
    assert killed, out1[-3000:]
    from storage import open_store

    store = open_store(str(storage))
    assert not store.find("grads", meta={"stage": 1})  # stage-1 pool grads not sealed
    assert len(store.find("checkpoint")) == 2  # θ_0 and θ_1 only

    out2, killed = _run_until(cmd, env, "train stage 1: step 3/4")
    assert killed, out2[-3000:]
    assert "stage 1: grads pool: 2 of 3 chunks to compute" in out2  # chunk 0 survived the kill
    assert "grads pool stage 0" not in out2  # stage 0 entirely reused
    assert list((storage / "work" / "train").glob("*/checkpoints/checkpoint-2"))
    assert len(store.find("checkpoint")) == 2

    # the final run in a subprocess too: Prefect's console handler may hold a stream captured by an earlier
    # test in this process, so in-process log capture depends on test order
    text, killed = _run_until(cmd, env, "\0never\0")
    assert not killed and "report: " in text, text[-3000:]
    s = summary_of(storage)
    assert sorted(t for t, _ in s["computed"]) == ["evaluate", "evaluate", "train"]  # stage-1 train + its evals
    assert "train stage 1: step 4/4" in text and "train stage 1: step 1/4" not in text  # resumed mid-stage
    assert s["final_checkpoint"] == clean["summary"]["final_checkpoint"]
    assert [st["selected_ids"] for st in s["stages"]] == [st["selected_ids"] for st in clean["summary"]["stages"]]


def test_asset_events_carry_lineage(clean, prefect_api):
    """Each computed artifact was announced as a Prefect asset materialisation (key = artifact URI) with its
    parents as upstream assets: the final checkpoint's event names the previous checkpoint and the selection."""
    import time

    import httpx

    from storage import open_store
    from tasks.common import asset_key

    store = open_store(str(clean["storage"]))
    final = clean["summary"]["final_checkpoint"]
    want = asset_key(store.uri(final))
    body = {"filter": {"event": {"name": ["prefect.asset.materialization.succeeded"]},
                       "any_resource": {"id": [want]}}, "limit": 50}
    events = []
    for _ in range(30):  # the server ingests events asynchronously
        r = httpx.post(f"{prefect_api}/events/filter", json=body, timeout=10)
        r.raise_for_status()
        events = [e for e in r.json()["events"] if e["resource"]["prefect.resource.id"] == want]
        if events:
            break
        time.sleep(1)
    assert events, "no asset event for the final checkpoint"
    ev = events[0]
    assert ev["payload"]["kind"] == "checkpoint" and ev["payload"]["key"] == final
    upstream = {x["prefect.resource.id"] for x in ev["related"] if x.get("prefect.resource.role") == "asset"}
    parents = store.manifest(final).parents
    assert upstream == {asset_key(store.uri(p)) for p in parents} and len(parents) == 2


def test_step0_evaluations_finish_before_stage0_starts(coin, tmp_path, monkeypatch):
    """θ_0's evaluations run on the curriculum flow's runner and stage 0 on its own: on one machine they used to
    overlap, so stage 0's scoring recorded the evaluations' work in its compute seconds (the first run of a pool
    priced its stage-0 sketch ≈ 1.9× what it costs alone, docs/targeting.md), and `cropi compare` priced it so.
    With the local runner the evaluations now end before anything of stage 0 starts. Each evaluation is slowed by
    1 s here so that, without the wait, stage 0 (which starts within a second of the offline rollouts) overlaps
    them; every stage-0 artifact's start (created_at − its compute seconds) must follow the last θ_0 evaluation."""
    import time
    from datetime import datetime

    import cropi_core.evaluation as E
    from storage import open_store

    slow = E.evaluate

    def evaluate(*a, **k):
        time.sleep(1.0)
        return slow(*a, **k)

    monkeypatch.setattr(E, "evaluate", evaluate)
    storage = tmp_path / "store"
    res = cli("run", "--config", str(coin["config"]), "--storage", str(storage), "--set", "train.stages=1")
    assert res.exit_code == 0, res.output
    store = open_store(str(storage))
    base = summary_of(storage)["base_checkpoint"]
    when = lambda m: datetime.fromisoformat(m.created_at).timestamp()  # noqa: E731
    evals0 = [m for m in store.find("evaluation") if base in m.parents]
    stage0 = [m for m in store.find() if m.kind in ("calibration", "grads", "scores", "selection")
              and m.meta.get("stage") == 0]
    assert len(evals0) >= 2 and stage0, (len(evals0), [m.kind for m in stage0])
    last_eval = max(when(m) for m in evals0)
    first_start = min(when(m) - m.meta["compute"]["seconds"] for m in stage0)
    assert last_eval <= first_start, f"a θ_0 evaluation ended {last_eval - first_start:.2f} s into stage 0"
