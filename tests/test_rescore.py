"""Scoring rules, the learnability cascade and drift-triggered re-scoring through the real flow: a reduced
run per setting on one storage root, so stage 0's shared artifacts (θ_0, offline rollouts, validation sketches)
are computed once and reused by the next setting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import flows_helpers as H
from flows.cli import app
from storage import open_store


@pytest.fixture(scope="module")
def coin(tmp_path_factory, prefect_api):
    yield from H.coin_setup(tmp_path_factory, "coin-rescore")


def _run(coin: dict, name: str, *sets: str) -> dict:
    args = ["run", "--config", str(coin["config"]), "--storage", str(coin["storage"]), "--name", name]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads((coin["storage"] / "runs" / name / "summary.json").read_text())


def _kinds(summary: dict) -> list[str]:
    return sorted(t for t, _ in summary["computed"])


@pytest.fixture(scope="module")
def paper(coin):
    return _run(coin, "paper")


def test_drift_check_that_does_not_fire_keeps_the_selection_and_scores_nothing(coin, paper):
    """drift_ess 0: ESS/K is never below 0, so stage 1 trains on stage 0's selection; no stage-1 sketch or score
    is computed, only the health check on the kept selection, which is also the stage's own health report (stage 0
    is the paper run's, reused)."""
    s = _run(coin, "drift-keep", "selection.rescore=drift", "selection.drift_ess=0.0")
    (rec,) = s["rescores"]
    assert rec["stage"] == 1 and rec["rescored"] is False and 0.0 < rec["ess_frac"] <= 1.0
    assert s["stages"][1]["selection"] == s["stages"][0]["selection"] == paper["stages"][0]["selection"]
    assert s["stages"][1]["grads"] == {}
    k = _kinds(s)
    assert "grads" not in k and "scores" not in k and "selection" not in k  # stage 0 reused, stage 1 kept
    assert rec["health"] in {key for _, key in s["computed"]}


def test_drift_check_that_fires_rescores_like_the_paper(coin, paper):
    """drift_ess 1: any policy change (ESS/K < 1) re-scores, so stage 1 is the paper schedule's stage 1 exactly —
    the same selection and checkpoint keys, all reused from the paper run."""
    s = _run(coin, "drift-fire", "selection.rescore=drift", "selection.drift_ess=1.0",
             "selection.rescore_reliability=null")
    (rec,) = s["rescores"]
    assert rec["rescored"] is True and rec["ess_frac"] < 1.0 and rec["kept_unreliable"] is False
    assert [st["selection"] for st in s["stages"]] == [st["selection"] for st in paper["stages"]]
    assert s["final_checkpoint"] == paper["final_checkpoint"]
    # nothing else to compute: at most the health check (the drift-keep test may have made it already)
    assert {t for t, _ in s["computed"]} <= {"health"}
    assert open_store(str(coin["storage"])).exists(rec["health"])


def test_reliability_guard_keeps_the_previous_selection_below_its_threshold(coin, paper):
    """The drift check fires (drift_ess 1), stage 1 re-scores (its sketches and scores are the paper run's stage 1,
    reused), and its split-half reliability, which a ranking reaches only if both halves of the validation set order
    the pool identically, is below the threshold 1.0: stage 1 trains on stage 0's selection, exactly as the
    once-schedule does (same selection and checkpoint keys)."""
    s = _run(coin, "guard-keep", "selection.rescore=drift", "selection.drift_ess=1.0",
             "selection.rescore_reliability=1.0")
    once = _run(coin, "once", "selection.rescore=once")
    (rec,) = s["rescores"]
    assert rec["rescored"] is True and rec["kept_unreliable"] is True and rec["reliability"] < 1.0
    assert s["stages"][1]["scores"] == paper["stages"][1]["scores"]  # paid for, then not trained on
    assert s["stages"][1]["selection"] == s["stages"][0]["selection"] != paper["stages"][1]["selection"]
    assert s["final_checkpoint"] == once["final_checkpoint"]
    assert s["stages"][1]["reliability"] == rec["reliability"] and s["stages"][0]["reliability"] is not None
    assert "Below selection.rescore_reliability" in (coin["storage"] / "runs" / "guard-keep" / "stage_1.md").read_text()
    # benchmarks/rescore_reliability.py finds the same sketches through the scores' manifest and gets the same value
    from benchmarks.rescore_reliability import rankings

    found = {r["key"]: r["reliability"] for r in rankings(str(coin["storage"]))}
    for st in s["stages"]:
        assert found[st["scores"][:12]] == pytest.approx(st["reliability"], abs=1e-12)


