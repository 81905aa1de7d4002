"""Config: every file in configs/ loads and builds its data; tiny.yaml is the embedded default written out."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cropi_core.config import RunConfig, load_config, parse_config
from cropi_core.data import CHARSET, build_splits
from cropi_core.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def test_config_folder_has_the_three_configs():
    names = {p.name for p in ALL_CONFIGS}
    assert {"tiny.yaml", "qwen2.5-1.5b-paper.yaml", "smollm2-gsm8k.yaml"} <= names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_builds_its_data(path, shared_dir):
    cfg = load_config(path, check_files=False)
    assert isinstance(cfg, RunConfig) and cfg.name == path.stem
    for spec in cfg.data.pool + cfg.data.targeted + cfg.data.untargeted:
        assert Path(spec.path).is_absolute() and Path(spec.path).is_file(), spec.path  # resolved next to the YAML
        assert Path(spec.path).is_relative_to(shared_dir / "data")
    from cropi_core.config import MODEL_ALIASES

    model_local = cfg.model.is_embedded or cfg.model.name_or_path in MODEL_ALIASES or Path(cfg.model.name_or_path).exists()
    if model_local:
        load_config(path, check_files=True)  # everything it names exists here
    else:  # e.g. /models/Qwen2.5-1.5B-Instruct on a GPU machine: the one-line error names the field
        with pytest.raises(ConfigError, match=r"model\.name_or_path: not found"):
            load_config(path, check_files=True)
    splits = build_splits(cfg.data)
    assert splits.pool and splits.val and splits.test_targeted
    held = {p.prompt for ps in splits.eval_sets().values() for p in ps}
    assert not held & {p.prompt for p in splits.pool}
    # round trip through a plain dict (what the Prefect UI shows as flow parameters)
    assert parse_config(cfg.model_dump(mode="json")) == cfg


def test_tiny_yaml_is_the_embedded_default():
    tiny = load_config(CONFIGS / "tiny.yaml").model_dump(mode="json")
    default = RunConfig().model_dump(mode="json")
    # the embedded default carries the short instruction the character-level model was tuned with
    assert tiny["data"]["instruction"] == "" and tiny["data"]["template"] == "plain_boxed"
    assert tiny == default
    # every output-determining field is written out explicitly (nothing silently defaulted); execution-only
    # (hash-excluded) fields such as storage.root may be left to their defaults
    raw = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    cfg = RunConfig()
    for section, fields in default.items():
        if isinstance(fields, dict):
            missing = set(fields) - set(raw[section]) - set(getattr(cfg, section).HASH_EXCLUDE)
            assert not missing, (section, missing)
    assert set(load_config(CONFIGS / "tiny.yaml").data.instruction) <= set(CHARSET)


def test_paper_config_matches_the_paper():
    cfg = load_config(CONFIGS / "qwen2.5-1.5b-paper.yaml", check_files=False)
    assert cfg.model.name_or_path.endswith("Qwen2.5-1.5B-Instruct")
    assert (cfg.rollout.num_generations, cfg.rollout.num_generations_val, cfg.rollout.temperature) == (8, 32, 0.5)
    assert cfg.rollout.max_new_tokens == 2048
    assert (cfg.influence.sketch_dim, cfg.selection.ratio) == (32768, 0.1)
    # the paper's sparse ratio 0.1 belongs to its own projector; the config ships cropi's default sketch
    assert (cfg.influence.projector, cfg.influence.allocation, cfg.influence.sparse_ratio) == ("grass", "energy", 0.25)
    assert cfg.influence.sparse_ratio == type(cfg.influence)().sparse_ratio
    assert [s.name for s in cfg.data.targeted] == ["gsm8k", "math500"]
    assert all(s.val_size == 100 for s in cfg.data.targeted)
    assert {"gsm8k_train", "math_train", "dsr_sub"} <= {s.name for s in cfg.data.pool}
    assert {"gaokao2023en", "amc23", "aime24"} <= {s.name for s in cfg.data.untargeted}
    assert cfg.runner.kind == "ray" and cfg.train.lr == 1e-6


def test_smollm2_config_names_the_model_in_the_gguf_wheel():
    from cropi_core.config import resolve_alias

    cfg = load_config(CONFIGS / "smollm2-gsm8k.yaml")
    folder, gguf_file = resolve_alias(cfg.model.name_or_path, cfg.model.gguf_file)
    assert (Path(folder) / gguf_file).is_file()
    splits = build_splits(cfg.data)
    assert splits.sizes() == {"pool": 64, "val/asdiv": 32, "test/asdiv": 32, "test/gsm8k": 32, "test/svamp": 32}
    assert cfg.rollout.num_generations == 4 and cfg.rollout.max_new_tokens == 96


def test_overrides_and_hashable_fields(tmp_path):
    cfg = load_config(CONFIGS / "tiny.yaml", overrides={"selection.ratio": 0.2, "influence.micro_batch_tokens": 7})
    assert cfg.selection.ratio == 0.2
    base = load_config(CONFIGS / "tiny.yaml")
    # micro-batching does not change gradients: excluded from artifact hashes (rollout batch size is not: sampling)
    assert cfg.hashable("influence") == base.hashable("influence")
    assert cfg.hashable("selection") != base.hashable("selection")
    assert "name" not in base.hashable() and "storage" not in base.hashable()


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path, data_dir):
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    (tmp_path / "a" / "d.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    (sub / "c.yaml").write_text(
        "data:\n  synthetic: null\n"
        "  pool: [{name: p, path: ../d.jsonl}]\n"
        "  targeted: [{name: t, path: ../d.jsonl, val_size: 0}]\n"
    )
    cfg = load_config(sub / "c.yaml")
    assert cfg.data.pool[0].path == str((tmp_path / "a" / "d.jsonl").resolve())


def test_sketch_transform_fields_enter_keys_only_where_they_matter():
    """`transform: gaussian` (the dense matrix every gradient artifact before the field used) hashes as before;
    `sjl_s` is part of the key only with the sparse JL transform."""
    old = {"projector": "sparse", "dim": 4096, "sparse_ratio": 0.1, "seed": 0, "dtype": "float16",
           "aggregation": "seq_mean_token_mean"}  # an InfluenceConfig.hashable() from before the fields existed
    before_12 = {"influence.projector": "sparse", "influence.sparse_ratio": 0.1, "influence.allocation": "uniform"}
    assert load_config(overrides={**before_12, "influence.transform": "gaussian",
                                  "influence.sjl_s": 4}).influence.hashable() == old
    sjl = load_config(overrides=before_12).influence.hashable()
    assert sjl == {**old, "transform": "sjl", "sjl_s": 2}
    assert load_config(overrides={"influence.sjl_s": 4}).influence.hashable()["sjl_s"] == 4
    with pytest.raises(ConfigError, match="influence.sjl_s"):
        load_config(overrides={"influence.sjl_s": 3})


OLD_NAMES = {"rollout.k_train": ("rollout.num_generations", 4), "rollout.k_val": ("rollout.num_generations_val", 6),
             "influence.dim": ("influence.sketch_dim", 256)}  # renamed fields: {old: (new, a value to set)}


def _get(cfg: RunConfig, dotted: str):
    section, field = dotted.split(".")
    return getattr(getattr(cfg, section), field)


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_config_keys_load_with_one_deprecation_line_and_hash_the_same(old, tmp_path, recwarn):
    """A YAML file or `--set` under an old name loads as the new field, says so once (naming the file and both
    names), and every artifact key stays: `hashable()` still names the field by its old key."""
    from cropi_core.errors import ConfigDeprecation

    new, value = OLD_NAMES[old]
    section, field = old.split(".")
    path = tmp_path / "old.yaml"
    path.write_text(f"{section}:\n  {field}: {value}\n")
    from_file = load_config(path)
    caught = [w for w in recwarn.list if issubclass(w.category, ConfigDeprecation)]
    assert len(caught) == 1 and str(path) in str(caught[0].message)
    assert f"{old} is deprecated, use {new.split('.')[1]}" in str(caught[0].message)
    recwarn.clear()
    from_set = load_config(overrides={old: value})
    assert [w for w in recwarn.list if issubclass(w.category, ConfigDeprecation)]
    renamed = load_config(overrides={new: value})
    assert _get(from_file, new) == _get(from_set, new) == _get(renamed, new) == value
    assert from_file.hashable() == from_set.hashable() == renamed.hashable()
    assert field in renamed.hashable(section) and new.split(".")[1] not in renamed.hashable(section)
    assert renamed.hashable() != RunConfig().hashable()  # the value itself still reaches the keys
    both = tmp_path / "both.yaml"
    both.write_text(f"{section}:\n  {field}: {value}\n  {new.split('.')[1]}: {value}\n")
    with pytest.raises(ConfigError, match=f"{both}: {old} is the old name of {new}"):
        load_config(both)


def test_no_shipped_config_uses_an_old_name(recwarn):
    """Every file in configs/ (and the test configs) uses the new names: loading them prints no deprecation."""
    from cropi_core.errors import ConfigDeprecation

    for path in ALL_CONFIGS + sorted((Path(__file__).parent / "configs").glob("*.yaml")):
        load_config(path, check_files=False)
    assert not [w for w in recwarn.list if issubclass(w.category, ConfigDeprecation)]


def test_cli_prints_the_deprecation_as_one_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "old.yaml").write_text("influence:\n  dim: 128\n")
    out = subprocess.run([sys.executable, "-m", "flows.cli", "config", "--config", str(tmp_path / "old.yaml")],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if "deprecated" in ln]
    assert lines == [f"warning: {tmp_path / 'old.yaml'}: config key influence.dim is deprecated, use sketch_dim "
                     "(same meaning, same cache keys)"], out.stderr
    assert "sketch_dim: 128" in out.stdout


def test_allocation_only_matters_for_masked_projectors():
    """`influence.allocation` shapes sparse/grass sketches only: for dense/exact it neither enters the gradient keys
    nor triggers a calibration artifact, so `allocation: energy` with a dense projector recomputes nothing."""
    for kind in ("dense", "exact"):
        e = load_config(overrides={"influence.projector": kind, "influence.allocation": "energy"})
        u = load_config(overrides={"influence.projector": kind, "influence.allocation": "uniform"})
        assert e.hashable("influence") == u.hashable("influence") and not e.influence.uses_energy
    for kind in ("sparse", "grass"):
        e = load_config(overrides={"influence.projector": kind, "influence.allocation": "energy"})
        u = load_config(overrides={"influence.projector": kind, "influence.allocation": "uniform"})
        assert e.hashable("influence") != u.hashable("influence") and e.influence.uses_energy
        assert not u.influence.uses_energy


def test_the_removed_top_level_seed_still_loads_with_one_line(tmp_path):
    import warnings

    from cropi_core.errors import ConfigDeprecation

    f = tmp_path / "old.yaml"
    f.write_text("name: old\nseed: 3\ntrain: {seed: 1}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(f, check_files=False)
    msgs = [str(w.message) for w in caught if issubclass(w.category, ConfigDeprecation)]
    assert len(msgs) == 1 and "seed is ignored" in msgs[0] and "train.seed" in msgs[0] and "\n" not in msgs[0]
    assert cfg.train.seed == 1 and "seed" not in type(cfg).model_fields
    assert cfg.hashable() == load_config(None, {"name": "old", "train.seed": 1}).hashable()  # keys as before
