"""Artifact keys and content hashes.

`artifact_key` = sha256 of the canonical JSON of (kind, format version, parent keys, config). Canonical JSON
(sorted keys, no whitespace, no NaN, UTF-8) makes keys independent of dict order, process and PYTHONHASHSEED.
Callers pass only the output-determining config fields (e.g. `section.hashable()`, which drops HASH_EXCLUDE).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from storage.errors import StorageError

KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_BUF = 1 << 22  # 4 MiB read blocks for file hashing

# Files of a Hugging Face model folder that determine the model (weights, config, tokenizer).
# Everything else (README, trainer_state.json, optimizer states, logs) does not change the checkpoint's hash.
CHECKPOINT_PATTERNS = (
    "*.safetensors", "*.safetensors.index.json", "*.bin", "*.gguf", "config.json", "generation_config.json",
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "chat_template.*",
)
_CKPT_SKIP = {"optimizer.bin", "scheduler.bin", "training_args.bin", "rng_state.bin"}


def _normalise(obj: Any, where: str = "config") -> Any:
    """JSON-able copy with tuples → lists, numpy scalars → Python; rejects anything ambiguous."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise StorageError(f"{where}: non-finite float {obj!r} cannot be hashed")
        return float(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise StorageError(f"{where}: dict key {k!r} is not a string")
            out[k] = _normalise(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [_normalise(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item) and getattr(obj, "shape", None) == ():
        return _normalise(item(), where)
    raise StorageError(f"{where}: value of type {type(obj).__name__} is not JSON (pass plain JSON values)")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, compact separators, UTF-8 kept, NaN/Infinity refused."""
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BUF):
            h.update(block)
    return h.hexdigest()


def check_key(key: str) -> str:
    """Return `key` if it is a 64-hex-digit artifact key, else raise StorageError (keys become paths)."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise StorageError(f"invalid artifact key {key!r} (expected 64 lowercase hex digits)")
    return key


def artifact_key(kind: str, *, parents: list[str], config: dict, version: int = 1) -> str:
    """sha256 hex of kind + format version + parent keys (order kept) + canonical JSON of `config`.

    `config` must hold only fields that change the output; batch sizes, devices and worker counts must be left
    out by the caller (use `Section.hashable()`).
    """
    if not isinstance(kind, str) or not re.match(r"^[a-z][a-z0-9_]*$", kind):
        raise StorageError(f"invalid artifact kind {kind!r} (lowercase letters, digits, underscore)")
    if not isinstance(config, dict):
        raise StorageError(f"artifact config for kind {kind!r} must be a dict, got {type(config).__name__}")
    for p in parents:
        check_key(p)
    payload = {"kind": kind, "version": int(version), "parents": list(parents), "config": config}
    return sha256_bytes(canonical_json(payload).encode("utf-8"))


def dataset_hash(records: list[dict]) -> str:
    """Content hash of a dataset: its records in order, each as canonical JSON (field order irrelevant)."""
    h = hashlib.sha256(b"cropi-dataset-v1\n")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise StorageError(f"dataset record {i}: expected a dict, got {type(rec).__name__}")
        h.update(canonical_json(rec).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def checkpoint_files(folder: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of the files that define a model folder (see CHECKPOINT_PATTERNS), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise StorageError(f"checkpoint folder not found: {root}")
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in _CKPT_SKIP and any(p.match(pat) for pat in CHECKPOINT_PATTERNS):
            out.append(p.relative_to(root).as_posix())
    return out


def checkpoint_hash(folder: str | os.PathLike) -> str:
    """Content hash of a Hugging Face model folder: weight files, config.json and tokenizer files."""
    files = checkpoint_files(folder)
    if not any(f.endswith((".safetensors", ".bin", ".gguf")) for f in files):
        raise StorageError(f"checkpoint folder {folder}: no weight files (*.safetensors, *.bin, *.gguf)")
    h = hashlib.sha256(b"cropi-checkpoint-v1\n")
    for rel in files:
        h.update(f"{rel}\0{sha256_file(Path(folder) / rel)}\n".encode("utf-8"))
    return h.hexdigest()
