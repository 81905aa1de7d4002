"""Artifact keys and content hashes: stable across processes and hash seeds; every output field counts."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cropi_core.config import RolloutConfig, RunConfig, Section
from storage import StorageError, artifact_key, canonical_json, checkpoint_hash, dataset_hash

PARENT = "a" * 64
CONFIG = {"temperature": 0.5, "seed": 3, "z": {"b": [1, 2.5, "x"], "a": None}, "name": "ünïcode", "flag": True}


def _key(config=CONFIG, parents=(PARENT,), kind="rollouts", version=1):
    return artifact_key(kind, parents=list(parents), config=config, version=version)


def test_key_is_sha256_hex_and_ignores_dict_order():
    k = _key()
    assert len(k) == 64 and all(c in "0123456789abcdef" for c in k)
    reordered = dict(reversed(list(CONFIG.items())))
    reordered["z"] = {"a": None, "b": [1, 2.5, "x"]}
    assert _key(reordered) == k
    assert canonical_json({"b": 1, "a": (1, 2)}) == '{"a":[1,2],"b":1}'


def test_key_stable_across_processes_and_hash_seeds():
    code = ("from storage import artifact_key; import json,sys; "
            f"print(artifact_key('rollouts', parents=[{PARENT!r}], config=json.loads(sys.argv[1])))")
    import json
    keys = set()
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code, json.dumps(CONFIG)], env=env, capture_output=True,
                             text=True, check=True, cwd=Path(__file__).parents[1])
        keys.add(out.stdout.strip())
    assert keys == {_key()}


def test_kind_version_parents_change_key():
    k = _key()
    assert _key(kind="grads") != k
    assert _key(version=2) != k
    assert _key(parents=[]) != k
    assert _key(parents=[PARENT, "b" * 64]) != _key(parents=["b" * 64, PARENT]) != k


def _perturb(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v + 0.5
    if isinstance(v, str):
        return v + "_x"
    if v is None:
        return 1
    if isinstance(v, list):
        return v + [None]
    if isinstance(v, dict):
        return {**v, "_extra": 1}
    raise AssertionError(type(v))


def _sections():
    cfg = RunConfig()
    return [(n, getattr(cfg, n)) for n in type(cfg).model_fields if isinstance(getattr(cfg, n), Section)]


@pytest.mark.parametrize("name,section", _sections(), ids=[n for n, _ in _sections()])
def test_every_hashed_field_changes_key_and_excluded_fields_do_not(name, section):
    base = section.hashable()
    k0 = artifact_key(name, parents=[PARENT], config=base)
    for field, value in base.items():
        assert artifact_key(name, parents=[PARENT], config={**base, field: _perturb(value)}) != k0, f"{name}.{field}"
    for field in section.HASH_EXCLUDE:
        value = getattr(section, field)
        new = _perturb(value) if value is not None else 3
        changed = section.model_copy(update={field: new})
        assert getattr(changed, field) != value
        assert artifact_key(name, parents=[PARENT], config=changed.hashable()) == k0, f"{name}.{field}"


def test_rollout_batch_size_temperature_and_seed_change_the_key():
    # the batch shares one sampling RNG stream, so the batch size determines which responses are drawn
    r = RolloutConfig()
    k = artifact_key("rollouts", parents=[PARENT], config=r.hashable())
    assert artifact_key("rollouts", parents=[PARENT], config=RolloutConfig(batch_size=7).hashable()) != k
    assert artifact_key("rollouts", parents=[PARENT], config=RolloutConfig(temperature=0.9).hashable()) != k
    assert artifact_key("rollouts", parents=[PARENT], config=RolloutConfig(seed=1).hashable()) != k


def test_bad_key_inputs_are_one_line_storage_errors():
    for bad in ({"x": float("nan")}, {"x": {1, 2}}, {"x": object()}, {1: 2}):
        with pytest.raises(StorageError) as e:
            _key(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(StorageError, match="invalid artifact key"):
        _key(parents=["../etc"])
    with pytest.raises(StorageError, match="invalid artifact kind"):
        _key(kind="Bad Kind")
    assert _key({"x": np.int64(3)}) == _key({"x": 3})


def test_dataset_hash_normalises_field_order_but_not_content():
    recs = [{"id": "a/1", "prompt": "1+1", "gold": "2"}, {"id": "a/2", "prompt": "2+2", "gold": "4"}]
    h = dataset_hash(recs)
    assert dataset_hash([dict(reversed(list(r.items()))) for r in recs]) == h
    assert dataset_hash(recs[::-1]) != h
    assert dataset_hash([recs[0], {**recs[1], "gold": "5"}]) != h


def test_checkpoint_hash_covers_weights_config_tokenizer_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x01" * 100)
    (tmp_path / "config.json").write_text('{"hidden": 8}')
    (tmp_path / "tokenizer.json").write_text('{"v": 1}')
    (tmp_path / "README.md").write_text("notes")
    h = checkpoint_hash(tmp_path)
    (tmp_path / "README.md").write_text("other notes")
    (tmp_path / "trainer_state.json").write_text("{}")
    assert checkpoint_hash(tmp_path) == h
    for name, data in (("model.safetensors", b"\x02" * 100), ("config.json", '{"hidden": 9}'), ("tokenizer.json", "{}")):
        old = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        assert checkpoint_hash(tmp_path) != h, name
        (tmp_path / name).write_bytes(old)
    assert checkpoint_hash(tmp_path) == h
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(StorageError, match="no weight files"):
        checkpoint_hash(tmp_path)


def test_storage_is_pure_no_torch_prefect_or_pickle():
    code = ("import sys; import storage, storage.registry, storage.gc; "
            "bad = [m for m in ('torch', 'prefect', 'transformers') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "[]"
    src = Path(__file__).parents[1] / "storage"
    for f in src.glob("*.py"):
        text = f.read_text()
        assert "import pickle" not in text and "torch" not in text.replace("no torch", ""), f.name


def test_store_reduces_to_its_url(tmp_path):
    """Workers (Ray, Prefect) receive a Store as (URL, options) and reopen it (copy uses the same __reduce__)."""
    import copy

    from storage import open_store
    s = open_store(str(tmp_path), verify="full")
    s2 = copy.deepcopy(s)
    assert s2.root == s.root and s2.verify_mode == "full" and s2.local


def test_bootstrap_key_follows_the_held_out_set():
    """The warm-up avoids every pool/val/test prompt, so a run whose held-out prompts differ (another targeted
    choice, another test size) must not reuse the checkpoint; a config change outside the data must not split it."""
    from cropi_core.config import RunConfig
    from tasks.recipes import base_key

    base = RunConfig()
    other_targets = base.model_copy(deep=True)
    other_targets.data.synthetic.targeted = ["sub", "word"]
    bigger_test = base.model_copy(deep=True)
    bigger_test.data.synthetic.test_size += 8
    other_training = base.model_copy(deep=True)
    other_training.train.lr *= 2

    assert base_key(other_targets) != base_key(base)
    assert base_key(bigger_test) != base_key(base)
    assert base_key(other_training) == base_key(base)
