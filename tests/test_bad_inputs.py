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


def test_dataset_that_is_a_directory_or_nested_too_deeply(tmp_path):
    d = tmp_path / "d.jsonl"
    d.mkdir()
    expect(lambda: load_dataset(spec(d)), DataError, str(d), "cannot read", folder=tmp_path)
    deep = write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)
    expect(lambda: load_dataset(spec(deep)), DataError, str(deep), "nested too deeply", folder=tmp_path)
    line = write(tmp_path, "deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")
    expect(lambda: load_dataset(spec(line)), DataError, "line 1", "nested too deeply", folder=tmp_path)


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
    ("influence:\n  sketch_dim: 0\n", ["influence.sketch_dim", "greater than 0", "got 0"]),  # k ≤ 0
    ("influence:\n  dim: -8\n", ["influence.sketch_dim", "got -8"]),  # the old name, validated as the new one
    ("influence:\n  projector: factored\n", ["influence.projector", "'factored' was removed", "use 'grass'"]),
    ("rollout:\n  num_generations: 1\n", ["rollout.num_generations", "greater than or equal to 2", "got 1"]),  # K < 2
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


# ---------------------------------------------------------------- the CLI, end to end: a table of bad inputs

def _cli_cases(d: Path) -> list[tuple[str, list[str], str]]:
    """(what, argv, expected message part) — every one must end in ONE line `error: ...` and exit code 2."""
    (d / "cfgdir").mkdir()
    files = {
        "binary.yaml": b"\xff\xfe\x00 not text",
        "tag.yaml": b"name: !!python/object/apply:os.system ['echo pwned > pwned.txt']\n",
        "new.yaml": b"train: !!python/object/new:collections.OrderedDict [[[stages, 2]]]\n",
        "deep.yaml": b"a: " + b"[" * 3000 + b"]" * 3000 + b"\n",
        "nul.yaml": b"name: a\x00b\n",
        "list.yaml": b"- a\n- b\n",
        "section.yaml": b"selection: 3\n",
        "tab.yaml": b"selection:\n  ratio: 0.1\n\tseed: 1\n",
        "badname.yaml": b"name: ../../escape\n",
        "huge.yaml": b"# " + b"x" * (1 << 20) + b"\n",
    }
    for n, raw in files.items():
        (d / n).write_bytes(raw)
    return [
        ("--config is a directory", ["run", "--config", "cfgdir"], "not a file"),
        ("--config does not exist", ["run", "--config", "nope.yaml"], "config file not found"),
        ("config is binary", ["run", "--config", "binary.yaml"], "not a UTF-8 text file"),
        ("YAML tag constructing an object (apply)", ["run", "--config", "tag.yaml"], "could not determine a constructor"),
        ("YAML tag constructing an object (new)", ["run", "--config", "new.yaml"], "could not determine a constructor"),
        ("YAML nested 3000 deep", ["run", "--config", "deep.yaml"], "nested too deeply"),
        ("NUL character in YAML", ["run", "--config", "nul.yaml"], "invalid YAML"),
        ("config top level is a list", ["run", "--config", "list.yaml"], "top level must be a mapping"),
        ("section is a number", ["run", "--config", "section.yaml"], "selection"),
        ("tab indentation", ["run", "--config", "tab.yaml"], "invalid YAML"),
        ("config over 1 MiB", ["run", "--config", "huge.yaml"], "at most"),
        ("name ../../x (--name)", ["run", "--name", "../../x"], "name"),
        ("name ../../escape (YAML)", ["run", "--config", "badname.yaml"], "name"),
        ("name ../y (--set)", ["run", "--set", "name=../y"], "name"),
        ("name with a slash", ["run", "--name", "a/b"], "slug"),
        ("name absolute path", ["run", "--name", "/abs"], "slug"),
        ("name ..", ["run", "--name", ".."], "slug"),
        ("name .", ["run", "--name", "."], "slug"),
        ("name empty", ["run", "--name", ""], "slug"),
        ("name 101 characters", ["run", "--name", "x" * 101], "slug"),
        ("compare base name 81 characters", ["compare", "--name", "x" * 81], "at most 80 characters"),
        ("name with a space", ["run", "--name", "a b"], "slug"),
        ("name with a newline", ["run", "--name", "a\nb"], "slug"),
        ("name starting with '-'", ["run", "--set", "name=-x"], "slug"),
        ("compare base name ../z", ["compare", "--name", "../z"], "slug"),
        ("--set without '='", ["run", "--set", "selection.ratio"], "expected key=value"),
        ("--set empty key", ["run", "--set", "=3"], "empty key"),
        ("--set into a non-section", ["run", "--set", "selection.ratio.x=3"], "not a section"),
        ("--set unknown key", ["run", "--set", "selection.ratoi=0.2"], "unknown key"),
        ("--set not an integer", ["run", "--set", "train.seed=abc"], "valid integer"),
        ("--set learning rate inf", ["run", "--set", "train.lr=.inf"], "finite"),
        ("--set temperature nan", ["run", "--set", "rollout.temperature=.nan"], "rollout.temperature"),
        ("--set ratio 1.5", ["run", "--set", "selection.ratio=1.5"], "(0, 1]"),
        ("--set chunk rows 0", ["run", "--set", "influence.chunk_rows=0"], "influence.chunk_rows"),
        ("--set unknown verify mode", ["run", "--set", "storage.verify=bogus"], "storage.verify"),
        ("--set unknown runner", ["run", "--set", "runner.kind=k8s"], "runner.kind"),
        ("--set empty model path", ["run", "--set", "model.name_or_path="], "model.name_or_path"),
        ("--set missing model folder", ["run", "--set", "model.name_or_path=no/such/model"], "not found"),
        ("--storage empty", ["run", "--storage", ""], "storage.root"),
        ("--storage unknown protocol", ["run", "--storage", "nosuch://x"], "not reachable or writable"),
        ("--storage not creatable", ["run", "--storage", "/proc/cropi-forbidden"], "not reachable or writable"),
        ("compare --seeds 0", ["compare", "--seeds", "0"], "--seeds"),
        ("compare unknown method", ["compare", "--methods", "nope"], "unknown method"),
        ("ui port 0", ["ui", "--port", "0"], "1..65535"),
        ("ui port 99999", ["ui", "--port", "99999"], "1..65535"),
        ("inspect with no store here", ["inspect", "zz"], "no artifact store"),
        ("inspect unknown key", ["inspect", "zz", "--storage", "STORE"], "matches 0 artifacts"),
        ("inspect path-like key", ["inspect", "../../etc", "--storage", "STORE"], "matches 0 artifacts"),
        ("lineage on an unknown protocol", ["lineage", "deadbeef", "--storage", "nosuch://x"], "cannot open storage root"),
    ]