def test_reliability_guard_reads_the_gates_probe_and_never_sketches_the_whole_pool(coin, paper):
    """With the conflict gate on (firing at stage 0, so stage 0 is the paper run's), the drift check fires before
    stage 1 and the gate's probe at θ_1 is sketched; its ranking's split-half reliability is below the threshold
    1.0, so stage 1 keeps stage 0's selection without taking the gate's decision and without sketching the whole
    pool: stage 1 has validation sketches only, and trains exactly the once-schedule's stage 1."""
    s = _run(coin, "guard-probe", "selection.rescore=drift", "selection.drift_ess=1.0",
             "selection.rescore_reliability=1.0", "selection.gate_probe=12", "selection.gate_score=0.01",
             "selection.gate_share=0.01")
    once = _run(coin, "once", "selection.rescore=once")
    (rec,) = s["rescores"]
    st1 = s["stages"][1]
    assert rec["rescored"] is True and rec["kept_unreliable"] is True and rec["reliability"] < 1.0
    assert s["stages"][0]["selection"] == paper["stages"][0]["selection"] == st1["selection"]
    assert "pool" not in st1["grads"] and st1["scores"] is None  # the whole pool was never sketched at θ_1
    assert {"probe", "probe_grads", "probe_scores", "gate", "drift"} <= set(st1["shaping"])
    assert s["final_checkpoint"] == once["final_checkpoint"]
    store = open_store(str(coin["storage"]))
    g = store.read_array(st1["shaping"]["probe_grads"], "grads")
    assert (~np.isnan(g).any(axis=1)).sum() == 12  # only the probe's rows were sketched
    report = (coin["storage"] / "runs" / "guard-probe" / "report.md").read_text()
    assert "Conflict gate, stage 1: not decided" in report and "Conflict gate, stage 0: " in report


def test_reliability_guard_at_its_lowest_threshold_trains_on_the_rescore(coin, paper):
    """Threshold −1 (every correlation passes): the guarded drift run is the paper schedule's run, key for key."""
    s = _run(coin, "guard-pass", "selection.rescore=drift", "selection.drift_ess=1.0",
             "selection.rescore_reliability=-1.0")
    (rec,) = s["rescores"]
    assert rec["kept_unreliable"] is False and -1.0 <= rec["reliability"] <= 1.0
    assert s["final_checkpoint"] == paper["final_checkpoint"]


def test_rescore_once_reuses_stage_0(coin, paper):
    s = _run(coin, "once", "selection.rescore=once")
    assert s["stages"][1]["selection"] == s["stages"][0]["selection"] and s["rescores"] == []


