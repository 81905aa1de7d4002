"""Read dataset files (JSONL / JSON list / Parquet, any fsspec URL) into normalised `Problem`s.

Field mapping comes from a `DatasetSpec`. Every problem with the input is a one-line `DataError` naming the
file, the row (JSONL: 1-based line number; JSON/Parquet: 1-based row) and the field. Rows whose answer is
missing or empty are skipped and counted (MATH train has 2), never turned into a bogus gold.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Iterator

import fsspec

from cropi_core.config import DatasetSpec
from cropi_core.data.extractors import EXTRACTORS, normalize_gold
from cropi_core.data.problem import Problem
from cropi_core.errors import DataError

_log = logging.getLogger(__name__)
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class LoadResult:
    """Problems read from one file plus what was left out and why."""

    problems: list[Problem]
    rows: int  # data rows in the file
    skipped_empty_answer: list[int] = field(default_factory=list)  # row numbers (as in error messages)


def detect_format(path: str, fmt: str = "auto") -> str:
    """"jsonl" | "json" | "parquet" from `fmt`, or from the extension (`.gz`/`.bz2`/... compression ignored)."""
    if fmt != "auto":
        return fmt
    name = path.lower().rstrip("/")
    for comp in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(comp)
    for ext, kind in _FORMATS.items():
        if name.endswith(ext):
            return kind
    raise DataError(f"{path}: cannot tell the format from the extension (use .jsonl/.json/.parquet or set format)")


def _open_text(path: str):
    return fsspec.open(path, "rt", encoding="utf-8", compression="infer")


def iter_rows(path: str, fmt: str = "auto") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (where, row) for each data row; `where` is "line N" (JSONL) or "row N" (JSON/Parquet), 1-based.

    Raises DataError on a missing/unreadable/empty file or a row that is not a JSON object.
    """
    kind = detect_format(path, fmt)
    count = 0
    try:
        if kind == "jsonl":
            with _open_text(path) as f:
                for n, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    yield f"line {n}", json_row(line, f"{path}: line {n}")
                    count += 1
        elif kind == "json":
            with _open_text(path) as f:
                text = f.read()
            if not text.strip():
                raise DataError(f"{path}: empty dataset file (no rows)")
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {err.lineno}: invalid JSON: {err.msg} at column {err.colno}") from None
            except RecursionError:
                raise DataError(f"{path}: invalid JSON: nested too deeply") from None
            if not isinstance(data, list):
                raise DataError(f"{path}: a .json dataset must be a list of objects, got {type(data).__name__}")
            for n, row in enumerate(data, start=1):
                yield f"row {n}", _as_row(row, path, f"row {n}")
                count += 1
        else:
            yield from _iter_parquet(path)
            return
    except FileNotFoundError:
        raise DataError(f"{path}: dataset file not found") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read: {_one_line(err)}") from None
    if count == 0:
        raise DataError(f"{path}: empty dataset file (no rows)")


