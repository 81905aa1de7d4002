"""Trainers' dataset formats in and out: verl parquet, Hugging Face datasets saved to disk, and JSONL.

`read_prompt_set(path, name, verifier)` reads a pool or validation set written for another trainer into
`Problem`s and remembers where each came from, so `write_subset` can write the selected rows back **in the
input's own format** (same container, same columns and types, rows untouched):

| container | detected by | subset written as |
|---|---|---|
| `parquet` | `.parquet` / `.pq` file | `pyarrow` `Table.take` → parquet with the input's exact schema |
| `jsonl`   | `.jsonl` / `.ndjson` file | the selected input lines, byte for byte |
| `hf`      | a folder written by `datasets.Dataset.save_to_disk` | `Dataset.select(...).save_to_disk` |

Row schemas (detected per row, so a file can be verl-style or flat):
- **verl** (`examples/data_preprocess/*.py`): `prompt` = chat list `[{"role": "user", "content": ...}]`,
  `reward_model` = `{"style": "rule", "ground_truth": ...}`, `data_source`, `ability`, `extra_info`
  (its `index`, when present, is the row's id). The question is the content of the single user turn.
- **flat** (our JSONL, TRL-style datasets): `question` | `prompt` | `problem` (text, or a chat list as above),
  the gold in `ground_truth` | `answer`, optional `id`.

Ids are `"<name>/<id>"` with id = `extra_info.index`, else the `id` field, else the 0-based row index — the
same ids `cropi run` gives a JSONL file read without `id_field`. Every problem is a one-line `DataError`
naming the file, the row (1-based) and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cropi_core.data.extractors import normalize_gold
from cropi_core.data.loaders import json_row
from cropi_core.data.problem import Problem
from cropi_core.errors import DataError

CONTAINERS = ("parquet", "jsonl", "hf")
PROMPT_FIELDS = ("prompt", "question", "problem")
GOLD_FIELDS = ("ground_truth", "answer")


@dataclass
class PromptSet:
    """A pool or validation set read from a trainer's file.

    problems[i] came from input row rows[i] (0-based position in the file / dataset); `chat` is True when the
    prompts were chat lists (verl / TRL conversational), which decides the default prompt template.
    """

    name: str
    path: str
    container: str
    problems: list[Problem]
    rows: list[int] = field(default_factory=list)
    chat: bool = False
    lines: list[str] | None = None  # jsonl only: the raw input lines (without newline), by row

    def index_of(self) -> dict[str, int]:
        """problem id -> position in `problems`."""
        return {p.id: i for i, p in enumerate(self.problems)}


def detect_container(path: str | os.PathLike) -> str:
    """"hf" for a `save_to_disk` folder, else "parquet" / "jsonl" from the extension; DataError otherwise."""
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_info.json").is_file() or (p / "state.json").is_file():
            return "hf"
        if (p / "dataset_dict.json").is_file():
            splits = json.loads((p / "dataset_dict.json").read_text()).get("splits", [])
            raise DataError(f"{p}: a saved DatasetDict; pass one split folder ({', '.join(str(p / s) for s in splits)})")
        raise DataError(f"{p}: a folder but not a dataset saved with datasets.save_to_disk (no dataset_info.json)")
    if not p.exists():
        raise DataError(f"{p}: dataset file not found")
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    raise DataError(f"{p}: cannot tell the format (expected .parquet, .jsonl or a datasets.save_to_disk folder)")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def read_rows(path: str | os.PathLike, container: str | None = None) -> tuple[str, list[dict[str, Any]], list[str] | None]:
    """(container, rows as dicts, raw lines for jsonl) of a dataset file or saved dataset folder."""
    path = str(path)
    kind = container or detect_container(path)
    if kind == "jsonl":
        rows, lines = [], []
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            rows.append(json_row(line, f"{path}: row {n}"))
            lines.append(line)
        if not rows:
            raise DataError(f"{path}: empty dataset file (no rows)")
        return kind, rows, lines
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: not a readable Parquet file: {_one_line(err)}") from None
        if table.num_rows == 0:
            raise DataError(f"{path}: empty dataset file (no rows)")
        return kind, table.to_pylist(), None
    if kind == "hf":
        ds = _load_hf(path)
        if len(ds) == 0:
            raise DataError(f"{path}: empty dataset (no rows)")
        return kind, [dict(r) for r in ds], None
    raise DataError(f"{path}: unknown container {kind!r} (known: {', '.join(CONTAINERS)})")


def _load_hf(path: str):
    try:
        import datasets
    except ImportError:  # pragma: no cover - a dependency of cropi
        raise DataError(f"{path}: reading a saved Hugging Face dataset needs the `datasets` package") from None
    try:
        ds = datasets.load_from_disk(path)
    except Exception as err:  # noqa: BLE001 - any failure of a user's folder is a data error
        raise DataError(f"{path}: cannot load with datasets.load_from_disk: {_one_line(err)}") from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"{path}: a saved DatasetDict; pass one split folder ({', '.join(f'{path}/{s}' for s in ds)})")
    return ds


def _chat_question(value: Any, path: str, where: str, fname: str) -> str:
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"{path}: {where}: field {fname!r} must be text or a non-empty chat list (got {type(value).__name__})")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{path}: {where}: field {fname}[{i}] must be {{'role': str, 'content': str}} (got {str(m)[:60]})")
    roles = [m["role"] for m in value]
    if roles != ["user"]:
        raise DataError(f"{path}: {where}: field {fname!r}: only single-turn chats [{{'role': 'user', ...}}] are "
                        f"supported (got roles {roles})")
    return value[0]["content"]


def row_problem(row: dict[str, Any], *, name: str, path: str, row_index: int, verifier: str) -> tuple[Problem, bool]:
    """One row as a Problem (and whether its prompt was a chat list). DataError names path, row and field."""
    where = f"row {row_index + 1}"
    pf = next((f for f in PROMPT_FIELDS if f in row), None)
    if pf is None:
        raise DataError(f"{path}: {where}: missing field 'prompt' (or 'question'; row has: {', '.join(sorted(map(str, row)))[:120]})")
    value = row[pf]
    chat = not isinstance(value, str)
    question = _chat_question(value, path, where, pf) if chat else value
    if not question.strip():
        raise DataError(f"{path}: {where}: field {pf!r} is empty")
    if "reward_model" in row:
        rm = row["reward_model"]
        if not isinstance(rm, dict) or "ground_truth" not in rm:
            raise DataError(f"{path}: {where}: field 'reward_model.ground_truth' missing (reward_model is {str(rm)[:60]})")
        gold, gf = rm["ground_truth"], "reward_model.ground_truth"
    else:
        gf = next((f for f in GOLD_FIELDS if f in row), None)
        if gf is None:
            raise DataError(f"{path}: {where}: missing field 'reward_model.ground_truth' (or 'ground_truth' / 'answer')")
        gold = row[gf]
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
        raise DataError(f"{path}: {where}: field {gf!r} must be text or a number (got {type(gold).__name__})")
    try:
        gold = normalize_gold(str(gold), verifier)
    except ValueError as err:
        raise DataError(f"{path}: {where}: field {gf!r}: {err} (value {str(gold)[-60:]!r})") from None
    if not gold:
        raise DataError(f"{path}: {where}: field {gf!r} is empty")
    extra = row.get("extra_info")
    if isinstance(extra, dict) and extra.get("index") is not None:
        key = str(extra["index"])
    elif row.get("id") is not None:
        key = str(row["id"])
    else:
        key = str(row_index)
    source = row.get("data_source")
    domain = str(source) if isinstance(source, str) and source else name
    return Problem(f"{name}/{key}", question.strip(), gold, name, domain, verifier, {"row": row_index + 1}), chat


def read_prompt_set(path: str | os.PathLike, name: str, verifier: str = "math") -> PromptSet:
    """A trainer's pool / validation set as Problems in row order (see the module docstring)."""
    path = str(path)
    container, rows, lines = read_rows(path)
    problems, chats, seen = [], [], {}
    for i, row in enumerate(rows):
        p, chat = row_problem(row, name=name, path=path, row_index=i, verifier=verifier)
        if p.id in seen:
            raise DataError(f"{path}: row {i + 1}: duplicate id {p.id.split('/', 1)[1]!r} (also at row {seen[p.id] + 1})")
        seen[p.id] = i
        problems.append(p)
        chats.append(chat)
    return PromptSet(name, path, container, problems, list(range(len(rows))), chat=all(chats), lines=lines)


