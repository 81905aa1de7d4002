"""Every `RunConfig` field reaches the code, or says why not; `model.dtype` and `train.mixed_precision` reach every
model task.

Two reduced curricula run for real with every read of a config field recorded (`Section.__getattribute__`
wrapped for the duration of the runs; validators' own reads do not count):
- "coin": a local model folder, file datasets, energy sketches, drift re-scoring, an explicit storage.verify, and
  `model.dtype: bfloat16` + `train.mixed_precision: bf16`;
- "tiny": the embedded model with its warm-up on synthetic data, random selection.
`cropi_core/config_fields.py` says, for each leaf field, its role and when it is read; the tests check that
table against the model, the keys and what the runs read. Every model task records in its artifact's meta what
its model computed in (`ran_on`), so bf16 is checked from storage, as a user would check it with `cropi inspect`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import flows_helpers as H
from cropi_core import config as C
from cropi_core.config import RunConfig, Section, load_config
from cropi_core.config_fields import FIELDS, ROLES, WHEN

REPO = Path(__file__).resolve().parents[1]
MODEL_KINDS = ("rollouts", "calibration", "grads", "health", "evaluation")


def leaf_fields(model=None, prefix: str = ""):
    """(dotted path, section class, field name) of every leaf field, in declaration order."""
    model = model if model is not None else RunConfig()
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Section):
            yield from leaf_fields(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", type(model), name


class Reads:
    """Records (section class name, field) for every field read while active, except validators' own reads."""

    def __init__(self):
        self.seen: set[tuple[str, str]] = set()

    def __enter__(self):
        seen, config_file, get = self.seen, C.__file__, object.__getattribute__

        def traced(obj, name):
            value = get(obj, name)
            if name in type(obj).model_fields:
                caller = sys._getframe(1).f_code
                if not (caller.co_filename == config_file and caller.co_name.startswith("_")):
                    seen.add((type(obj).__name__, name))
            return value

        Section.__getattribute__ = traced
        return self

    def __exit__(self, *exc):
        del Section.__getattribute__


def traced_run(cfg: RunConfig):
    from flows.curriculum import curriculum

    with Reads() as reads:
        summary = curriculum(cfg)
    return summary, reads.seen


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_api):
    import torch

    from tasks.common import get_store

    out = {}
    for setup in H.coin_setup(tmp_path_factory, "reach", **{
            "model.dtype": "bfloat16", "train.mixed_precision": "bf16",
            # energy allocation adds the calibration task, drift re-scoring the health task (drift_ess 1: it fires,
            # so stage 1 re-scores and the reliability guard reads its threshold)
            "influence.projector": "grass", "influence.allocation": "energy", "influence.sketch_dim": 64,
            "selection.rescore": "drift", "selection.drift_ess": 1.0, "storage.verify": "sampled"}):
        cfg = load_config(setup["config"], {"storage.root": str(setup["storage"])})
        summary, seen = traced_run(cfg)
        out["coin"] = {"cfg": cfg, "summary": summary, "store": get_store(cfg), "reads": seen}
        # the embedded model: a 10-step warm-up gives no scorable prompts, so random selection (POPI ran above)
        tiny = load_config(REPO / "tests" / "configs" / "flows_tiny.yaml", {
            "storage.root": str(setup["root"] / "tiny-store"), "bootstrap.steps": 10, "selection.method": "random",
            "selection.fusion": "none", "train.stages": 1, "train.steps_per_stage": 2})
        assert torch.get_num_threads() == 1
        summary, seen = traced_run(tiny)
        out["tiny"] = {"cfg": tiny, "summary": summary, "reads": seen}
    return out


# ---------------------------------------------------------------- the field table against the model and the runs
def test_the_table_has_exactly_the_config_fields():
    paths = [p for p, _, _ in leaf_fields()]
    missing = [p for p in paths if p not in FIELDS]
    assert not missing, f"fields without a row in cropi_core/config_fields.FIELDS: {missing}"
    assert not set(FIELDS) - set(paths), f"rows for fields that no longer exist: {set(FIELDS) - set(paths)}"
    assert {r for r, _ in FIELDS.values()} <= set(ROLES) and {w for _, w in FIELDS.values()} <= set(WHEN)


def test_roles_agree_with_the_keys():
    top = RunConfig.HASH_EXCLUDE
    for path, section, name in leaf_fields():
        role, _ = FIELDS[path]
        excluded = name in section.HASH_EXCLUDE or path.split(".")[0] in top and "." in path or path in top
        if role == "values":
            # hashed with its section, or (excluded there) held by another artifact's key (Section.HASH_ELSEWHERE)
            assert not excluded or name in section.HASH_ELSEWHERE, f"{path}: changes values but no key hashes it"
        else:
            assert excluded, f"{path}: role {role!r} ({ROLES[role]}) but its section hashes it into keys"


def test_every_field_is_read_where_its_condition_holds(runs):
    unread = []
    for path, section, name in leaf_fields():
        _, when = FIELDS[path]
        holds, _ = WHEN[when]
        for label, run in runs.items():
            if holds(run["cfg"]) and (section.__name__, name) not in run["reads"]:
                unread.append(f"{path} ({when}) in the {label} run")
    assert not unread, f"fields the code never read although their condition held: {unread}"


def test_fields_of_unmet_conditions_are_read_by_their_module(runs):
    for when, (holds, module) in WHEN.items():
        if any(holds(r["cfg"]) for r in runs.values()):
            continue  # checked by the runs
        tree = ast.parse((REPO / module).read_text())
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        for path, (_, w) in FIELDS.items():
            if w == when:
                assert path.rsplit(".", 1)[-1] in names, f"{path} ({when}): {module} never reads it"


def test_the_trace_tells_read_from_unread(runs):
    # the recorder is not vacuous: fields of conditions the runs do not meet stay unread
    for label, run in runs.items():
        assert ("TrainConfig", "vllm_mode") not in run["reads"] and ("RunnerConfig", "address") not in run["reads"]
    assert ("TinyModelConfig", "hidden_size") not in runs["coin"]["reads"]
    assert ("TinyModelConfig", "hidden_size") in runs["tiny"]["reads"]


# ---------------------------------------------------------------- bf16 end to end
@pytest.fixture(scope="module")
def bf16_run(runs):
    return runs["coin"]


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
