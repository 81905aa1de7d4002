"""Content-addressed artifact storage on any fsspec root: keys, manifests, chunked Zarr arrays, checkpoints,
lineage, gc. Pure storage: no Prefect, no model code, no pickle (metadata is JSON, arrays Zarr, weights files).
"""

from storage.arrays import ChunkedArray
from storage.errors import StorageError
from storage.gc import gc
from storage.keys import artifact_key, canonical_json, checkpoint_hash, dataset_hash
from storage.lineage import LineageGraph, lineage, render_lineage_png, render_lineage_text
from storage.manifest import MANIFEST_VERSION, Manifest
from storage.refs import ArtifactRef
from storage.store import ArtifactWriter, Store, open_store

__all__ = [
    "ArtifactRef", "ArtifactWriter", "ChunkedArray", "LineageGraph", "MANIFEST_VERSION", "Manifest", "Store",
    "StorageError", "artifact_key", "canonical_json", "checkpoint_hash", "dataset_hash", "gc", "lineage",
    "open_store", "render_lineage_png", "render_lineage_text",
]
