"""Bad config and data inputs: each gives a ONE-line error naming file/row/field/value and leaves nothing behind."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cropi_core.config import DatasetSpec, load_config
from cropi_core.data import Problem, build_splits, generate_problems, load_acc_history, load_dataset
from cropi_core.errors import ConfigError, CropiError, DataError


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def expect(fn: Callable[[], object], exc: type[CropiError], *parts: str, folder: Path) -> str:
    """Run fn; it must raise `exc` with a one-line message containing every part, and change nothing in folder."""
    before, cwd_before = snapshot(folder), set(os.listdir("."))
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and len(msg) < 400, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    assert snapshot(folder) == before and set(os.listdir(".")) == cwd_before  # nothing half-written anywhere
    return msg


def write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.write_text(text)
    return p


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def spec(path: Path, **kw) -> DatasetSpec:
    return DatasetSpec(name="d", path=str(path), **kw)


def cfg_file(folder: Path, text: str) -> Path:
    return write(folder, "run.yaml", text)


# ---------------------------------------------------------------- data files

def test_malformed_jsonl_line(tmp_path):
    p = write(tmp_path, "d.jsonl", jsonl({"question": "q1", "answer": "1"}, '{"question": "q2", "answer": '))
    expect(lambda: load_dataset(spec(p)), DataError, str(p), "line 2", "invalid JSON", folder=tmp_path)


def test_missing_field_names_field_and_row(tmp_path):
    p = write(tmp_path, "d.jsonl", jsonl({"question": "a", "answer": "1"}, {"question": "b", "answer": "2"},
                                         {"question": "c", "solution": "3"}))
    expect(lambda: load_dataset(spec(p)), DataError, str(p), "line 3", "missing field 'answer'", "solution",
           folder=tmp_path)


def test_unknown_prompt_field_names_field(tmp_path):
    p = write(tmp_path, "d.jsonl", jsonl({"Body": "b", "Question": "q", "Answer": 3.0}))
    expect(lambda: load_dataset(spec(p, prompt_field=["Body", "Qestion"], answer_field="Answer")), DataError,
           "line 1", "missing field 'Qestion'", folder=tmp_path)


@pytest.mark.parametrize("name,text", [("e.jsonl", ""), ("b.jsonl", "\n\n  \n"), ("e.json", ""), ("l.json", "[]")])
def test_empty_file(tmp_path, name, text):
    p = write(tmp_path, name, text)
    expect(lambda: load_dataset(spec(p)), DataError, str(p), "empty dataset file", folder=tmp_path)


def test_non_numeric_gold_for_exact(tmp_path):
    p = write(tmp_path, "d.jsonl", jsonl({"question": "a", "answer": "4"}, {"question": "b", "answer": "\\frac{1}{2}"}))
    expect(lambda: load_dataset(spec(p, verifier="exact")), DataError, str(p), "line 2", "field 'answer'",
           "\\frac{1}{2}", "not an integer", folder=tmp_path)
    assert load_dataset(spec(p, verifier="math"))[1].gold == "\\frac{1}{2}"  # fine for the math verifier


def test_gsm8k_answer_without_marker(tmp_path):
    p = write(tmp_path, "d.jsonl", jsonl({"question": "a", "answer": "so 3.\n#### 3"}, {"question": "b", "answer": "it is 4"}))
    expect(lambda: load_dataset(spec(p, extractor="gsm8k_hash")), DataError, "line 2", "field 'answer'", "####",
           "it is 4", folder=tmp_path)


def test_row_not_an_object_and_json_not_a_list(tmp_path):
    p = write(tmp_path, "d.jsonl", jsonl({"question": "a", "answer": "1"}, "[1, 2]"))
    expect(lambda: load_dataset(spec(p)), DataError, "line 2", "expected a JSON object, got list", folder=tmp_path)
    q = write(tmp_path, "d.json", json.dumps({"question": "a", "answer": "1"}))
    expect(lambda: load_dataset(spec(q)), DataError, str(q), "must be a list", folder=tmp_path)


def test_duplicate_id(tmp_path):
    p = write(tmp_path, "d.jsonl", jsonl({"id": 7, "question": "a", "answer": "1"}, {"id": 7, "question": "b", "answer": "2"}))
    expect(lambda: load_dataset(spec(p, id_field="id")), DataError, "line 2", "field 'id'", "duplicate id '7'",
           "line 1", folder=tmp_path)


def test_missing_dataset_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    expect(lambda: load_dataset(spec(missing)), DataError, str(missing), "not found", folder=tmp_path)
    c = cfg_file(tmp_path, "data:\n  synthetic: null\n  pool: [{name: p, path: nope.jsonl}]\n"
                           "  targeted: [{name: t, path: nope.jsonl}]\n")
    expect(lambda: load_config(c), ConfigError, str(c), "data.pool[0].path", "file not found", "nope.jsonl",
           folder=tmp_path)


def test_parquet_with_wrong_column(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"problem": "1+1?", "answer": "2"}]), p)
    expect(lambda: load_dataset(spec(p)), DataError, str(p), "row 1", "missing field 'question'", "problem",
           folder=tmp_path)
    bad = write(tmp_path, "x.parquet", "not parquet at all")
    expect(lambda: load_dataset(spec(bad)), DataError, str(bad), "not a readable Parquet file", folder=tmp_path)


def test_unknown_format(tmp_path):
    p = write(tmp_path, "d.csv", "question,answer\n")
    expect(lambda: load_dataset(spec(p)), DataError, str(p), "cannot tell the format", folder=tmp_path)


def test_bad_accuracy_history(tmp_path):
    p = write(tmp_path, "acc.json", json.dumps({"0": [0.5, 1.0], "one": [0.0]}))
    expect(lambda: load_acc_history(str(p)), DataError, str(p), "key 'one'", "not an integer", folder=tmp_path)
    q = write(tmp_path, "acc2.json", json.dumps({"3": "high"}))
    expect(lambda: load_acc_history(str(q)), DataError, "key '3'", "list of numbers", folder=tmp_path)


def test_bad_problem_record(tmp_path):
    rec = generate_problems("add", 1, 0)[0].to_record()
    del rec["gold"]
    expect(lambda: Problem.from_record(rec), DataError, "syn/add/0", "field 'gold'", folder=tmp_path)


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("yaml_text,parts", [
    ("data:\n  pool: [{name: p, path: d.jsonl, extractor: magic}]\n  targeted: [{name: t, path: d.jsonl}]\n"
     "  synthetic: null\n", ["data.pool.0.extractor", "'magic'"]),  # unknown extractor
    ("selection:\n  ratio: 1.5\n", ["selection.ratio", "(0, 1]", "1.5"]),
    ("influence:\n  dim: 0\n", ["influence.dim", "greater than 0", "got 0"]),  # k ≤ 0
    ("influence:\n  dim: -8\n", ["influence.dim", "got -8"]),
    ("rollout:\n  k_train: 1\n", ["rollout.k_train", "greater than or equal to 2", "got 1"]),  # K < 2
    ("selection:\n  ratoi: 0.2\n", ["selection.ratoi", "unknown key"]),
    ("data:\n  pool: [{name: p, path: d.jsonl, question_field: q}]\n  targeted: [{name: t, path: d.jsonl}]\n"
     "  synthetic: null\n", ["data.pool.0.question_field", "unknown key"]),  # unknown dataset field
    ("train:\n  stages: 0\n", ["train.stages", "got 0"]),
    ("data:\n  synthetic:\n    targeted: [div]\n", ["data.synthetic", "targeted domains ['div']"]),
    ("data:\n  synthetic:\n    domains: [add, cube]\n    targeted: [add]\n", ["unknown synthetic domains ['cube']"]),
    ("data:\n  synthetic: null\n", ["data.pool and data.targeted are required"]),
    ("selection:\n  ratio: 0.1\n\tseed: 1\n", ["line 3", "invalid YAML", "'\\t'"]),  # bad YAML syntax
    ("- just\n- a list\n", ["top level must be a mapping"]),
])
def test_bad_config(tmp_path, yaml_text, parts):
    c = cfg_file(tmp_path, yaml_text)
    expect(lambda: load_config(c, check_files=False), ConfigError, str(c), *parts, folder=tmp_path)


def test_nonexistent_model_path(tmp_path):
    c = cfg_file(tmp_path, "model:\n  name_or_path: no/such/model\n")
    expect(lambda: load_config(c), ConfigError, str(c), "model.name_or_path", "not found", "no/such/model",
           folder=tmp_path)


def test_bad_override_and_missing_config(tmp_path):
    expect(lambda: load_config(None, overrides={"selection.ratio": 1.5}), ConfigError, "selection.ratio", "1.5",
           folder=tmp_path)
    expect(lambda: load_config(tmp_path / "none.yaml"), ConfigError, "none.yaml", "config file not found",
           folder=tmp_path)


def test_bad_data_surfaces_through_build_splits(tmp_path):
    good = write(tmp_path, "g.jsonl", jsonl({"question": "a", "answer": "1"}, {"question": "b", "answer": "2"}))
    bad = write(tmp_path, "b.jsonl", jsonl({"question": "c", "answer": "3"}, "{oops"))
    c = cfg_file(tmp_path, "data:\n  synthetic: null\n  pool: [{name: p, path: b.jsonl}]\n"
                           "  targeted: [{name: t, path: g.jsonl, val_size: 1}]\n")
    cfg = load_config(c)
    expect(lambda: build_splits(cfg.data), DataError, str(bad), "line 2", "invalid JSON", folder=tmp_path)
    assert good.exists()
