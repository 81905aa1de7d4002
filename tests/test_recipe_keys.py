"""Artifact keys must not move when the wiring around them changes: the keys of a cold run of the embedded
default (and of the shipped configs and a few variants that take other branches of the key functions) are
compared with a list recorded from main before the refactor (tests/data/recipe_keys.json).

No training runs: keys are functions of the config and the parents' keys. Where a parent is content-keyed and
only known after a run (every checkpoint: θ_0, θ_m, is the hash of its weight files), a fixed stand-in key is
used; the recorded list then pins the key *function* of every kind for that config. Keys computed from the
config alone (datasets, the bootstrap producer key) are the real keys of a cold run.

Regenerate (only when a key changes on purpose, with a format-version bump named in the commit):
    python tests/test_recipe_keys.py --write
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "tests" / "data" / "recipe_keys.json"

# (label, config file or None for the embedded default, dotted overrides)
CASES = [
    ("default", None, {}),
    ("flows_tiny", "tests/configs/flows_tiny.yaml", {}),
    ("tiny", "configs/tiny.yaml", {}),
    ("tiny-format", "configs/tiny-format.yaml", {}),
    ("qwen-paper", "configs/qwen2.5-1.5b-paper.yaml", {}),
    ("smollm2", "configs/smollm2-gsm8k.yaml", {}),
    ("default-random", None, {"selection.method": "random"}),
    ("default-full", None, {"selection.method": "full", "selection.mix_random": 0.2}),
    ("default-mix", None, {"selection.mix_random": 0.2}),
    ("default-uniform", None, {"influence.allocation": "uniform", "influence.projector": "sparse",
                              "influence.sparse_ratio": 0.1}),  # the default before grass + 0.25
    ("default-exact", None, {"influence.projector": "exact", "influence.seed": 3}),
    ("default-ratio", None, {"selection.ratio": 0.3}),
    ("default-candidates", None, {"influence.candidates": 3.0}),  # added with the candidates recipe
    # the paper's selection in one line: the keys the embedded default had before the fusion became the default
    ("default-paper", None, {"selection.fusion": "none", "selection.rescore": "every"}),
    ("tiny-conflict", "configs/tiny-conflict.yaml", {}),
    ("default-inner-cascade", None, {"influence.score": "inner", "influence.candidates": 2.0,
                                     "influence.candidates_by": "learnability"}),
    ("default-cosine-norm", None, {"influence.score": "cosine_norm", "influence.norm_power": 0.25}),
]


def fake(kind: str, name: str):
    from storage import ArtifactRef

    return ArtifactRef(kind=kind, key=hashlib.sha256(f"stand-in {name}".encode()).hexdigest(), uri=f"memory://{name}")


def case_keys(cfg, with_data: bool = True) -> dict[str, str]:
    """Every key a cold run of `cfg` computes, by kind and role, parents from stand-ins where content-keyed."""
    from tasks import dataset as D
    from tasks import evaluate as E
    from tasks import grads as G
    from tasks import rollouts as R
    from tasks import selection as S
    from tasks.recipes import base_key

    out: dict[str, str] = {}
    if with_data:
        out["bootstrap"] = base_key(cfg)
        from tasks.artifacts import set_names

        names = set_names(cfg)
        for role, sets in names.items():
            for n in sets:
                out[f"dataset/{role}/{n}"] = D.dataset_key(cfg, role=role, name=n)
    else:  # data files of real-model configs are not read here: the bootstrap key hashes no data for them
        if not cfg.model.is_embedded:
            out["bootstrap"] = base_key(cfg)
    ckpt, ckpt1 = fake("checkpoint", "theta0"), fake("checkpoint", "theta1")
    pool, val, test = fake("dataset", "pool"), fake("dataset", "val"), fake("dataset", "test")
    r_pool = fake("rollouts", "pool")
    out["rollouts/pool"] = R.rollouts_key(cfg, ckpt=ckpt, data=pool, k=cfg.rollout.num_generations)
    out["rollouts/val"] = R.rollouts_key(cfg, ckpt=ckpt, data=val, k=cfg.rollout.num_generations_val)
    sel0 = fake("selection", "s0")
    out["rollouts/online"] = R.rollouts_key(cfg, ckpt=ckpt, data=pool, k=cfg.rollout.num_generations, subset=sel0)
    calib = fake("calibration", "c0") if cfg.influence.allocation == "energy" else None
    out["calibration"] = G.calibration_key(cfg, ckpt=ckpt, pool_rollouts=r_pool)
    out["grads/pool"] = G.grads_key(cfg, ckpt=ckpt, rollouts=r_pool, calibration=calib)
    out["grads/pool/chunk1"] = G.chunk_key(cfg, ckpt=ckpt, rollouts=r_pool, chunk=1, calibration=calib)
    if cfg.influence.candidates is not None:
        cand = fake("candidates", "k1")
        for stage, prev in ((0, None), (1, fake("selection", "s0"))):
            out[f"candidates/s{stage}"] = S.CANDIDATES.key(cfg, pool_rollouts=r_pool, previous=prev, stage=stage)
        out["grads/pool/candidates"] = G.grads_key(cfg, ckpt=ckpt, rollouts=r_pool, calibration=calib, candidates=cand)
        out["grads/pool/candidates/chunk1"] = G.chunk_key(cfg, ckpt=ckpt, rollouts=r_pool, chunk=1, calibration=calib,
                                                          candidates=cand)
    g_pool, g_val = fake("grads", "pool"), {"val/b": fake("grads", "vb"), "val/a": fake("grads", "va")}
    out["scores"] = S.scores_key(cfg, pool_grads=g_pool, val_grads=g_val)
    sc = fake("scores", "s")
    for stage in (0, 1):
        out[f"selection/s{stage}"] = S.selection_key(cfg, stage=stage, pool=pool, pool_rollouts=r_pool, scores=sc)
        out[f"selection/s{stage}/unscored"] = S.selection_key(cfg, stage=stage, pool=pool, pool_rollouts=r_pool, scores=None)
        out[f"train/s{stage}"] = T_train_key(cfg, stage=stage, ckpt=ckpt, pool=pool, sel=sel0)
    out["health"] = S.health_key(cfg, ckpt=ckpt, pool_rollouts=r_pool, sel=sel0)
    out["pool_health"] = S.pool_health_key(cfg, ckpt=ckpt, pool_rollouts=r_pool)
    out["evaluation/s0"] = E.eval_key(cfg, ckpt=ckpt, data=test)
    out["evaluation/s1"] = E.eval_key(cfg, ckpt=ckpt1, data=test)
    return out


def T_train_key(cfg, **params):
    from tasks.train import train_key

    return train_key(cfg, **params)


def byot_keys(cfg) -> dict[str, str]:
    """`cropi select`'s imported artifacts (tasks/byot.py), from small fixed files written to a temp folder."""
    import tempfile

    from tasks import byot

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "pool.jsonl").write_text("".join(json.dumps({"id": i, "prompt": f"{i} + 1 =", "answer": str(i + 1)}) + "\n"
                                              for i in range(4)))
        (d / "dump").mkdir()
        (d / "dump" / "1.jsonl").write_text(json.dumps({"input": "1 + 1 =", "output": "2", "score": 1.0}) + "\n")
        (d / "model").mkdir()
        (d / "model" / "model.safetensors").write_bytes(b"not really weights")
        (d / "model" / "config.json").write_text("{}")
        ckpt, data = fake("checkpoint", "imported"), fake("dataset", "imported")
        return {"dataset": byot.import_dataset_key(cfg, path=str(d / "pool.jsonl"), name="pool", verifier="exact"),
                "rollouts/verl": byot.imported_rollouts_key(cfg, ckpt=ckpt, data=data, path=str(d / "dump"), fmt="verl"),
                "checkpoint": byot.import_key(cfg, path=str(d / "model"))}


