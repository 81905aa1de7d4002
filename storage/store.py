"""`Store`: content-addressed artifacts under one fsspec root, and `ArtifactWriter`.

Layout: `<root>/artifacts/<key>/manifest.json` plus the payload folder the manifest names (`w-<id>/` for a
writer — each writer has its own, so two concurrent writers never touch each other's files — or `chunked/` for
a chunked array, shared by its chunk writers). The manifest is written last; the first complete manifest wins
and a later writer verifies and reuses it (deleting its own payload).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
import numpy as np
import zarr

from storage.arrays import ChunkedArray, csr_to_ragged, ragged_to_csr, write_whole_array, zarr_store
from storage.errors import StorageError
from storage.keys import KEY_RE, check_key, sha256_bytes, sha256_file
from storage.manifest import MANIFEST_NAME, ArrayInfo, FileInfo, Manifest, parse_manifest, validate_relpath
from storage.refs import ArtifactRef
from storage.root import FS, VERIFY_MODES, cache_dir, resolve_url

IDENTITY_NAME = "store.json"  # {"id": <random hex>} at the root

SMALL_FILE = 1 << 20  # "sampled" verification hashes every item up to this size ...
SAMPLED_LARGE = 2  # ... and this many larger items, chosen at random
VERIFY_THREADS = 8  # parallel GETs when verifying on an object store


def open_store(url: Any = None, *, verify: str | None = None, storage_options: dict | None = None) -> "Store":
    """Open (creating if needed) the artifact store at `url`: a plain path, file://, memory://, s3://, ...

    `verify`: payload checks on read — "full" (hash everything), "sampled" (sizes + a few hashes; default),
    "manifest" (manifest checksum only). Manifests are always verified.
    """
    url, cfg_verify = resolve_url(url)
    verify = verify or cfg_verify or os.environ.get("CROPI_STORAGE_VERIFY") or "sampled"
    if verify not in VERIFY_MODES:
        raise StorageError(f"storage verify mode {verify!r} is not one of {VERIFY_MODES}")
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as e:
        raise StorageError(f"cannot open storage root {url!r}: {e}") from e
    local = isinstance(fs, LocalFileSystem)
    if local:
        path = os.path.abspath(os.path.expanduser(path))
    path = path.rstrip("/") or "/"
    return Store(url=url, fs=fs, root=path, local=local, verify=verify, storage_options=storage_options or {})


class Store:
    """An artifact store rooted at an fsspec URL. Create with `storage.open_store(url)`."""

    def __init__(self, *, url: str, fs: fsspec.AbstractFileSystem, root: str, local: bool, verify: str,
                 storage_options: dict) -> None:
        self.url, self.fs, self.root, self.local, self.verify_mode = url, fs, root, local, verify
        self.storage_options = storage_options
        self.io = FS(fs, local)
        self.artifacts_dir = f"{root.rstrip('/')}/artifacts"
        if local:
            os.makedirs(self.artifacts_dir, exist_ok=True)

    def __repr__(self) -> str:
        return f"Store({self.url!r}, verify={self.verify_mode!r})"

    def __reduce__(self):  # picklable by URL (e.g. passed to Ray/Prefect workers): reopened on arrival
        return (_reopen, (self.url, self.verify_mode, self.storage_options))

    # ---- paths -------------------------------------------------------------------------------------------
    def artifact_dir(self, key: str) -> str:
        return f"{self.artifacts_dir}/{check_key(key)}"

    def url_of(self, path: str) -> str:
        return "file://" + path if self.local else self.fs.unstrip_protocol(path)

    def uri(self, key: str) -> str:
        """fsspec URL of the artifact folder."""
        return self.url_of(self.artifact_dir(key))

    def _payload_path(self, m: Manifest, rel: str = "") -> str:
        base = f"{self.artifact_dir(m.key)}/{validate_relpath(m.payload, 'payload folder')}"
        return f"{base}/{validate_relpath(rel, 'file name')}" if rel else base

    # ---- manifests ---------------------------------------------------------------------------------------
    def _read_manifest(self, key: str) -> Manifest | None:
        path = f"{self.artifact_dir(key)}/{MANIFEST_NAME}"
        raw = self.io.cat(path)
        if raw is None:
            return None
        return parse_manifest(raw, self.url_of(path), key)

    def exists(self, key: str, verify: str | None = None) -> bool:
        """True iff the artifact has a valid manifest and its payload passes `verify` (default: the store's mode)."""
        m = self._read_manifest(key)
        if m is None:
            return False
        problems = verify_payload(self.io, self._payload_path(m), m, verify or self.verify_mode)
        if problems:
            warnings.warn(f"artifact {m.kind} {key[:8]} at {self.uri(key)} is damaged ({problems[0]}"
                          f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}); treated as absent",
                          stacklevel=2)
            return False
        return True

    def state(self, key: str, verify: str | None = None) -> str:
        """"intact", "absent" (never completed: no manifest, none moved aside) or "damaged" (a corrupt manifest,
        a payload failing `verify`, or a manifest a reader moved aside as corrupt); warns when damaged."""
        path = f"{self.artifact_dir(key)}/{MANIFEST_NAME}"
        raw = self.io.cat(path)
        if raw is None:
            self.io.refresh(self.artifact_dir(key))
            try:
                names = [n.rstrip("/").rsplit("/", 1)[-1] for n in self.fs.ls(self.artifact_dir(key), detail=False)]
            except (FileNotFoundError, NotADirectoryError):
                names = []
            return "damaged" if any(n.startswith(MANIFEST_NAME + ".corrupt-") for n in names) else "absent"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ok = self.exists(key, verify)
        for w in caught:  # re-emit the one-line warning naming the artifact
            warnings.warn(str(w.message), stacklevel=2)
        return "intact" if ok else "damaged"

    def manifest(self, key: str) -> Manifest:
        """The verified manifest of a complete artifact; StorageError if it does not exist."""
        m = self._read_manifest(key)
        if m is None:
            raise StorageError(f"artifact {key[:8]} does not exist in {self.url} (no valid manifest)")
        return m

    def ref(self, key: str) -> ArtifactRef:
        m = self.manifest(key)
        return ArtifactRef(kind=m.kind, key=m.key, uri=self.uri(key))

    def verify(self, key: str, mode: str = "full") -> list[str]:
        """Problems found in the artifact's payload (empty list = intact)."""
        m = self.manifest(key)
        return verify_payload(self.io, self._payload_path(m), m, mode)

    def commit(self, m: Manifest, *, own_payload_shared: bool = False) -> tuple[Manifest, bool]:
        """Write manifest `m` (last step of a writer). Returns (the manifest in force, reused?).

        First complete manifest wins: if a valid, intact one already exists we reuse it and delete our own
        payload (unless it is shared, as for chunked arrays). A corrupt or damaged existing one is replaced.
        """
        m = m.sealed()
        path = f"{self.artifact_dir(m.key)}/{MANIFEST_NAME}"
        if self.io.create_exclusive(path, m.to_bytes()):
            return m, False
        existing = self._read_manifest(m.key)
        if existing is not None and not verify_payload(self.io, self._payload_path(existing), existing, "full"):
            if not own_payload_shared and existing.payload != m.payload:
                self.io.rm(self._payload_path(m))
            return existing, True
        self.io.write_atomic(path, m.to_bytes())
        if existing is not None and existing.payload != m.payload and not existing.payload.startswith("chunked"):
            self.io.rm(self._payload_path(existing))
        return m, False

    # ---- writing -----------------------------------------------------------------------------------------
    def writer(self, kind: str, key: str, *, parents: list[str], config: dict, meta: dict | None = None,
               format_version: int = 1) -> "ArtifactWriter":
        """Context manager writing one artifact; the manifest is written on clean exit only."""
        return ArtifactWriter(self, kind, key, parents=parents, config=config, meta=meta, format_version=format_version)

    def array(self, key: str, name: str, *, kind: str, shape: tuple[int, ...], chunk_rows: int,
              dtype: str = "float16", parents: list[str], config: dict, meta: dict | None = None,
              format_version: int = 1, codec: str = "none") -> ChunkedArray:
        """Create or open the staging array of a chunked artifact (safe to call from many writers)."""
        return ChunkedArray(self, key, name, kind=kind, shape=shape, chunk_rows=chunk_rows, dtype=dtype,
                            parents=parents, config=config, meta=meta, format_version=format_version, codec=codec)

    def write_ragged(self, w: "ArtifactWriter", name: str, seqs: list[Any], dtype: str | None = None) -> None:
        w.put_ragged(name, seqs, dtype=dtype)

    # ---- reading -----------------------------------------------------------------------------------------
    def read_bytes(self, key: str, name: str) -> bytes:
        """Bytes of payload file `name`, always checksum-verified."""
        m = self.manifest(key)
        info = m.files.get(name)
        if info is None:
            raise StorageError(f"artifact {m.kind} {key[:8]} has no file {name!r} (has: {', '.join(sorted(m.files)[:8])})")
        if self.local:
            check_inside(self._payload_path(m), name, m)
        raw = self.io.cat(self._payload_path(m, name))
        if raw is None or len(raw) != info.size or sha256_bytes(raw) != info.sha256:
            raise self.quarantine(m, f"file {name!r} is missing or corrupt (checksum mismatch)")
        return raw

    def read_json(self, key: str, name: str) -> Any:
        return json.loads(self.read_bytes(key, name).decode("utf-8"))

    def _array_info(self, m: Manifest, name: str) -> ArrayInfo:
        info = m.arrays.get(name)
        if info is None:
            raise StorageError(f"artifact {m.kind} {m.key[:8]} has no array {name!r} (has: {', '.join(sorted(m.arrays))})")
        return info

    def open_array(self, key: str, name: str, verify: str | None = None) -> zarr.Array:
        """Read-only Zarr array, after verifying it per `verify` (default: the store's mode)."""
        m = self.manifest(key)
        info = self._array_info(m, name)
        problems = verify_payload(self.io, self._payload_path(m), m, verify or self.verify_mode, only=info.path)
        if problems:
            raise self.quarantine(m, f"array {name!r} is corrupt: {problems[0]}")
        return zarr.open_array(store=zarr_store(self, self._payload_path(m, info.path), read_only=True), mode="r")

    def read_array(self, key: str, name: str, verify: str | None = "full") -> np.ndarray:
        """The whole array as numpy (shape and dtype as stored). Every chunk is read anyway, so every chunk is
        hashed first (verify="full"): a "sampled" check could let a flipped byte through into scores/training."""
        return self.open_array(key, name, verify)[...]

    def quarantine(self, m: Manifest, problem: str) -> StorageError:
        """A reader found `m`'s payload corrupt: move its manifest aside (so the artifact is absent and the next
        run recomputes it) unless another writer has replaced it meanwhile; returns the error to raise."""
        path = f"{self.artifact_dir(m.key)}/{MANIFEST_NAME}"
        moved = False
        if m.kind == "checkpoint":  # checkpoints are re-hashed in full whenever they are looked up: keep it
            return StorageError(f"artifact {m.kind} {m.key[:8]} at {self.uri(m.key)}: {problem}")
        try:
            current = self._read_manifest(m.key)
            if current is not None and current.checksum == m.checksum:
                aside = f"{path}.corrupt-{uuid.uuid4().hex[:8]}"
                if self.local:
                    os.replace(path, aside)
                else:
                    self.fs.mv(path, aside)
                moved = True
        except (OSError, StorageError):
            pass
        tail = "; its manifest was moved aside: rerun to recompute it" if moved else ""
        return StorageError(f"artifact {m.kind} {m.key[:8]} at {self.uri(m.key)}: {problem}{tail}")

    def read_ragged(self, key: str, name: str) -> list[np.ndarray]:
        flat = self.read_array(key, f"{name}/flat")
        offsets = self.read_array(key, f"{name}/offsets")
        return csr_to_ragged(flat, offsets)

    def local_path(self, key: str, verify: str | None = None) -> Path:
        """Local folder holding the payload files (a verified cached copy for remote roots).

        `verify` (default: the store's mode) applies to local roots; a remote copy is always verified in full
        when downloaded. A full check of a local folder is remembered for this process while none of its files
        changes (size, mtime, inode), so loading one checkpoint in many chunk tasks hashes it once.
        """
        m = self.manifest(key)
        if self.local:
            mode = verify or self.verify_mode
            base = self._payload_path(m)
            sig = _stat_signature(base, m) if mode == "full" else None
            if sig is not None and _FULLY_VERIFIED.get((base, m.checksum)) == sig:
                return Path(base)
            problems = verify_payload(self.io, base, m, mode)
            if problems:
                raise self.quarantine(m, f"is corrupt: {problems[0]}")
            if sig is not None:
                _FULLY_VERIFIED[(base, m.checksum)] = sig
            return Path(base)
        target = cache_dir() / key / m.payload
        marker = target.parent / f".verified-{m.payload}"
        if target.is_dir() and _read_marker(marker) == m.checksum:
            return target
        local_io = FS(fsspec.filesystem("file"), True)
        # Several processes (Ray workers) may fetch the same artifact at once. Each downloads into its own
        # temporary folder and renames it into place; the first rename wins and a copy that is in place is
        # never deleted (another process may be loading from it).
        tmp = target.parent / f".tmp-{uuid.uuid4().hex[:8]}"
        try:
            items = [n for n in m.files] + [
                f"{a.path}/{a.chunk_key(i)}" for a in m.arrays.values() for i in range(len(a.chunks))
            ]
            for rel in items:
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._payload_path(m, rel), str(dst))
            problems = verify_payload(local_io, str(tmp), m, "full")
            if problems:
                raise StorageError(f"artifact {m.kind} {key[:8]} is corrupt: {problems[0]}")
            try:
                os.rename(tmp, target)
            except OSError:
                # already in place: a finished copy from another process, or a leftover of a killed one
                if verify_payload(local_io, str(target), m, "full"):
                    stale = target.parent / f".stale-{uuid.uuid4().hex[:8]}"
                    os.rename(target, stale)
                    os.rename(tmp, target)
                    shutil.rmtree(stale, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        part = marker.parent / f".{marker.name}.{uuid.uuid4().hex[:8]}"
        part.write_text(m.checksum)
        os.replace(part, marker)
        return target

    # ---- identity ----------------------------------------------------------------------------------------
    def identity(self) -> str:
        """A random id created once at the root (first creator wins). A wiped and recreated root gets a new
        one, so caches keyed on it (Prefect's task cache) never outlive the artifacts they point to."""
        path = f"{self.root}/{IDENTITY_NAME}"
        for _ in range(2):
            raw = self.io.cat(path)
            if raw is not None:
                try:
                    return str(json.loads(raw)["id"])
                except (ValueError, KeyError, TypeError):
                    self.io.write_atomic(path, json.dumps({"id": uuid.uuid4().hex}).encode())  # corrupt: replace
                    continue
            self.io.create_exclusive(path, json.dumps({"id": uuid.uuid4().hex}).encode())
        raw = self.io.cat(path)
        if raw is None:
            raise StorageError(f"cannot write the store identity {self.url_of(path)}")
        return str(json.loads(raw)["id"])

    # ---- listing -----------------------------------------------------------------------------------------
    def resolve(self, prefix: str) -> str:
        """Full key of the one artifact whose key starts with `prefix` (e.g. the 8-digit short key)."""
        prefix = prefix.strip().lower()
        if KEY_RE.match(prefix):
            return prefix
        matches = [k for k in self.keys() if k.startswith(prefix)] if prefix else []
        if len(matches) != 1:
            raise StorageError(f"key prefix {prefix!r} matches {len(matches)} artifacts in {self.url}")
        return matches[0]

    def keys(self) -> list[str]:
        """Keys of all artifact folders (complete or not)."""
        self.io.refresh(self.artifacts_dir)
        try:
            names = self.fs.ls(self.artifacts_dir, detail=False)
        except FileNotFoundError:
            return []
        return sorted(k for k in (n.rstrip("/").rsplit("/", 1)[-1] for n in names) if KEY_RE.match(k))

    def find(self, kind: str | None = None, *, parent: str | None = None, meta: dict | None = None) -> list[Manifest]:
        """Manifests of complete artifacts matching kind, having `parent` among parents, and meta ⊇ `meta`."""
        out = []
        for key in self.keys():
            try:
                m = self._read_manifest(key)
            except StorageError as e:
                warnings.warn(str(e), stacklevel=2)
                continue
            if m is None or (kind and m.kind != kind) or (parent and parent not in m.parents):
                continue
            if meta and any(m.meta.get(k) != v for k, v in meta.items()):
                continue
            out.append(m)
        return sorted(out, key=lambda m: (m.created_at, m.key))


def _reopen(url: str, verify: str, storage_options: dict) -> Store:
    return open_store(url, verify=verify, storage_options=storage_options)


class ArtifactWriter:
    """Writes one artifact's payload into a private folder; the manifest is committed on clean exit.

    After the `with` block: `ref` (ArtifactRef), `manifest`, `reused` (True if another writer finished first).
    On an exception the private folder is deleted and nothing is left behind.
    """

    def __init__(self, store: Store, kind: str, key: str, *, parents: list[str], config: dict,
                 meta: dict | None, format_version: int) -> None:
        self.store, self.kind, self.key = store, kind, check_key(key)
        self.parents = [check_key(p) for p in parents]
        self.config, self.meta, self.format_version = dict(config), dict(meta or {}), format_version
        self.payload = f"w-{uuid.uuid4().hex[:16]}"
        self.dir = f"{store.artifact_dir(key)}/{self.payload}"
        self.files: dict[str, FileInfo] = {}
        self.arrays: dict[str, ArrayInfo] = {}
        self.ref: ArtifactRef | None = None
        self.manifest: Manifest | None = None
        self.reused = False
        self._moved: list[Path] = []

    def __enter__(self) -> "ArtifactWriter":
        if self.store.local:
            os.makedirs(self.dir, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.store.io.rm(self.dir)
            return False
        m = Manifest(kind=self.kind, key=self.key, parents=self.parents, config=self.config,
                     format_version=self.format_version, payload=self.payload, files=self.files, arrays=self.arrays,
                     meta=self.meta)
        self.manifest, self.reused = self.store.commit(m)
        self.ref = ArtifactRef(kind=self.kind, key=self.key, uri=self.store.uri(self.key))
        return False

    def _new(self, name: str) -> str:
        validate_relpath(name, "file name")
        if name in self.files or any(name == a or name.startswith(a + "/") for a in self.arrays):
            raise StorageError(f"{self.kind} {self.key[:8]}: {name!r} written twice")
        return f"{self.dir}/{name}"

    def put_bytes(self, name: str, data: bytes) -> None:
        path = self._new(name)
        self.store.io.write(path, bytes(data))
        self.files[name] = FileInfo(size=len(data), sha256=sha256_bytes(data))

    def put_json(self, name: str, obj: Any) -> None:
        self.put_bytes(name, json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True).encode("utf-8"))

    def put_file(self, name: str, local_path: str | os.PathLike, *, link: bool = False) -> None:
        """Copy a local file into the artifact (link=True: hard-link instead when on the same local disk).

        The source is never moved: if the writer fails, the source is still intact (callers that want "move"
        delete the source after the `with` block).
        """
        path, src = self._new(name), Path(local_path)
        if not src.is_file():
            raise StorageError(f"put_file: not a file: {src}")
        digest, size = sha256_file(src), src.stat().st_size
        if self.store.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                if not link:
                    raise OSError
                os.link(src, path)
            except OSError:
                shutil.copyfile(src, path)
        else:
            self.store.fs.put_file(str(src), path)
        self.files[name] = FileInfo(size=size, sha256=digest)

    def put_dir(self, name: str, local_dir: str | os.PathLike, *, link: bool = False) -> None:
        """Every file under `local_dir`, as `name/<relative path>` ("" puts them at the payload root)."""
        src = Path(local_dir)
        if not src.is_dir():
            raise StorageError(f"put_dir: not a directory: {src}")
        for p in sorted(src.rglob("*")):
            if p.is_file():
                rel = p.relative_to(src).as_posix()
                self.put_file(f"{name}/{rel}" if name else rel, p, link=link)

    def put_array(self, name: str, data: np.ndarray, *, chunk_rows: int | None = None, codec: str = "zstd") -> None:
        """A whole array as row-chunked Zarr (chunk checksums recorded in the manifest)."""
        path = self._new(name)
        info = write_whole_array(self.store, path, np.asarray(data), chunk_rows, codec)
        meta_raw = self.store.io.cat(f"{path}/zarr.json")
        self.files[f"{name}/zarr.json"] = FileInfo(size=len(meta_raw), sha256=sha256_bytes(meta_raw))
        self.arrays[name] = info.model_copy(update={"path": name})

    def put_ragged(self, name: str, seqs: list[Any], dtype: str | None = None) -> None:
        """Ragged 1-d sequences (token ids, logprobs) as CSR: `name/flat` and `name/offsets` (int64, len+1)."""
        flat, offsets = ragged_to_csr(seqs, dtype)
        self.put_array(f"{name}/flat", flat)
        self.put_array(f"{name}/offsets", offsets)


_FULLY_VERIFIED: dict[tuple[str, str], tuple] = {}  # (payload folder, manifest checksum) -> stat signature


def _stat_signature(base: str, m: Manifest) -> tuple | None:
    """(size, mtime_ns, inode) of every payload file of a local artifact, or None if one is missing."""
    out = []
    for rel in sorted(m.files):
        try:
            st = os.stat(os.path.join(base, rel))
        except OSError:
            return None
        out.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def check_inside(base: str, rel: str, m: Manifest) -> None:
    """Refuse (StorageError) a local payload file that resolves outside its artifact folder — a symlink (of
    the file, a folder above it, or the payload folder) pointing elsewhere. cropi never writes symlinks."""
    adir = os.path.dirname(base.rstrip("/"))
    anchor = os.path.join(os.path.realpath(os.path.dirname(adir)), os.path.basename(adir))
    real = os.path.realpath(os.path.join(base, rel))
    if not real.startswith(anchor + os.sep):
        raise StorageError(f"artifact {m.kind} {m.key[:8]}: {rel!r} resolves outside its artifact folder "
                           f"(symlink to {real}); refused")


def verify_payload(io: FS, base: str, m: Manifest, mode: str, only: str | None = None) -> list[str]:
    """Check payload files and array chunks under `base` against manifest `m`.

    mode "full": hash everything; "sampled": sizes of everything, hashes of files ≤ 1 MiB and of a few random
    other items (array chunks, large files); "manifest": nothing. `only`: restrict to one array folder (plus its
    zarr.json).
    """
    items: list[tuple[str, int, str]] = []  # (relative path, size, sha256)
    for name, f in m.files.items():
        if only is None or name.startswith(only + "/"):
            items.append((name, f.size, f.sha256))
    for a in m.arrays.values():
        if only is None or a.path == only:
            items += [(f"{a.path}/{a.chunk_key(i)}", c.nbytes, c.sha256) for i, c in enumerate(a.chunks)]
    if io.local:  # in every mode: a symlink could make any read (HF from_pretrained included) leave the artifact
        for rel, _, _ in items:
            check_inside(base, rel, m)
    if mode == "manifest":
        return []
    problems = []
    if mode == "full":
        def check(item: tuple[str, int, str]) -> str | None:
            rel, size, digest = item
            raw = io.cat(f"{base}/{rel}")
            if raw is None:
                return f"{rel} missing"
            if len(raw) != size or sha256_bytes(raw) != digest:
                return f"{rel} checksum mismatch"
            return None

        # object stores answer GETs in parallel; on local disk hashing is CPU-bound and threads do not pay
        with ThreadPoolExecutor(max_workers=1 if io.local else VERIFY_THREADS) as pool:
            return [p for p in pool.map(check, items) if p]
    io.refresh(base)
    try:
        listing = {p.rstrip("/"): i for p, i in io.fs.find(base, detail=True).items()}
    except FileNotFoundError:
        listing = {}
    prefix = io.fs._strip_protocol(base).rstrip("/")
    large = []
    small_files = {name for name, f in m.files.items() if f.size <= SMALL_FILE}
    for rel, size, digest in items:
        info = listing.get(f"{prefix}/{rel}")
        if info is None:
            problems.append(f"{rel} missing")
        elif info.get("size") != size:
            problems.append(f"{rel} has {info.get('size')} bytes, expected {size}")
        elif rel in small_files:
            raw = io.cat(f"{base}/{rel}")
            if raw is None or sha256_bytes(raw) != digest:
                problems.append(f"{rel} checksum mismatch")
        else:
            large.append((rel, size, digest))
    for rel, size, digest in random.sample(large, min(SAMPLED_LARGE, len(large))):
        raw = io.cat(f"{base}/{rel}")
        if raw is None or sha256_bytes(raw) != digest:
            problems.append(f"{rel} checksum mismatch")
    return problems


def _read_marker(marker: Path) -> str | None:
    """A verified-copy marker's checksum, or None when absent — also when another process is replacing it at
    that moment (seen as FileNotFoundError between exists() and read in a concurrent-readers test)."""
    try:
        return marker.read_text()
    except FileNotFoundError:
        return None
