"""Resolving a storage root URL, and the few filesystem primitives storage needs (`open_store` is beside
`Store`, in storage/store.py).

Root resolution: explicit URL > `StorageConfig.root` > `$CROPI_STORAGE` > `./.cropi`. Plain paths and file://
URLs use the local filesystem (atomic writes via temp file + rename/link); memory:// and s3:// go through fsspec
(a manifest is a single PUT; s3 uses If-None-Match so the first complete manifest wins).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec

from storage.errors import StorageError

DEFAULT_ROOT = "./.cropi"
VERIFY_MODES = ("full", "sampled", "manifest")


def resolve_url(url: Any = None) -> tuple[str, str | None]:
    """(url, verify) from a URL string, a StorageConfig-like object (has .root/.verify) or None."""
    verify = None
    if url is not None and not isinstance(url, (str, os.PathLike)):
        verify = getattr(url, "verify", None)
        url = getattr(url, "root", None)
    if url is None:
        url = os.environ.get("CROPI_STORAGE") or DEFAULT_ROOT
    url = os.fspath(url)
    if not url.strip():
        raise StorageError("storage root is empty (set storage.root or CROPI_STORAGE)")
    return url, verify


class FS:
    """Thin helpers over one fsspec filesystem; local paths get real atomic rename/link semantics."""

    def __init__(self, fs: fsspec.AbstractFileSystem, local: bool) -> None:
        self.fs, self.local = fs, local

    def cat(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace `path` with `data` so readers see the old or the new bytes, never a mix."""
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)  # one PUT

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Atomically create `path` with `data` unless it exists; True if we created it."""
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.link(tmp, path)  # fails if path exists: first writer wins
                return True
            except FileExistsError:
                return False
            except OSError:  # filesystem without hard links: rename (a tiny check-then-act window remains)
                if os.path.exists(path):
                    return False
                os.replace(tmp, path)
                return True
            finally:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
        self.refresh(path)
        if self.fs.exists(path):
            return False
        try:
            with self.fs.open(path, "xb") as f:  # s3fs: PUT with If-None-Match: *
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError, TypeError):  # backend without exclusive create
            self.fs.pipe_file(path, data)
            return True
        except OSError as e:
            # s3fs maps the server's 412 PreconditionFailed (another writer's PUT landed first: AWS, SeaweedFS,
            # MinIO honour If-None-Match: *) to OSError(EINVAL), not FileExistsError
            if _precondition_failed(e):
                return False
            raise

    def write(self, path: str, data: bytes) -> None:
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        else:
            self.fs.pipe_file(path, data)

    def rm(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        if not self.local:
            self._rm_empty_dirs(path)

    def _rm_empty_dirs(self, path: str) -> None:
        """Object stores with real directories (SeaweedFS's filer) keep a folder listed after its last object is
        deleted; delete those `prefix/` entries deepest first so listings (keys(), gc) no longer show them."""
        call = getattr(self.fs, "call_s3", None)
        split = getattr(self.fs, "split_path", None)
        if call is None or split is None:
            return
        self.refresh(path)
        dirs, todo = [path], [path]
        while todo and len(dirs) < 10_000:  # walk with delimiter listings: they show the empty folders
            d = todo.pop()
            try:
                entries = self.fs.ls(d, detail=True, refresh=True)
            except (FileNotFoundError, OSError):
                continue
            sub = [e["name"] for e in entries if e.get("type") == "directory" and e["name"].rstrip("/") != d.rstrip("/")]
            dirs += sub
            todo += sub
        for d in sorted(set(dirs), key=lambda p: p.count("/"), reverse=True):
            bucket, key, _ = split(d)
            if not key:
                continue
            try:
                call("delete_object", Bucket=bucket, Key=key.rstrip("/") + "/")
            except (FileNotFoundError, OSError):
                pass
        self.refresh(path)

    def newest_mtime(self, path: str) -> float | None:
        """Newest modification time (POSIX seconds) of any file under `path`; None if it holds no files."""
        try:
            infos = self.fs.find(path, detail=True, withdirs=False)
        except FileNotFoundError:
            return None
        times = [t for t in (_mtime(i) for i in infos.values()) if t is not None]
        if not times and self.local and os.path.isdir(path):
            return os.path.getmtime(path)
        return max(times) if times else None

    def refresh(self, path: str | None = None) -> None:
        """Drop fsspec's listing cache (other processes may have written since)."""
        if not self.local:
            self.fs.invalidate_cache(path)


def _precondition_failed(err: BaseException) -> bool:
    """True if `err` (or its cause chain) is an S3 412 PreconditionFailed."""
    seen = 0
    while err is not None and seen < 8:
        code = getattr(err, "response", {}).get("Error", {}).get("Code") if hasattr(err, "response") else None
        if code in ("PreconditionFailed", "412"):
            return True
        text = str(err)
        if "PreconditionFailed" in text or "pre-conditions you specified did not hold" in text:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _mtime(info: dict) -> float | None:
    for k in ("mtime", "LastModified", "last_modified", "created"):
        v = info.get(k)
        if v is None:
            continue
        if isinstance(v, datetime):
            return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).timestamp()
        if isinstance(v, (int, float)):
            return float(v)
        try:
            return datetime.fromisoformat(str(v)).timestamp()
        except ValueError:
            continue
    return None


def cache_dir() -> Path:
    """Local cache for copies of remote artifacts ($CROPI_CACHE or ~/.cache/cropi)."""
    return Path(os.environ.get("CROPI_CACHE") or Path.home() / ".cache" / "cropi")
