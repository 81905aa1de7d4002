"""Garbage collection: remove incomplete artifacts (no valid manifest) and unreferenced writer folders.

A complete artifact (valid manifest) and everything its manifest references are never touched. Artifacts whose
manifest has an unknown (newer) version are left alone too.
"""

from __future__ import annotations

import time
import warnings

from storage.errors import StorageError
from storage.manifest import MANIFEST_NAME
from storage.store import Store


def gc(store: Store, older_than_hours: float) -> list[str]:
    """Delete incomplete artifacts idle for more than `older_than_hours`; return what was removed.

    Returned entries: "<key>" for a whole incomplete artifact folder, "<key>/<folder>" for a stale writer
    folder left beside a complete artifact (e.g. by the loser of a concurrent write or a killed writer).
    """
    cutoff = time.time() - float(older_than_hours) * 3600.0
    removed = []
    for key in store.keys():
        adir = store.artifact_dir(key)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = store._read_manifest(key)
        except StorageError:
            continue  # unknown manifest version: not ours to judge
        if m is None:
            newest = store.io.newest_mtime(adir)
            if newest is None or newest < cutoff:
                store.io.rm(adir)
                removed.append(key)
            continue
        keep = {m.payload, MANIFEST_NAME, "records"} if m.payload == "chunked" else {m.payload, MANIFEST_NAME}
        for child in store.fs.ls(adir, detail=False):
            name = child.rstrip("/").rsplit("/", 1)[-1]
            if name in keep:
                continue
            path = f"{adir}/{name}"
            newest = store.io.newest_mtime(path)
            if newest is None or newest < cutoff:
                store.io.rm(path)
                removed.append(f"{key}/{name}")
    return removed
