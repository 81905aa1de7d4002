"""A run's input, checked before any flow starts: `--set` overrides, the storage root, the config and its data.

Shared by the command line (`flows.cli`) and the deployments' flow (`flows.scheduled`), which resolve and validate
a config the same way; every function raises a `CropiError` with a one-line message on bad input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cropi_core.errors import ConfigError

# `cropi run` without --config: the embedded default written out (RunConfig() + the short instruction the
# character-level model is tuned for; tests/test_config.py keeps the two in sync)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def parse_sets(items: list[str] | None, storage: str | None = None) -> dict[str, Any]:
    """["selection.ratio=0.2", "train.stages=2"] -> {"selection.ratio": 0.2, ...} (values parsed as YAML), plus
    `storage.root` when a --storage URL is given."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: value is not valid YAML") from None
    if storage is not None:
        out["storage.root"] = storage
    return out


def probe_storage(url: str) -> None:
    """Raise StorageError unless the storage root at `url` can be created, written and read back. The probe
    leaves nothing behind: a local root that did not exist before is removed again (with the folders above it
    that the probe created), so a later input error leaves no empty storage folder."""
    import fsspec

    from storage import StorageError

    created: list[str] = []
    try:
        fs, path = fsspec.core.url_to_fs(url)
        path = path.rstrip("/") or "/"
        if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            p = Path(path)
            created = [str(d) for d in (p, *p.parents) if not d.exists()]
        fs.makedirs(path, exist_ok=True)
        probe = f"{path}/.cropi-probe-{os.getpid()}"
        fs.pipe_file(probe, b"ok")
        ok = fs.cat_file(probe) == b"ok"
        fs.rm_file(probe)
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001 - any backend failure means "unreachable"
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StorageError(f"storage root {url!r} is not reachable or writable: {type(err).__name__}: {first}") from None
    finally:
        for d in created:  # innermost first; a folder something else wrote into meanwhile stays
            try:
                os.rmdir(d)
            except OSError:
                break
    if not ok:
        raise StorageError(f"storage root {url!r}: probe file did not read back")


def default_config(config: Path | None) -> Path | None:
    """`--config`, else configs/tiny.yaml where the checkout has it (an installed wheel: the embedded default)."""
    return config if config is not None or not DEFAULT_CONFIG.exists() else DEFAULT_CONFIG


def prepare(config: Path | None, sets: list[str] | None, storage: str | None, name: str | None = None):
    """Load + validate the config, probe storage and build the data splits (raises CropiError on bad input)."""
    from cropi_core.config import load_config

    overrides = parse_sets(sets, storage)
    if name is not None:
        overrides["name"] = name
    cfg = load_config(default_config(config), overrides)
    probe_storage(cfg.storage.root)
    from tasks.artifacts import build_splits_cached

    build_splits_cached(cfg.data)  # missing / malformed datasets fail here, before any flow run
    return cfg
