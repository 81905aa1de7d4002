"""Config documentation: every field carries a description, and `explain` lists exactly the leaf fields of a
RunConfig with their value, default and whether they change artifact keys (what `cropi config --explain` prints)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from cropi_core.config import (DatasetSpec, FieldDoc, RunConfig, Section, explain, load_config, parse_config,
                               render_explain)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def models_in(annotation) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation holds: X, X | None, list[X], dict[str, X]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in models_in(a)]


def reachable_models(cls: type[BaseModel] = RunConfig, seen: set | None = None) -> set[type[BaseModel]]:
    """Every model reachable from `cls` through its fields, list items included (DatasetSpec)."""
    seen = set() if seen is None else seen
    seen.add(cls)
    for info in cls.model_fields.values():
        for sub in models_in(info.annotation):
            if sub not in seen:
                reachable_models(sub, seen)
    return seen


def leaf_paths(cls: type[BaseModel] = RunConfig, where: str = "") -> list[str]:
    """Dotted paths of the leaf fields reachable by attributes (a section or optional section is descended into,
    a list of sections is one leaf)."""
    out = []
    for name, info in cls.model_fields.items():
        ann = info.annotation
        direct = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if direct and typing.get_origin(ann) is not list:
            out += leaf_paths(direct[0], f"{where}{name}.")
        else:
            out.append(f"{where}{name}")
    return out


def test_every_field_of_every_section_has_a_description():
    models = reachable_models()
    assert DatasetSpec in models and len(models) >= 14  # RunConfig, its 10 sections, tiny, synthetic, DatasetSpec
    missing = [f"{m.__name__}.{n}" for m in models for n, info in m.model_fields.items()
               if not (info.description or "").strip()]
    assert not missing, f"fields without a description: {missing}"


def test_every_section_class_has_a_docstring():
    assert all((m.__doc__ or "").strip() for m in reachable_models())


def test_explain_lists_exactly_the_leaf_fields_in_order():
    docs = explain()
    assert [d.path for d in docs] == leaf_paths()
    assert len(docs) == len(leaf_paths()) >= 100
    assert all(isinstance(d, FieldDoc) and d.description and d.type for d in docs)
    by = {d.path: d for d in docs}
    assert by["selection.ratio"].value == by["selection.ratio"].default == 0.25
    assert by["data.pool"].type == "list[DatasetSpec]"  # a list of sections is a leaf
    assert by["influence.projector"].type == "exact | dense | sparse | grass"
    assert by["selection.mix_random"].type == "float in [0, 1)"
    assert by["rollout.num_generations"].type == "int ≥ 2"
    assert by["influence.candidates"].type == "float | null, ≥ 1"
    assert not any(d.differs for d in docs)  # the defaults


def test_keyed_follows_hash_exclude():
    by = {d.path: d for d in explain()}
    for path in ("storage.root", "model.device", "train.save_steps", "runner.retries", "selection.rescore",
                 "influence.micro_batch_tokens", "name"):
        assert by[path].keyed is False, path
    for path in ("selection.ratio", "model.tiny.hidden_size", "data.synthetic.seed", "rollout.batch_size",
                 "eval.batch_size", "train.lr"):
        assert by[path].keyed is True, path
    # hash-excluded here but held by another artifact's key: they still change keys
    assert by["influence.score"].keyed and by["influence.score"].key_note == "by the scores artifact"
    assert by["influence.candidates"].keyed and "candidates artifact" in by["influence.candidates"].key_note
    assert by["selection.mix_random"].key_note == "only when ≠ 0.0"
    assert by["selection.k_fusion"].key_note == "only when fusion is learnability_rrf"


def test_keyed_agrees_with_each_sections_hashable():
    """A directly hashed, unconditional field is in its section's `hashable()`; a field that is not keyed is not."""
    cfg = RunConfig()
    for d in explain(cfg):
        parts = d.path.split(".")
        if len(parts) != 2 or parts[0] in RunConfig.HASH_EXCLUDE:
            continue
        section = getattr(cfg, parts[0])
        cls = type(section)
        name = {new: old for old, new in cls.RENAMED.items()}.get(parts[1], parts[1])
        conditional = parts[1] in cls.HASH_OMIT_WHEN or parts[1] in cls.HASH_ONLY_WITH or parts[1] in cls.HASH_ELSEWHERE
        if d.keyed and not conditional:
            assert name in section.hashable(), d.path
        if not d.keyed:
            assert name not in section.hashable(), d.path
    for cls in reachable_models():
        if issubclass(cls, Section):
            assert set(cls.HASH_ELSEWHERE) <= cls.HASH_EXCLUDE <= set(cls.model_fields), cls.__name__


def test_prefix_filters_a_section_or_one_field():
    sel = explain(prefix="selection")
    assert sel and all(d.path.startswith("selection.") for d in sel)
    assert [d.path for d in sel] == [p for p in leaf_paths() if p.startswith("selection.")]
    tiny = explain(prefix="model.tiny")
    assert {d.path for d in tiny} == {p for p in leaf_paths() if p.startswith("model.tiny.")}
    assert len(explain(prefix="model")) > len(tiny)  # the section with its subsection
    assert [d.path for d in explain(prefix="selection.ratio")] == ["selection.ratio"]
    assert explain(prefix="") == explain()


@pytest.mark.parametrize("prefix", ["selektion", "selection.nope", "sel"])
def test_unknown_prefix_is_one_line_naming_it_and_the_sections(prefix):
    with pytest.raises(ValueError) as err:
        explain(prefix=prefix)
    msg = str(err.value)
    assert "\n" not in msg and repr(prefix) in msg
    for section in ("model", "model.tiny", "data.synthetic", "selection", "runner"):
        assert section in msg


def test_values_of_a_config_and_its_null_sections():
    cfg = parse_config({"selection": {"ratio": 0.3}, "model": {"device": "cpu"}})
    by = {d.path: d for d in explain(cfg)}
    assert by["selection.ratio"].value == 0.3 and by["selection.ratio"].differs
    assert by["model.device"].value == "cpu" and not by["model.device"].keyed
    text = render_explain(explain(cfg, "selection"))
    assert "* selection.ratio: float = 0.3  (default 0.25)  [keyed]" in text
    assert "  selection.seed: int = 0  [keyed]" in text
    paper = load_config(CONFIGS / "qwen2.5-1.5b-paper.yaml", check_files=False)
    docs = explain(paper, "data")
    syn = [d for d in docs if d.path.startswith("data.synthetic.")]
    assert syn and not any(d.active or d.differs for d in syn)  # data.synthetic is null: documented, unused
    pool = next(d for d in docs if d.path == "data.pool")
    assert pool.differs and pool.value[0]["name"] == "gsm8k_train"  # dataset specs as plain dicts
    assert "(unused: data.synthetic is null)" in render_explain(docs)


def test_render_has_one_block_per_section_and_wraps():
    docs = explain()
    text = render_explain(docs)
    for d in docs:
        assert f"  {d.path}: " in text
    heads = [line.split(":")[0] for line in text.split("\n\n")[1:] if line]
    assert heads[:6] == ["run (top level)", "model", "model.tiny", "bootstrap", "data", "data.synthetic"]
    assert len(heads) == len(set(heads)) == 13  # top level, 10 sections, model.tiny, data.synthetic
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "storage.root" in render_explain(explain(prefix="storage")) and "selection" not in render_explain(
        explain(prefix="storage"))
