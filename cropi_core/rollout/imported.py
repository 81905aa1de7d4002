"""Offline rollouts generated elsewhere: verl rollout dumps and plain (prompt id, response, reward) JSONL.

Two formats are read:
- **verl** — the JSONL files verl's `RayPPOTrainer` writes to `trainer.rollout_data_dir` (one `<step>.jsonl` per
  step; a folder means every `*.jsonl` in it). One line per response: `input` (the prompt ids decoded with
  `skip_special_tokens=True`, so chat template text without its special tokens), `output` (the response, decoded
  the same way), `score` (the sequence reward), `step`, optionally `gts` (the ground truth) and reward extras.
  Lines carry no prompt id, so each is matched to a pool row by its prompt text: the row's prompt rendered with
  the run's template, tokenized and decoded the way verl decodes (`render_key`), whitespace-normalised.
- **plain** — one line per response: `id` (the pool row's id, with or without the `<set name>/` prefix),
  `response` (or `output` / `completion`), `reward` (or `score`).

Sampler log-probabilities are never read: `build_rollouts` teacher-forces the behavior checkpoint on the
tokenized responses (top-p / top-k truncation biases sampler numbers). Responses are tokenized without special
tokens and EOS is appended (dumps are decoded with special tokens skipped, so the EOS the sampler emitted is
gone); a response the tokenizer cannot round-trip means a tokenizer that does not match the rollouts and is an
error naming the file, line and field.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cropi_core.data.loaders import json_row
from cropi_core.data.problem import Problem
from cropi_core.errors import DataError

FORMATS = ("verl", "plain")
_WS = re.compile(r"\s+")
RESPONSE_FIELDS = ("response", "output", "completion")
REWARD_FIELDS = ("reward", "score")


@dataclass(frozen=True)
class Response:
    """One imported response: the pool row it belongs to, its text and reward, and where it was read."""

    row: int  # index into the pool's problems
    text: str
    reward: float
    where: str  # "<file>: line N"


def rollout_files(path: str | Path) -> list[Path]:
    """The JSONL file, or every `*.jsonl` of a folder (verl's rollout_data_dir) in step order."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.jsonl"), key=lambda f: (int(f.stem) if f.stem.isdigit() else 1 << 62, f.name))
        if not files:
            raise DataError(f"{p}: rollouts folder holds no *.jsonl files")
        return files
    if not p.is_file():
        raise DataError(f"{p}: rollouts file not found")
    return [p]


def content_hash(path: str | Path) -> str:
    """sha256 over the rollout files' names and bytes (the imported artifact's key input)."""
    h = hashlib.sha256(b"cropi-imported-rollouts-v1\n")
    for f in rollout_files(path):
        h.update(f.name.encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _lines(path: str | Path):
    for f in rollout_files(path):
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{f}: line {n}"
            yield where, json_row(line, where)


def _field(row: dict, names: tuple[str, ...], where: str, kind: type | tuple) -> Any:
    name = next((n for n in names if n in row), None)
    if name is None:
        raise DataError(f"{where}: missing field {names[0]!r}" + (f" (or {', '.join(map(repr, names[1:]))})" if names[1:] else ""))
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise DataError(f"{where}: field {name!r} must be {getattr(kind, '__name__', 'a number')} (got {type(value).__name__}: {str(value)[:40]!r})")
    return value


def normalise_text(text: str) -> str:
    return _WS.sub(" ", text).strip()


def render_key(tokenizer: Any, prompt_text: str) -> str:
    """The prompt as verl's dump shows it: tokenized, decoded with special tokens skipped, whitespace-normalised."""
    ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    return normalise_text(tokenizer.decode(ids, skip_special_tokens=True))


def read_responses(path: str | Path, fmt: str, problems: list[Problem],
                   render: Callable[[Problem], str] | None = None) -> list[list[Response]]:
    """Responses per pool row (same order as `problems`), validated and matched.

    fmt "plain" matches `id`; fmt "verl" matches `input` against `render(problem)` (see `render_key`), and
    `gts`, when present, must equal the row's gold. Every pool row needs ≥ 2 responses (a group). DataError
    (one line, file + line + field) on any mismatch; nothing is returned partially.
    """
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown rollouts format {fmt!r} (known: {', '.join(FORMATS)})")
    out: list[list[Response]] = [[] for _ in problems]
    if fmt == "plain":
        by_id = {p.id: i for i, p in enumerate(problems)}
        by_key = {p.id.split("/", 1)[-1]: i for i, p in enumerate(problems)}
    else:
        if render is None:
            raise ValueError("verl rollouts need a render function (prompt text as the trainer saw it)")
        by_text: dict[str, int] = {}
        for i, p in enumerate(problems):
            key = render(p)
            if key in by_text:
                raise DataError(f"{path}: pool rows {by_text[key] + 1} and {i + 1} render to the same prompt; "
                                f"verl dumps carry no id to tell them apart (use the plain format)")
            by_text[key] = i
    for where, row in _lines(path):
        if fmt == "plain":
            raw = _field(row, ("id", "prompt_id"), where, (str, int))
            i = by_id.get(str(raw), by_key.get(str(raw)))
            if i is None:
                raise DataError(f"{where}: field 'id': {raw!r} is not an id of the pool")
            text = _field(row, RESPONSE_FIELDS, where, str)
            reward = float(_field(row, REWARD_FIELDS, where, (int, float)))
        else:
            prompt = _field(row, ("input",), where, str)
            i = by_text.get(normalise_text(prompt))
            if i is None:
                raise DataError(f"{where}: field 'input': prompt {normalise_text(prompt)[:60]!r} matches no pool row "
                                f"(rendered with the run's template)")
            gts = row.get("gts")
            if gts is not None and str(gts).strip() != problems[i].gold and not _same_gold(gts, problems[i]):
                raise DataError(f"{where}: field 'gts': {str(gts)[:40]!r} differs from pool row {i + 1}'s ground truth "
                                f"{problems[i].gold!r}")
            text = _field(row, ("output",), where, str)
            reward = float(_field(row, ("score",), where, (int, float)))
        out[i].append(Response(i, text, reward, where))
    for i, rs in enumerate(out):
        if len(rs) < 2:
            raise DataError(f"{path}: pool row {i + 1} (id {problems[i].id!r}) has {len(rs)} response(s) in the "
                            f"rollouts; every prompt needs a group of ≥ 2")
    return out


def _same_gold(gts: Any, problem: Problem) -> bool:
    from cropi_core.data.extractors import normalize_gold

    try:
        return normalize_gold(str(gts), problem.verifier) == problem.gold
    except ValueError:
        return False


def tokenize_responses(tokenizer: Any, responses: list[list[Response]], eos_id: int | None) -> list[list[list[int]]]:
    """Token ids per response (no special tokens, EOS appended when `eos_id` is set); DataError when the
    tokenizer does not round-trip a response's text (a tokenizer that does not match the rollouts)."""
    out = []
    for rs in responses:
        group = []
        for r in rs:
            ids = tokenizer(r.text, add_special_tokens=False)["input_ids"]
            back = tokenizer.decode(ids, skip_special_tokens=False)
            if normalise_text(back) != normalise_text(r.text):
                bad = next((j for j, (a, b) in enumerate(zip(back, r.text)) if a != b), min(len(back), len(r.text)))
                raise DataError(f"{r.where}: field 'output'/'response': the checkpoint's tokenizer does not reproduce "
                                f"the response text (first difference at character {bad}); tokenizer does not match "
                                f"the rollouts")
            group.append(list(ids) + ([int(eos_id)] if eos_id is not None else []))
        out.append(group)
    return out


def build_rollouts(model: Any, tokenizer: Any, problems: list[Problem], responses: list[list[Response]],
                   prompt_texts: list[str], *, temperature: float, batch_size: int = 64,
                   max_tokens: int | None = None):
    """`PromptRollouts` per problem from imported responses; log β by teacher forcing `model` at `temperature`.

    prompt_texts[i]: problem i's prompt as the sampler saw it (template applied). Returns list[PromptRollouts]
    with prompt_ids LongTensor[P_i], K_i responses LongTensor[T], float32 log β [T], rewards FloatTensor[K_i].
    """
    import torch

    from cropi_core.rollout.logprobs import teacher_force_pairs
    from cropi_core.rollout.types import PromptRollouts

    ids = tokenize_responses(tokenizer, responses, tokenizer.eos_token_id)
    prompts = [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"], dtype=torch.long) for t in prompt_texts]
    pairs = [(prompts[i], torch.tensor(r, dtype=torch.long)) for i, group in enumerate(ids) for r in group]
    logps = teacher_force_pairs(model, pairs, temperature=temperature, batch_size=batch_size, max_tokens=max_tokens)
    out, off = [], 0
    for i, group in enumerate(ids):
        k = len(group)
        out.append(PromptRollouts(
            prompt_ids=prompts[i],
            response_ids=[torch.tensor(r, dtype=torch.long) for r in group],
            behavior_logprobs=logps[off:off + k],
            rewards=torch.tensor([r.reward for r in responses[i]], dtype=torch.float32),
            problem_id=problems[i].id,
            texts=[r.text for r in responses[i]],
        ))
        off += k
    return out


__all__ = ["FORMATS", "Response", "read_responses", "render_key", "tokenize_responses", "build_rollouts", "content_hash",
           "rollout_files"]