def _iter_parquet(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fsspec.open(path, "rb") as f:
            table = pq.read_table(f)
    except (pa.ArrowInvalid, pa.ArrowException) as err:
        raise DataError(f"{path}: not a readable Parquet file: {_one_line(err)}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: empty dataset file (no rows)")
    for n, row in enumerate(table.to_pylist(), start=1):
        yield f"row {n}", row


def json_row(line: str, where: str) -> dict[str, Any]:
    """One JSONL line as a dict; DataError "<where>: ..." (one line) when it is not a JSON object."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: invalid JSON: {err.msg} at column {err.colno}") from None
    except RecursionError:
        raise DataError(f"{where}: invalid JSON: nested too deeply") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def _as_row(row: Any, path: str, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{path}: {where}: expected a JSON object, got {type(row).__name__}")
    return row


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def _get(row: dict[str, Any], name: str, path: str, where: str) -> Any:
    if name not in row:
        fields = ", ".join(sorted(map(str, row)))[:200]
        raise DataError(f"{path}: {where}: missing field {name!r} (row has: {fields})")
    return row[name]


def _prompt(row: dict[str, Any], spec: DatasetSpec, where: str) -> str:
    names = [spec.prompt_field] if isinstance(spec.prompt_field, str) else list(spec.prompt_field)
    parts = []
    for name in names:
        value = _get(row, name, spec.path, where)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise DataError(f"{spec.path}: {where}: field {name!r} must be text (got {type(value).__name__})")
        if str(value).strip():
            parts.append(str(value).strip())
    if not parts:
        raise DataError(f"{spec.path}: {where}: field {'+'.join(names)!r} is empty")
    return " ".join(parts)


def read_dataset(spec: DatasetSpec) -> LoadResult:
    """All rows of `spec.path` as Problems (no limit, no de-duplication); see `load_dataset`."""
    if spec.extractor not in EXTRACTORS:  # also guarded by the config schema; specs may be built in code
        raise DataError(f"{spec.path}: unknown extractor {spec.extractor!r} (known: {', '.join(EXTRACTORS)})")
    extract = EXTRACTORS[spec.extractor]
    problems: list[Problem] = []
    skipped: list[int] = []
    seen_ids: dict[str, str] = {}
    rows = 0
    for where, row in iter_rows(spec.path, spec.format):
        rows += 1
        row_no = int(where.split()[1])
        prompt = _prompt(row, spec, where)
        raw = _get(row, spec.answer_field, spec.path, where)
        try:
            gold = extract(raw)
            if gold is not None:
                gold = normalize_gold(gold, spec.verifier)
        except ValueError as err:
            raise DataError(f"{spec.path}: {where}: field {spec.answer_field!r}: {err} (value {str(raw)[-60:]!r})") from None
        if gold is None:
            skipped.append(row_no)
            continue
        key = str(_get(row, spec.id_field, spec.path, where)) if spec.id_field else str(rows - 1)
        pid = f"{spec.name}/{key}"
        if pid in seen_ids:
            raise DataError(f"{spec.path}: {where}: field {spec.id_field!r}: duplicate id {key!r} (also at {seen_ids[pid]})")
        seen_ids[pid] = where
        if spec.domain_field:
            domain = str(_get(row, spec.domain_field, spec.path, where))
        else:
            domain = spec.domain or spec.name
        meta: dict[str, Any] = {"row": row_no}
        for name in spec.meta_fields:
            meta[name] = _get(row, name, spec.path, where)
        problems.append(Problem(pid, prompt, gold, spec.name, domain, spec.verifier, meta))
    if skipped:
        _log.warning("%s: skipped %d row(s) with an empty answer: %s", spec.path, len(skipped), skipped[:10])
    return LoadResult(problems, rows, skipped)


def load_dataset(spec: DatasetSpec) -> list[Problem]:
    """Problems of one dataset file, in file order; the first `spec.limit` if set.

    ids are "<name>/<id_field value>" or "<name>/<0-based row index>". Rows with an empty answer are
    skipped (logged, see `read_dataset` for the count). Raises DataError on malformed input.
    """
    problems = read_dataset(spec).problems
    return problems[: spec.limit] if spec.limit else problems


def load_acc_history(path: str) -> dict[int, list[float]]:
    """One-Shot-RLVR accuracy history (`{"<index>": [acc, ...]}`) -> {index: [per-step accuracy]}.

    The lists are the per-step rollout accuracies of one example during RLVR; their variance is the
    "historical variance" selection baseline.
    """
    try:
        with _open_text(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: accuracy history file not found") from None
    if not text.strip():
        raise DataError(f"{path}: empty accuracy history file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {err.lineno}: invalid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: accuracy history must be an object {{index: [acc, ...]}}, got {type(data).__name__}")
    out: dict[int, list[float]] = {}
    for key, accs in data.items():
        try:
            index = int(key)
        except ValueError:
            raise DataError(f"{path}: key {key!r} is not an integer index") from None
        if not isinstance(accs, list) or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in accs):
            raise DataError(f"{path}: key {key!r}: value must be a list of numbers (got {str(accs)[:60]})")
        out[index] = [float(a) for a in accs]
    return out


def problems_to_jsonl(problems: list[Problem]) -> bytes:
    """Normalised dataset artifact body: one `Problem.to_record()` per line, UTF-8."""
    return "".join(json.dumps(p.to_record(), ensure_ascii=False, sort_keys=True) + "\n" for p in problems).encode()


def problems_from_jsonl(data: bytes | str, source: str = "<problems>") -> list[Problem]:
    """Inverse of `problems_to_jsonl`; DataError names `source` and the line."""
    text = data.decode() if isinstance(data, bytes) else data
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(Problem.from_record(json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{source}: line {n}: invalid JSON: {err.msg} at column {err.colno}") from None
        except DataError as err:
            raise DataError(f"{source}: line {n}: {err}") from None
    return out
