"""`cropi run` end to end on a reduced budget: completes, reruns compute nothing (also without Prefect's cache
records: storage-first), a selection.ratio change reuses rollouts and gradients, injected transient faults in
the grads and train tasks are retried to the same final artifacts."""

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
    return {"storage": storage, "summary": summary_of(storage), "output": res.output}


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
    assert len(s["stages"]) == 2
    k = kinds(s)
    # datasets: pool, val, 2 tests; 1 base model; offline rollouts pool + val; 2 stages × (online rollouts,
    # grads pool + val, scores, selection, health, train, 2 evals) + 2 evals of θ_0
    assert k.count("train") == 2 and k.count("scores") == 2 and k.count("selection") == 2
    assert k.count("grads") == 4 and k.count("grads-chunk") == 2 * (3 + 1)
    assert k.count("rollouts") == 2 + 2 and k.count("evaluate") == 6 and k.count("bootstrap") == 1
    assert s["counts"]["failed"] == 0 and s["counts"]["cached"] == 0
    for st in s["stages"]:
        assert len(st["selected_ids"]) == 12  # ratio 0.25 of 48
    assert s["stages"][0]["checkpoint"] != s["stages"][1]["checkpoint"] == s["final_checkpoint"]


def test_second_run_computes_nothing(coin, clean):
    storage = clean["storage"]
    res = cli("run", "--config", str(coin["config"]), "--storage", str(storage))
    assert res.exit_code == 0, res.output
    s = summary_of(storage)
    c = s["counts"]
    assert c["computed"] == 0 and c["task_runs"] > 0
    assert c["cached"] == c["task_runs"]  # every task served from Prefect's cache (keyed by artifact key)
    assert s["final_checkpoint"] == clean["summary"]["final_checkpoint"]

    # without Prefect's cache records (a wiped PREFECT_HOME + result store): each task finds its artifact
    shutil.rmtree(storage / "work" / "prefect-results")
    res = cli("run", "--config", str(coin["config"]), "--storage", str(storage))
    assert res.exit_code == 0, res.output
    s = summary_of(storage)
    c = s["counts"]
    assert c["computed"] == 0 and c["cached"] == 0 and c["storage_hits"] == c["task_runs"] > 0
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


def test_transient_faults_are_retried_to_identical_artifacts(coin, clean, tmp_path, monkeypatch):
    monkeypatch.setenv("CROPI_FAULT", "grads:1,train:1")
    storage = tmp_path / "store"
    res = cli("run", "--config", str(coin["config"]), "--storage", str(storage))
    assert res.exit_code == 0, res.output
    s = summary_of(storage)
    assert s["faults"] == 2 * (3 + 1) + 2  # every grads chunk once, each stage's training once
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
