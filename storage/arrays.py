"""Row-chunked Zarr 3 arrays with per-chunk completion records, and ragged (CSR) arrays.

A chunked artifact (e.g. N×k projected gradients) is filled by independent chunk writers, possibly in other
processes or machines. Chunk i holds rows [i·c, min((i+1)·c, N)). A writer owns whole chunks: it writes the
rows (Zarr writes each chunk object atomically on local disk, one PUT on object stores), then a completion
record `records/<i>.json` with the sha256 of the chunk's stored bytes (and the writer's own `meta`, e.g. the
seconds the chunk took, so a killed and resumed array still knows what its earlier chunks cost). A chunk without
a record, or whose bytes no longer match it, is missing. `finalize` writes the manifest with the chunk map once
nothing is missing.

Layout under the artifact folder: `chunked/<name>/` (the Zarr array), `records/spec.json`, `records/<i>.json`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from storage.errors import StorageError
from storage.keys import sha256_bytes
from storage.manifest import ArrayInfo, ChunkInfo, FileInfo, Manifest, validate_relpath
from storage.refs import ArtifactRef
from storage.root import FS


class Store(Protocol):
    """What arrays need of a `storage.store.Store` (which builds them: this module must not import it back)."""

    io: FS
    local: bool
    storage_options: dict

    def url_of(self, path: str) -> str: ...
    def artifact_dir(self, key: str) -> str: ...
    def commit(self, m: Manifest, *, own_payload_shared: bool = False) -> tuple[Manifest, bool]: ...
    def ref(self, key: str) -> ArtifactRef: ...

CHUNKED_PAYLOAD = "chunked"
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool")
CODECS = ("none", "zstd")
TARGET_CHUNK_BYTES = 16 << 20


def _compressors(codec: str | None):
    codec = codec or "none"
    if codec not in CODECS:
        raise StorageError(f"unknown array codec {codec!r} (one of {CODECS})")
    return None if codec == "none" else [ZstdCodec(level=1)]


def zarr_store(store: "Store", path: str, read_only: bool = False):
    """A Zarr store rooted at the fsspec path `path` (LocalStore on local disk, FsspecStore otherwise)."""
    if store.local:
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(store.url_of(path), storage_options=store.storage_options or None,
                                             read_only=read_only)


def create_zarr(zstore, shape: tuple[int, ...], chunk_rows: int, dtype: str, codec: str | None) -> zarr.Array:
    return zarr.create_array(
        store=zstore, shape=tuple(shape), chunks=(chunk_rows, *shape[1:]), dtype=dtype,
        compressors=_compressors(codec), fill_value=0,
        config={"write_empty_chunks": True},  # every chunk must exist as an object so it can be checksummed
    )


def _writable(arr: zarr.Array) -> zarr.Array:
    # write_empty_chunks is a runtime setting, not stored in zarr.json: without it an all-zero chunk written
    # through a reopened array would not be stored at all (and could never be checksummed)
    return arr.with_config({"write_empty_chunks": True})


def default_chunk_rows(shape: tuple[int, ...], dtype: str) -> int:
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize if len(shape) > 1 else np.dtype(dtype).itemsize
    return int(max(1, min(max(shape[0], 1), TARGET_CHUNK_BYTES // max(row_bytes, 1))))


def chunk_key(shape: tuple[int, ...] | list[int], i: int) -> str:
    return "c/" + "/".join([str(i)] + ["0"] * (len(shape) - 1))


def write_whole_array(store: "Store", path: str, data: np.ndarray, chunk_rows: int | None, codec: str | None) -> ArrayInfo:
    """Write `data` as a row-chunked Zarr array at fsspec `path`; return its ArrayInfo (path filled by caller)."""
    data = np.ascontiguousarray(data)
    if data.ndim == 0:
        raise StorageError("cannot store a 0-d array; wrap it in a 1-d array")
    dtype = str(data.dtype)
    if dtype not in DTYPES:
        raise StorageError(f"array dtype {dtype} not supported (one of {DTYPES})")
    rows = chunk_rows or default_chunk_rows(data.shape, dtype)
    arr = create_zarr(zarr_store(store, path), data.shape, rows, dtype, codec)
    if data.size:
        arr[...] = data
    n = -(-data.shape[0] // rows)
    chunks = []
    for i in range(n):
        raw = store.io.cat(f"{path}/{chunk_key(data.shape, i)}")
        if raw is None:
            raise StorageError(f"zarr chunk {i} of {path} was not written")
        chunks.append(ChunkInfo(nbytes=len(raw), sha256=sha256_bytes(raw)))
    return ArrayInfo(path="", shape=list(data.shape), dtype=dtype, chunk_rows=rows, chunks=chunks)


def ragged_to_csr(seqs: list[Any], dtype: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """list of 1-d arrays → (flat, offsets[int64, len+1]) with seq i = flat[offsets[i]:offsets[i+1]]."""
    arrays = [np.asarray(s) for s in seqs]
    for i, a in enumerate(arrays):
        if a.ndim != 1:
            raise StorageError(f"ragged element {i} has shape {a.shape}; expected 1-d")
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    if arrays:
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
    if dtype is None:
        dtype = str(np.result_type(*arrays)) if arrays and any(len(a) for a in arrays) else "int64"
    flat = np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype=dtype)
    return flat, offsets


def csr_to_ragged(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
        raise StorageError("ragged offsets are inconsistent with the flat array")
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


class ChunkedArray:
    """A staging Zarr array of one artifact, written chunk by chunk by independent writers.

    shape (N, ...), chunk i = rows `chunk_rows(i)`; dtype float16 by default (float32 allowed). If the staging
    already exists with another chunk_rows/codec, the existing layout is used: always take the chunk ranges from
    `num_chunks` / `chunk_rows(i)` of the returned object, not from your own chunk size.
    """

    def __init__(self, store: "Store", key: str, name: str, *, kind: str, shape: tuple[int, ...], chunk_rows: int,
                 dtype: str = "float16", parents: list[str], config: dict, meta: dict | None = None,
                 format_version: int = 1, codec: str = "none") -> None:
        validate_relpath(name, "array name")
        shape = tuple(int(s) for s in shape)
        if not shape or any(s < 0 for s in shape):
            raise StorageError(f"array {name!r}: invalid shape {shape}")
        if int(chunk_rows) < 1:
            raise StorageError(f"array {name!r}: chunk_rows must be ≥ 1 (got {chunk_rows})")
        if str(np.dtype(dtype)) not in DTYPES:
            raise StorageError(f"array {name!r}: dtype {dtype} not supported (one of {DTYPES})")
        _compressors(codec)
        self.store, self.key, self.name, self.kind = store, key, name, kind
        self.shape, self.rows_per_chunk, self.dtype = shape, int(chunk_rows), str(np.dtype(dtype))
        self.parents, self.config, self.meta, self.format_version = list(parents), dict(config), dict(meta or {}), format_version
        self.codec = codec
        self.num_chunks = -(-shape[0] // self.rows_per_chunk)
        adir = store.artifact_dir(key)
        self._path = f"{adir}/{CHUNKED_PAYLOAD}/{name}"
        self._records = f"{adir}/records"
        self._spec = {"kind": kind, "key": key, "name": name, "shape": list(shape), "chunk_rows": self.rows_per_chunk,
                      "dtype": self.dtype, "codec": codec, "format_version": format_version}
        self._zarr = self._open_or_create()
        self._mine: dict[int, ChunkInfo] = {}  # chunks this object wrote (already hashed from storage)
        self._meta: dict[int, dict] = {}  # the writer's meta of each chunk record read or written

    def _open_or_create(self) -> zarr.Array:
        io = self.store.io
        raw = io.cat(f"{self._records}/spec.json")
        if raw is None:
            io.write_atomic(f"{self._records}/spec.json", json.dumps(self._spec, sort_keys=True).encode())
        else:
            try:
                old = json.loads(raw)
            except ValueError:
                old = None
            if old is not None and old != self._spec:
                diff = {k: (old.get(k), v) for k, v in self._spec.items() if old.get(k) != v}
                if set(diff) <= {"chunk_rows", "codec"}:
                    # chunk_rows/codec do not change the content (they are hash-excluded): the existing layout
                    # wins, so writers started with another chunk size still share one staging array
                    self._spec = old
                    self.rows_per_chunk, self.codec = int(old["chunk_rows"]), old["codec"]
                    self.num_chunks = -(-self.shape[0] // self.rows_per_chunk)
                else:
                    raise StorageError(f"array staging of {self.kind} {self.key[:8]} exists with a different layout: "
                                       + ", ".join(f"{k}={a!r} (requested {b!r})" for k, (a, b) in diff.items()))
        zs = zarr_store(self.store, self._path)
        try:
            arr = _writable(zarr.open_array(store=zs, mode="r+"))
            if tuple(arr.shape) != self.shape or str(arr.dtype) != self.dtype or arr.chunks[0] != self.rows_per_chunk:
                raise StorageError(f"array staging of {self.kind} {self.key[:8]}: Zarr metadata does not match spec")
            return arr
        except (FileNotFoundError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeTypeValidationError):
            pass
        try:
            return create_zarr(zs, self.shape, self.rows_per_chunk, self.dtype, self.codec)
        except zarr.errors.ContainsArrayError:  # another writer created it first: same spec, open it
            return _writable(zarr.open_array(store=zs, mode="r+"))

    @property
    def zarr(self) -> zarr.Array:
        return self._zarr

    def chunk_rows(self, i: int) -> tuple[int, int]:
        """Row range [start, stop) of chunk i."""
        if not 0 <= i < self.num_chunks:
            raise StorageError(f"chunk {i} out of range (array has {self.num_chunks} chunks)")
        start = i * self.rows_per_chunk
        return start, min(start + self.rows_per_chunk, self.shape[0])

    def _chunk_path(self, i: int) -> str:
        return f"{self._path}/{chunk_key(self.shape, i)}"

    def write_chunk(self, i: int, data: np.ndarray, meta: dict | None = None) -> ChunkInfo:
        """Write rows `chunk_rows(i)` (cast to the array dtype), then the chunk's completion record, which keeps
        `meta` (JSON; `chunk_meta(i)` reads it back, in this process or any other)."""
        start, stop = self.chunk_rows(i)
        data = np.asarray(data)
        if data.shape != (stop - start, *self.shape[1:]):
            raise StorageError(f"chunk {i} of {self.kind} {self.key[:8]}: expected shape "
                               f"{(stop - start, *self.shape[1:])}, got {data.shape}")
        self._zarr[start:stop] = data.astype(self.dtype, copy=False)
        raw = self.store.io.cat(self._chunk_path(i))
        if raw is None:
            raise StorageError(f"chunk {i} of {self.kind} {self.key[:8]} vanished right after writing")
        info = ChunkInfo(nbytes=len(raw), sha256=sha256_bytes(raw))
        record = {"chunk": i, "rows": [start, stop], "object": chunk_key(self.shape, i), **info.model_dump()}
        if meta:
            record["meta"] = dict(meta)
        self.store.io.write_atomic(f"{self._records}/{i}.json", json.dumps(record).encode())
        self._mine[i] = info
        self._meta[i] = dict(meta or {})
        return info

    def chunk_meta(self, i: int) -> dict:
        """The `meta` its writer gave chunk i's completion record ({} when none, or when the chunk is missing)."""
        if i not in self._meta:
            self._check(i, verify=False)
        return dict(self._meta.get(i, {}))

    def chunk_complete(self, i: int, verify: bool = True) -> bool:
        """Is chunk i written (and, with verify, intact)? Reads only chunk i: use this in a chunk task instead of
        `i in missing_chunks()`, which reads every chunk."""
        self.chunk_rows(i)
        return self._check(i, verify) is not None

    def _check(self, i: int, verify: bool) -> ChunkInfo | None:
        io = self.store.io
        raw = io.cat(f"{self._records}/{i}.json")
        try:
            rec = json.loads(raw) if raw is not None else None
            info = ChunkInfo(nbytes=rec["nbytes"], sha256=rec["sha256"]) if rec and rec.get("chunk") == i else None
            meta = rec.get("meta") if info is not None else None
            self._meta[i] = dict(meta) if isinstance(meta, dict) else {}
        except (ValueError, KeyError, TypeError, AttributeError):
            info, self._meta[i] = None, {}
        if info is not None and verify:
            data = io.cat(self._chunk_path(i))
            if data is None or len(data) != info.nbytes or sha256_bytes(data) != info.sha256:
                warnings.warn(f"chunk {i} of {self.kind} {self.key[:8]} array {self.name!r} is corrupt "
                              "(checksum mismatch); it will be rewritten", stacklevel=4)
                info, self._meta[i] = None, {}
        return info

    def _scan(self, verify: bool, trust_mine: bool = False) -> tuple[list[int], dict[int, ChunkInfo]]:
        missing, done = [], {}
        for i in range(self.num_chunks):
            # trust_mine: a chunk this object wrote (hashed from storage after writing) is not re-hashed as long
            # as its record is unchanged
            info = self._check(i, verify=False)
            if info is not None and verify and not (trust_mine and self._mine.get(i) == info):
                info = self._check(i, verify=True)
            (missing.append(i) if info is None else done.__setitem__(i, info))
        return missing, done

    def missing_chunks(self, verify: bool = True) -> list[int]:
        """Chunks not written or (with verify) whose stored bytes no longer match their record."""
        return self._scan(verify)[0]

    def finalize(self, meta: Callable[[], dict] | None = None) -> ArtifactRef:
        """All chunks complete and intact → write the manifest (with the chunk map); else StorageError.

        Every chunk written by another writer is re-hashed from storage; chunks this object wrote itself (hashed
        from storage right after writing, record unchanged since) are not hashed a second time. `meta`, called
        once every chunk is verified and just before the manifest is written, returns entries to add to the
        manifest's meta (e.g. what the chunks cost, from `chunk_meta`).
        """
        missing, done = self._scan(verify=True, trust_mine=True)
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
            raise StorageError(f"cannot finalize {self.kind} {self.key[:8]} array {self.name!r}: "
                               f"{len(missing)} of {self.num_chunks} chunks missing or corrupt: [{shown}]")
        meta_raw = self.store.io.cat(f"{self._path}/zarr.json")
        if meta_raw is None:
            raise StorageError(f"cannot finalize {self.kind} {self.key[:8]}: Zarr metadata missing")
        info = ArrayInfo(path=self.name, shape=list(self.shape), dtype=self.dtype, chunk_rows=self.rows_per_chunk,
                         chunks=[done[i] for i in range(self.num_chunks)])
        if meta is not None:
            self.meta.update(meta())
        m = Manifest(kind=self.kind, key=self.key, parents=self.parents, config=self.config,
                     format_version=self.format_version, payload=CHUNKED_PAYLOAD,
                     files={f"{self.name}/zarr.json": FileInfo(size=len(meta_raw), sha256=sha256_bytes(meta_raw))},
                     arrays={self.name: info}, meta=self.meta)
        final, _ = self.store.commit(m, own_payload_shared=True)
        return self.store.ref(final.key)
