"""`model.dtype` and `train.mixed_precision` reach every model task, and keys say so.

A reduced curriculum runs with `model.dtype: bfloat16` and `train.mixed_precision: bf16` on the CPU. Every model
task records in its artifact's meta what its model computed in (`ran_on`, observed on the loaded parameters, or
for training on the logits of the policy's output layer), so each task kind is checked from storage, as a user
would check it in `cropi inspect`.
"""

from __future__ import annotations

import pytest

import flows_helpers as H
from cropi_core.config import load_config

MODEL_KINDS = ("rollouts", "calibration", "grads", "health", "evaluation")


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, prefect_api):
    for setup in H.coin_setup(tmp_path_factory, "bf16", **{
            "model.dtype": "bfloat16", "train.mixed_precision": "bf16",
            # energy allocation adds the calibration task, drift re-scoring the health task
            "influence.projector": "grass", "influence.allocation": "energy", "influence.sketch_dim": 64,
            "selection.rescore": "drift"}):
        from flows.curriculum import curriculum

        cfg = load_config(setup["config"], {"storage.root": str(setup["storage"])})
        summary = curriculum(cfg)
        from tasks.common import get_store

        yield {"cfg": cfg, "summary": summary, "store": get_store(cfg), **setup}


def test_every_model_task_ran_in_bfloat16(bf16_run):
    store = bf16_run["store"]
    seen = {}
    for kind in MODEL_KINDS:
        for m in store.find(kind):
            seen.setdefault(kind, []).append((m.meta or {}).get("ran_on"))
    assert set(seen) == set(MODEL_KINDS), f"the run made no artifact of {set(MODEL_KINDS) - set(seen)}"
    for kind, records in seen.items():
        assert all(r == {"dtype": "bfloat16", "device": "cpu"} for r in records), (kind, records)


def test_training_computed_in_bf16_over_float32_weights(bf16_run):
    trained = [m for m in bf16_run["store"].find("checkpoint") if (m.meta or {}).get("stage", 0) > 0]
    assert len(trained) == 2  # 2 stages
    for m in trained:
        # autocast: the logits come out in bfloat16 while the optimizer keeps float32 master weights
        assert m.meta["ran_on"] == {"dtype": "bfloat16", "device": "cpu", "weights": "float32"}, m.meta


def test_checkpoints_load_in_the_run_dtype_with_their_own_tokenizer(bf16_run):
    import torch

    from tasks.artifacts import load_checkpoint

    cfg, store = bf16_run["cfg"], bf16_run["store"]
    for m in store.find("checkpoint"):
        model, tok = load_checkpoint(cfg, store.ref(m.key))
        assert next(model.parameters()).dtype == torch.bfloat16
        assert tok.padding_side == "left" and tok.pad_token is not None
        f32, _ = load_checkpoint(cfg.model_copy(update={"model": cfg.model.model_copy(update={"dtype": "float32"})}),
                                 store.ref(m.key))
        assert next(f32.parameters()).dtype == torch.float32


def test_dtype_changes_every_model_artifact_key(bf16_run):
    from tasks.recipes import base_key

    cfg = bf16_run["cfg"]
    f32 = cfg.model_copy(update={"model": cfg.model.model_copy(update={"dtype": "float32"})})
    # the base key carries the dtype, and every later key chains on the checkpoint key
    assert base_key(cfg) != base_key(f32)