def write_subset(ps: PromptSet, indices: Sequence[int], out: str | os.PathLike) -> Path:
    """Write the rows of `ps.problems[indices]` (in input order) to `out` in `ps`'s own container.

    parquet: `out` is a file with the input's schema (schema metadata included); jsonl: the input lines;
    hf: `out` is a `save_to_disk` folder with the input's features. Returns `out`.
    """
    rows = sorted(ps.rows[i] for i in indices)
    out = Path(out)
    if ps.container == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(ps.path)
        pq.write_table(table.take(rows), str(out))
    elif ps.container == "jsonl":
        assert ps.lines is not None
        out.write_text("".join(ps.lines[r] + "\n" for r in rows), encoding="utf-8")
    elif ps.container == "hf":
        ds = _load_hf(ps.path)
        ds.select(rows).flatten_indices().save_to_disk(str(out))
    else:  # pragma: no cover - guarded by read_rows
        raise DataError(f"{ps.path}: cannot write container {ps.container!r}")
    return out


def subset_name(ps: PromptSet) -> str:
    """File / folder name of the written subset: subset.parquet, subset.jsonl or subset/ (HF)."""
    return {"parquet": "subset.parquet", "jsonl": "subset.jsonl", "hf": "subset"}[ps.container]


__all__ = ["PromptSet", "read_prompt_set", "write_subset", "subset_name", "detect_container", "read_rows", "row_problem"]