def test_cli_bad_input_table(tmp_path, monkeypatch, capsys):
    """≥ 30 bad inputs through the real CLI: each prints ONE line `error: ...`, exits 2, starts no flow, writes
    no artifact, report folder or stray file (a run name can never reach outside runs/)."""
    import socket

    from typer.testing import CliRunner

    import flows.compare
    import flows.curriculum
    from flows.cli import app

    def no_flow(*_a, **_k):
        raise AssertionError("a flow was started on bad input")

    monkeypatch.setattr(flows.curriculum, "run_curriculum", no_flow)
    monkeypatch.setattr(flows.compare, "run_compare", no_flow)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    cases = _cli_cases(work)
    store = tmp_path / "store"
    (tmp_path / "store" / "artifacts").mkdir(parents=True)  # an empty, existing store
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    cases.append(("ui port already in use", ["ui", "--port", str(busy.getsockname()[1])], "already in use"))
    runner = CliRunner()
    rows, bad = [], []
    try:
        for what, argv, part in cases:
            before = snapshot(tmp_path)
            args = [str(store) if a == "STORE" else a for a in argv]
            if args[0] in ("run", "compare") and "--storage" not in args:
                args += ["--storage", str(store)]
            res = runner.invoke(app, args)
            err = [line for line in res.stderr.splitlines() if line.strip()]
            after = snapshot(tmp_path)
            new = sorted(set(after) - set(before))
            ok = (res.exit_code == 2 and len(err) == 1 and err[0].startswith("error: ") and part in err[0]
                  and not res.stdout.strip() and not new)
            rows.append((what, " ".join(a if a.strip() else repr(a) for a in argv).replace("\n", "\\n"), res.exit_code,
                         err[0] if err else ""))
            if not ok:
                bad.append((what, res.exit_code, err, new, repr(res.exception)))
    finally:
        busy.close()
    assert not any((store / "artifacts").iterdir())
    assert not (store / "runs").exists() and not (tmp_path / "x").exists() and not (tmp_path / "escape").exists()
    assert not (work / "pwned.txt").exists()
    with capsys.disabled():
        print(f"\n{len(rows)} bad inputs, {len(rows) - len(bad)} gave one line + exit 2")
        for what, argv, code, line in rows:
            print(f"| {what} | `{argv[:60]}` | {code} | {line[:110]} |")
    assert len(rows) >= 30
    assert not bad, bad