def test_cascade_sketches_only_the_learnability_candidates_and_inner_scores_them(coin, paper):
    """candidates 1 by learnability + the inner-product rule: stage 0 sketches exactly the top ⌈1 × 12⌉ scorable
    pool prompts by p(1−p) (bit-identical rows to the paper run's full sketch, every other row NaN: never
    computed), the validation sketches are the paper run's (reused), the scores artifact is keyed by its rule,
    and the selection comes from the candidates."""
    from cropi_core.selection import learnability_candidates
    from tasks.artifacts import pass_rates

    s = _run(coin, "cascade", "influence.candidates=1", "influence.candidates_by=learnability",
             "influence.score=inner")
    store = open_store(str(coin["storage"]))
    g0 = store.read_array(s["stages"][0]["grads"]["pool"], "grads")  # [48, 32]
    full = store.read_array(paper["stages"][0]["grads"]["pool"], "grads")  # [48, 32]
    rewards = store.read_ragged(s["pool_rollouts"], "rewards")
    scorable = np.array([len(set(np.asarray(r).tolist())) > 1 for r in rewards])
    want = learnability_candidates(pass_rates(store, s["pool_rollouts"]), scorable, 12)
    computed_rows = np.flatnonzero(~np.isnan(g0).any(axis=1)).tolist()
    assert computed_rows == want and len(want) == 12 < int(scorable.sum())
    np.testing.assert_array_equal(g0[want], full[want])
    for name, key in s["stages"][0]["grads"].items():
        if name != "pool":
            assert key == paper["stages"][0]["grads"][name]
    scores = store.manifest(store.manifest(s["stages"][0]["selection"]).parents[1])
    assert scores.kind == "scores" and scores.config == {"score": "inner"}
    assert store.manifest(store.manifest(paper["stages"][0]["selection"]).parents[1]).config == {}
    sel = store.read_json(s["stages"][0]["selection"], "selection.json")["indices"]
    assert len(sel) == 12 and set(sel) <= set(want)


def test_learnability_rrf_fusion_keys_and_ranks(coin, paper):
    """fusion learnability_rrf: the scores artifact is the paper run's (reused), the selection is keyed by the
    fusion and holds the top 12 of the fused ranking of POPI and p(1−p)."""
    from cropi_core.selection import fused_influence
    from tasks.artifacts import pass_rates

    s = _run(coin, "rrf", "selection.fusion=learnability_rrf")
    store = open_store(str(coin["storage"]))
    sel0 = store.manifest(s["stages"][0]["selection"])
    assert sel0.parents[1] == store.manifest(paper["stages"][0]["selection"]).parents[1]  # same scores artifact
    assert sel0.config["selection"]["fusion"] == "learnability_rrf" and sel0.config["selection"]["k_fusion"] == 60.0
    popi = store.read_array(sel0.parents[1], "popi")  # [1, 48]
    f = fused_influence(popi, pass_rates(store, s["pool_rollouts"]), k=60.0)
    order = [int(i) for i in np.argsort(-np.nan_to_num(f, nan=-np.inf), kind="stable")[:12]]
    assert store.read_json(s["stages"][0]["selection"], "selection.json")["indices"] == order


def test_ess_aware_scores_weigh_the_paper_scores_by_each_prompts_ess(coin, paper):
    """influence.ess_power 2: stage 0 is the paper run's (θ_0 = β, no weighting, same keys); stage 1 reuses the
    paper run's stage-1 sketches, computes a pool-health artifact of θ_1 (ESS/K of every pool prompt) and a new
    scores artifact whose lists are the paper's stage-1 POPI × (ESS/K)^2, keyed by the power and the health parent."""
    s = _run(coin, "ess", "influence.ess_power=2.0")
    store = open_store(str(coin["storage"]))
    assert s["stages"][0]["selection"] == paper["stages"][0]["selection"]
    assert s["stages"][1]["grads"] == paper["stages"][1]["grads"]  # the sketches do not depend on the power
    sc1, sc1_paper = s["stages"][1]["scores"], paper["stages"][1]["scores"]
    assert sc1 != sc1_paper
    m = store.manifest(sc1)
    assert m.config == {"ess_power": 2.0}
    (health_key,) = [k for k in m.parents if k not in store.manifest(sc1_paper).parents]
    assert store.manifest(health_key).kind == "health" and store.manifest(health_key).config["prompts"] == "all"
    ess_frac = np.asarray(store.read_json(health_key, "health.json")["ess_frac"])  # [48]
    assert ess_frac.shape == (48,) and np.all((ess_frac > 0) & (ess_frac <= 1 + 1e-9)) and ess_frac.min() < 1.0
    # expected: each finite paper score times its prompt's ESS/K squared; NaN (unscorable) rows stay NaN
    expected = store.read_array(sc1_paper, "popi").astype(np.float64) * np.clip(ess_frac, 0, 1) ** 2
    got = store.read_array(sc1, "popi").astype(np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-6, atol=1e-7)
    kinds = _kinds(s)
    assert "grads" not in kinds and "health" in kinds and "scores" in kinds


