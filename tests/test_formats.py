"""Trainers' formats without a flow: reading verl / flat rows, writing subsets in the input's container, matching
imported rollouts to pool rows (cropi_core.data.formats, cropi_core.rollout.imported)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cropi_core.data.formats import detect_container, read_prompt_set, write_subset
from cropi_core.errors import DataError
from cropi_core.rollout.imported import read_responses, render_key, tokenize_responses


def verl_row(i: int, q: str, gold: str) -> dict:
    return {"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": q}], "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": gold}, "extra_info": {"split": "train", "index": 10 + i}}


def test_verl_parquet_ids_gold_domain_and_subset_schema(tmp_path):
    p = tmp_path / "train.parquet"
    table = pa.Table.from_pylist([verl_row(i, f"Q{i}?", str(i)) for i in range(5)])
    pq.write_table(table.replace_schema_metadata({b"origin": b"verl"}), p)
    ps = read_prompt_set(p, "gsm8k", "math")
    assert ps.container == "parquet" and ps.chat
    assert [x.id for x in ps.problems] == [f"gsm8k/{10 + i}" for i in range(5)]
    assert ps.problems[2].prompt == "Q2?" and ps.problems[2].gold == "2" and ps.problems[2].domain == "openai/gsm8k"
    write_subset(ps, [3, 1], tmp_path / "sub.parquet")
    sub = pq.read_table(tmp_path / "sub.parquet")
    assert sub.schema.equals(pq.read_schema(p), check_metadata=True)
    assert [r["extra_info"]["index"] for r in sub.to_pylist()] == [11, 13]  # input order


def test_jsonl_lines_kept_and_errors(tmp_path):
    p = tmp_path / "pool.jsonl"
    lines = [json.dumps({"question": "A?", "answer": "1", "note": "x"}), json.dumps({"question": "B?", "answer": "2"})]
    p.write_text("\n".join(lines) + "\n")
    ps = read_prompt_set(p, "pool", "exact")
    assert [x.id for x in ps.problems] == ["pool/0", "pool/1"] and not ps.chat
    write_subset(ps, [1], tmp_path / "sub.jsonl")
    assert (tmp_path / "sub.jsonl").read_text() == lines[1] + "\n"
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps({"question": "A", "answer": "1", "id": 7}) + "\n" + json.dumps({"question": "B", "answer": "1", "id": 7}) + "\n")
    with pytest.raises(DataError, match=r"dup.jsonl: row 2: duplicate id '7' \(also at row 1\)"):
        read_prompt_set(dup, "pool", "exact")
    multi = tmp_path / "multi.jsonl"
    multi.write_text(json.dumps({"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
                                 "answer": "1"}) + "\n")
    with pytest.raises(DataError, match=r"row 1: field 'prompt': only single-turn chats"):
        read_prompt_set(multi, "pool", "exact")
    bad_gold = tmp_path / "g.jsonl"
    bad_gold.write_text(json.dumps({"question": "A", "answer": "one"}) + "\n")
    with pytest.raises(DataError, match=r"g.jsonl: row 1: field 'answer': gold is not an integer"):
        read_prompt_set(bad_gold, "pool", "exact")


def test_hf_folder_and_datasetdict(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([verl_row(i, f"Q{i}?", str(i)) for i in range(4)])
    ds.save_to_disk(str(tmp_path / "hf"))
    ps = read_prompt_set(tmp_path / "hf", "pool", "math")
    assert ps.container == "hf" and len(ps.problems) == 4
    write_subset(ps, [0, 2], tmp_path / "sub")
    sub = datasets.load_from_disk(str(tmp_path / "sub"))
    assert sub.features == ds.features and [r["extra_info"]["index"] for r in sub] == [10, 12]
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="DatasetDict; pass one split folder"):
        detect_container(tmp_path / "dd")
    with pytest.raises(DataError, match="cannot tell the format"):
        (tmp_path / "x.csv").write_text("a\n")
        detect_container(tmp_path / "x.csv")


def test_verl_dump_matching_and_tokenizer_round_trip(tmp_path):
    from cropi_core.data import format_prompt
    from cropi_core.models import build_char_tokenizer

    tok = build_char_tokenizer()
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist([verl_row(i, f"Pick {i}.", str(i % 2 + 1)) for i in range(3)]), pool)
    problems = read_prompt_set(pool, "pool", "exact").problems
    render = lambda p: render_key(tok, format_prompt(p, tok, template="chat_boxed", instruction=""))  # noqa: E731
    # verl's input: chat template applied, tokenized, decoded with skip_special_tokens=True
    def verl_input(q: str) -> str:
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        return tok.decode(ids, skip_special_tokens=True)

    inputs = [verl_input(f"Pick {i}.") for i in range(3)]
    assert inputs[0] == "user:Pick 0.assistant:"
    dump = tmp_path / "dump"
    dump.mkdir()
    lines = [{"input": inputs[i], "output": f"\\boxed{{{a}}}", "gts": str(i % 2 + 1), "score": float(a == i % 2 + 1),
              "step": 1} for i in (2, 0, 1) for a in (1, 2)]
    (dump / "1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    rs = read_responses(dump, "verl", problems, render)
    assert [len(r) for r in rs] == [2, 2, 2] and [r.reward for r in rs[0]] == [1.0, 0.0]
    ids = tokenize_responses(tok, rs, tok.eos_token_id)
    assert ids[0][0][-1] == tok.eos_token_id and tok.decode(ids[0][0][:-1]) == "\\boxed{1}"
    # a ground truth that disagrees with the pool row is an error naming the line and field
    lines[3]["gts"] = "9"
    (dump / "1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(DataError, match=r"1.jsonl: line 4: field 'gts'"):
        read_responses(dump, "verl", problems, render)
    # a prompt with a single response cannot form a group
    (dump / "1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:5] if x["gts"] != "9"))
    with pytest.raises(DataError, match=r"pool row 1 \(id 'pool/10'\) has 1 response"):
        read_responses(dump, "verl", problems, render)
