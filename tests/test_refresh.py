"""Behavior refresh (`influence.refresh_ess`): when the mean ESS/K of θ_m on the pool's stored responses falls
below the threshold, stage m's offline rollouts are resampled from θ_m as a new cached artifact whose parent is
θ_m; a rerun recomputes nothing; off by default (no pool-health task, β's rollouts throughout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows_helpers as H
from flows.cli import app
from storage import open_store


@pytest.fixture(scope="module")
def coin(tmp_path_factory, prefect_api):
    # threshold 1.0: any policy change since β (ESS/K < 1) triggers the refresh before stage 1
    yield from H.coin_setup(tmp_path_factory, "coin-refresh", **{"influence.refresh_ess": 1.0})


def _run(config: Path, storage: Path) -> dict:
    res = CliRunner().invoke(app, ["run", "--config", str(config), "--storage", str(storage)])
    assert res.exit_code == 0, res.output
    return json.loads((storage / "runs" / "coin" / "summary.json").read_text())


def test_refresh_resamples_from_the_stage_checkpoint_and_reruns_compute_nothing(coin, tmp_path):
    storage = tmp_path / "store"
    s = _run(coin["config"], storage)
    (ref,) = s["refreshes"]  # stage 1 only (stage 0 scores θ_0 = β)
    assert ref["stage"] == 1 and ref["refreshed"] and ref["ess_frac"] < 1.0
    theta_1 = s["stages"][0]["checkpoint"]
    assert ref["behaviour_checkpoint"] == theta_1
    store = open_store(str(storage))
    new_pool = store.manifest(ref["pool_rollouts"])
    assert new_pool.kind == "rollouts" and theta_1 in new_pool.parents
    assert ref["pool_rollouts"] != s["pool_rollouts"]
    for name, key in ref["val_rollouts"].items():
        assert theta_1 in store.manifest(key).parents and key != s["val_rollouts"][name]
    # stage 1's gradients are computed on the refreshed rollouts (lineage: grads → rollouts → θ_1)
    g1 = store.manifest(s["stages"][1]["grads"]["pool"])
    assert ref["pool_rollouts"] in g1.parents
    computed = {k for _, k in s["computed"]}
    assert ref["pool_rollouts"] in computed and ref["health"] in computed

    again = _run(coin["config"], storage)
    assert again["counts"]["computed"] == 0
    assert again["refreshes"] == s["refreshes"] and again["final_checkpoint"] == s["final_checkpoint"]


def test_refresh_off_by_default_and_not_in_keys():
    from cropi_core.config import RunConfig

    cfg = RunConfig()
    assert cfg.influence.refresh_ess == 0.0
    assert "refresh_ess" not in cfg.hashable("influence")