def test_quiet_conflict_gate_sketches_only_its_probe_and_is_learnabilitys_run(coin, paper):
    """gate_probe 12 with a bar no probe can reach (all of it conflicting): stage 0 sketches exactly a seeded
    random 12 scorable pool prompts (bit-identical rows to the paper run's full sketch, every other row NaN:
    never computed), the gate does not fire, and from there the run is method learnability's key for key — its
    selections and checkpoints reused from a learnability run on the same root, nothing trained again; stage 1
    keeps the selection (no drift check, no sketch, no score)."""
    from cropi_core.selection import conflict_gate

    learn = _run(coin, "learnability", "selection.method=learnability")
    s = _run(coin, "gate-quiet", "selection.gate_probe=12", "selection.gate_share=1.0")
    store = open_store(str(coin["storage"]))
    st0 = s["stages"][0]
    assert "pool" not in st0["grads"]  # the whole pool was never sketched
    for name, key in st0["grads"].items():
        assert key == paper["stages"][0]["grads"][name]  # validation sketches: the paper run's, reused
    shaping = st0["shaping"]
    assert set(shaping) == {"probe", "probe_grads", "probe_scores", "gate"}
    probe = store.read_json(shaping["probe"], "candidates.json")["indices"]
    g = store.read_array(shaping["probe_grads"], "grads")  # [48, 32]
    full = store.read_array(paper["stages"][0]["grads"]["pool"], "grads")  # [48, 32]
    assert np.flatnonzero(~np.isnan(g).any(axis=1)).tolist() == probe and len(probe) == 12
    np.testing.assert_array_equal(g[probe], full[probe])
    gate = store.read_json(shaping["gate"], "gate.json")
    popi = store.read_array(shaping["probe_scores"], "popi")  # [1, 48], NaN off the probe
    want = conflict_gate(popi, 3.0, 1.0)
    assert gate == {"fires": False, "probed": 12, "share": want.share, "threshold": want.threshold,
                    "conflicting": want.conflicting}
    assert [st["selection"] for st in s["stages"]] == [st["selection"] for st in learn["stages"]]
    assert s["final_checkpoint"] == learn["final_checkpoint"]
    assert s["rescores"] == [] and s["stages"][1]["grads"] == {}
    assert {t for t, _ in s["computed"]} <= {"probe", "grads-chunk", "grads", "scores", "gate"}  # nothing trained
    report = (coin["storage"] / "runs" / "gate-quiet" / "report.md").read_text()
    assert "Conflict gate, stage 0: " in report and "of 12 probed pool prompts" in report and "**quiet**" in report


def test_conflict_gate_that_fires_ranks_the_whole_pool_with_the_ungated_keys(coin, paper):
    """gate_probe 12 with a bar any conflicting prompt passes (gate_score 0.01 robust SDs below the median: about
    half of the probe; gate_share 0.01, one prompt of 12): the gate fires, and every stage is the paper run's
    exactly (same sketch, scores, selection and checkpoint keys, reused), the probe and the gate added to stage
    0's scoring."""
    s = _run(coin, "gate-fire", "selection.gate_probe=12", "selection.gate_score=0.01", "selection.gate_share=0.01")
    store = open_store(str(coin["storage"]))
    shaping = s["stages"][0]["shaping"]
    popi = store.read_array(shaping["probe_scores"], "popi")
    assert np.nanmin(popi) < np.nanmedian(popi), "premise: the probe's scores are not all equal"
    assert store.read_json(shaping["gate"], "gate.json")["fires"] is True
    assert [st["selection"] for st in s["stages"]] == [st["selection"] for st in paper["stages"]]
    assert s["stages"][0]["grads"] == paper["stages"][0]["grads"]
    assert s["final_checkpoint"] == paper["final_checkpoint"]
    assert {t for t, _ in s["computed"]} <= {"probe", "grads-chunk", "grads", "scores", "gate"}
