"""`Manifest`: what an artifact is, written last. No valid manifest ⇒ the artifact does not exist.

A manifest carries its own sha256 (`checksum`, over its canonical JSON without that field), so a truncated or
edited manifest is detected on every read. Paths in it are validated to stay inside the artifact folder.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from storage.errors import StorageError
from storage.keys import canonical_json, check_key, sha256_bytes

MANIFEST_VERSION = 1
SUPPORTED_MANIFEST_VERSIONS = frozenset({1})
MANIFEST_NAME = "manifest.json"


class FileInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    size: int = Field(ge=0)  # bytes
    sha256: str


class ChunkInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    nbytes: int = Field(ge=0)  # stored (encoded) bytes of the chunk object
    sha256: str  # of those stored bytes


class ArrayInfo(BaseModel):
    """A Zarr array chunked by rows: chunk i holds rows [i·chunk_rows, (i+1)·chunk_rows)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str  # folder of the Zarr array, relative to the payload folder
    shape: list[int]
    dtype: str
    chunk_rows: int = Field(gt=0)
    chunks: list[ChunkInfo]  # the chunk map, one entry per row chunk

    def chunk_key(self, i: int) -> str:
        """Zarr v3 default chunk key of row chunk i (all other dims are single chunks)."""
        return "c/" + "/".join([str(i)] + ["0"] * (len(self.shape) - 1))


class Manifest(BaseModel):
    """kind, key, parents, config, format_version, files, created_at, size, meta (+ arrays, payload, checksum)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    manifest_version: int = MANIFEST_VERSION
    kind: str
    key: str
    parents: list[str]
    config: dict[str, Any]
    format_version: int = 1  # the kind's payload format version (part of the key)
    payload: str  # folder (relative to the artifact folder) holding the files and arrays
    files: dict[str, FileInfo] = {}  # relative to payload
    arrays: dict[str, ArrayInfo] = {}
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    size: int = 0  # total payload bytes
    meta: dict[str, Any] = {}
    checksum: str = ""

    def body_checksum(self) -> str:
        return sha256_bytes(canonical_json(self.model_dump(mode="json", exclude={"checksum"})).encode("utf-8"))

    def sealed(self) -> "Manifest":
        """A copy with `size` and `checksum` filled in."""
        size = sum(f.size for f in self.files.values()) + sum(c.nbytes for a in self.arrays.values() for c in a.chunks)
        m = self.model_copy(update={"size": size, "checksum": ""})
        return m.model_copy(update={"checksum": m.body_checksum()})

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8")

    @property
    def short(self) -> str:
        return self.key[:8]


def validate_relpath(path: str, what: str = "path") -> str:
    """Return `path` if it is a safe relative POSIX path (no '..', not absolute, no backslashes), else raise."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise StorageError(f"unsafe {what} {path!r}: must be a relative path inside the artifact")
    if ":" in path.split("/")[0]:  # "c:..." or "s3://..."
        raise StorageError(f"unsafe {what} {path!r}: must be a relative path inside the artifact")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"unsafe {what} {path!r}: '..', '.' and empty components are not allowed")
    return path


def parse_manifest(raw: bytes, where: str, key: str | None = None) -> Manifest | None:
    """Parse + verify a manifest. Corrupt (bad JSON, bad checksum, wrong key) ⇒ warn and return None.

    Unknown manifest_version or unsafe paths ⇒ StorageError (refuse rather than guess).
    """
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        warnings.warn(f"corrupt manifest {where}: {type(e).__name__}: {str(e)[:80]}; artifact treated as absent",
                      stacklevel=3)
        return None
    version = data.get("manifest_version")
    if version not in SUPPORTED_MANIFEST_VERSIONS:
        raise StorageError(f"{where}: unknown manifest_version {version!r} (this cropi reads "
                           f"{sorted(SUPPORTED_MANIFEST_VERSIONS)}); upgrade cropi to read it")
    try:
        m = Manifest.model_validate(data)
    except ValidationError as e:
        warnings.warn(f"corrupt manifest {where}: {e.error_count()} invalid field(s); artifact treated as absent",
                      stacklevel=3)
        return None
    if m.checksum != m.body_checksum() or (key is not None and m.key != key):
        warnings.warn(f"corrupt manifest {where}: checksum or key mismatch; artifact treated as absent", stacklevel=3)
        return None
    check_key(m.key)
    for p in m.parents:
        check_key(p)
    validate_relpath(m.payload, f"payload folder in {where}")
    for name in m.files:
        validate_relpath(name, f"file name in {where}")
    for name, a in m.arrays.items():
        validate_relpath(name, f"array name in {where}")
        validate_relpath(a.path, f"array path in {where}")
    return m