def all_keys() -> dict[str, dict[str, str]]:
    from cropi_core.config import load_config

    out = {}
    for label, path, over in CASES:
        cfg = load_config(REPO / path if path else None, over, check_files=False)
        out[label] = case_keys(cfg, with_data=cfg.data.synthetic is not None)
        if not cfg.model.is_embedded:
            # a real model's producer key hashes its resolved local path (SmolLM2's GGUF lives inside .venv), so
            # it differs between checkouts: known, not pinned here (its checkpoint itself is keyed by its weights)
            out[label].pop("bootstrap", None)
    out["byot"] = byot_keys(load_config(None))
    return out


def test_keys_equal_recorded():
    recorded = json.loads(RECORD.read_text())
    now = all_keys()
    assert set(now) == set(recorded)
    diffs = [f"{case}:{role}" for case in now for role in set(now[case]) | set(recorded[case])
             if now[case].get(role) != recorded[case].get(role)]
    assert not diffs, f"artifact keys changed: {diffs}"


def test_full_data_selection_key_ignores_the_selection_knobs():
    """Full data trains on every pool prompt: ratio, seed, k_rrf and mix_random do not change its selection key (so a
    ratio sweep in `cropi compare` reuses the full-data runs), while they do change a scored method's."""
    from cropi_core.config import load_config
    from tasks import selection as S

    pool, rp, sc = fake("dataset", "pool"), fake("rollouts", "pool"), fake("scores", "s")
    key = lambda **over: S.selection_key(load_config(None, {f"selection.{k}": v for k, v in over.items()}),  # noqa: E731
                                         stage=1, pool=pool, pool_rollouts=rp, scores=None if over.get("method") == "full" else sc)
    full = key(method="full")
    assert full == key(method="full", ratio=0.1) == key(method="full", seed=4, k_rrf=60.0, mix_random=0.2)
    assert key(method="popi") != key(method="popi", ratio=0.1)


def test_recipe_table_is_documented():
    """storage/README.md's recipe table names every recipe with its kind and parents (tasks/recipes.py)."""
    from tasks.recipes import RECIPES

    import re

    text = (REPO / "storage" / "README.md").read_text()
    cells = [re.split(r"(?<!\\)\|", line) for line in text.splitlines() if line.startswith("| `")]
    rows = {c[1].strip(" `"): [x.strip() for x in c[2:4]] for c in cells}
    assert set(rows) == set(RECIPES)
    for name, r in RECIPES.items():
        kind, parents = rows[name]
        assert kind.split(" ")[0] == r.kind, name
        assert parents.replace("\\|", "|") == (", ".join(r.parents) or "–"), name


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    if "--write" in sys.argv:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(all_keys(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {RECORD}")
