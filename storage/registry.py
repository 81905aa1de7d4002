"""Checkpoint registry: Hugging Face model folders (weights + config + tokenizer) as `checkpoint` artifacts.

Look-ups: by key (`store.manifest(key)`, `store.local_path(key)`), by run and stage (meta), by parent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from storage.errors import StorageError
from storage.keys import artifact_key, checkpoint_hash
from storage.manifest import Manifest
from storage.refs import ArtifactRef
from storage.store import Store

CHECKPOINT_KIND = "checkpoint"
# pickle-based file formats (PyTorch .bin/.pt, pickle, joblib): never loaded from storage
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")


def register_checkpoint(store: Store, folder: str | os.PathLike, *, parents: list[str], config: dict,
                        meta: dict | None = None, move: bool = False, key: str | None = None) -> ArtifactRef:
    """Store the model folder as a checkpoint artifact and return its ref.

    key: by default artifact_key("checkpoint", parents, {"content": checkpoint_hash(folder), **config});
    pass `key` to register under a key computed upstream (e.g. from the training inputs) instead.
    meta gets `content_hash`; conventional meta keys are "run" and "stage". move=True hard-links the files (on a
    local root, else copies) and deletes the source folder once the artifact is complete.
    Registering the same content again reuses the existing artifact.
    """
    folder = Path(folder)
    content = checkpoint_hash(folder)
    if key is None:
        key = artifact_key(CHECKPOINT_KIND, parents=parents, config={"content": content, **config})
    meta = {**(meta or {}), "content_hash": content}
    if store.exists(key):
        if move:
            shutil.rmtree(folder, ignore_errors=True)
        return store.ref(key)
    with store.writer(CHECKPOINT_KIND, key, parents=parents, config=config, meta=meta) as w:
        w.put_dir("", folder, link=move)
    if move:
        shutil.rmtree(folder, ignore_errors=True)
    return w.ref


def find_checkpoints(store: Store, *, run: str | None = None, stage: int | None = None,
                     parent: str | None = None) -> list[Manifest]:
    """Checkpoint manifests matching meta run/stage and/or having `parent` among their parents (oldest first)."""
    meta = {k: v for k, v in (("run", run), ("stage", stage)) if v is not None}
    return store.find(CHECKPOINT_KIND, parent=parent, meta=meta or None)


def checkpoint_dir(store: Store, key: str) -> Path:
    """Local folder of a registered checkpoint (loadable with from_pretrained)."""
    m = store.manifest(key)
    if m.kind != CHECKPOINT_KIND:
        raise StorageError(f"artifact {key[:8]} is a {m.kind}, not a checkpoint")
    pickled = sorted(n for n in m.files if n.lower().endswith(PICKLE_SUFFIXES))
    if pickled:  # from_pretrained would unpickle them; cropi writes safetensors + JSON only
        raise StorageError(f"checkpoint {key[:8]} holds pickle-format file(s) {pickled[:3]}; refused (cropi "
                           f"loads safetensors weights only)")
    # model weights are always hashed in full before loading: "sampled" verification checks sizes of every
    # file but hashes only two large ones, and a sharded checkpoint has more (a flipped byte would be trained on)
    return store.local_path(key, verify="full")
