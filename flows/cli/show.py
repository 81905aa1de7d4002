"""`cropi config` (a config in full, under today's names), `cropi lineage` and `cropi inspect` (artifacts): the
read-only commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
import yaml

from flows.cli.common import user_errors
from flows.inputs import default_config, parse_sets


def show_config(
    section: Optional[str] = typer.Argument(None, help="with --explain: only this section or field (e.g. selection, "
                                                       "influence.sketch_dim)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML RunConfig (default: the embedded tiny setup)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="override a field: section.key=value (repeatable)"),
    explain: bool = typer.Option(False, "--explain", help="document every field: meaning, type and range, this "
                                                          "config's value, and whether it changes artifact keys"),
) -> None:
    """Validate a config and print it in full as YAML, under today's field names (an old file, migrated); with
    --explain, every field's documentation next to its value."""
    from cropi_core.config import explain as explain_fields
    from cropi_core.config import load_config, render_explain
    from cropi_core.errors import ConfigError

    with user_errors():
        cfg = load_config(default_config(config), parse_sets(set_), check_files=False)
        if explain:
            try:
                docs = explain_fields(cfg, section)
            except ValueError as err:
                raise ConfigError(str(err)) from None
            typer.echo(render_explain(docs))
            return
        if section is not None:
            raise ConfigError(f"{section}: a section is only taken with --explain")
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True), nl=False)


def _resolve_key(store, key: str) -> str:
    from storage import StorageError

    if len(key) == 64:
        return key
    hits = sorted({m.key for m in store.find() if m.key.startswith(key)})
    if len(hits) != 1:
        raise StorageError(f"artifact key prefix {key!r} matches {len(hits)} artifacts in {store.url}")
    return hits[0]


def _open_artifact(storage: str | None, key: str):
    """(store, full key) of a complete artifact named by key or unique prefix; StorageError otherwise."""
    from storage import StorageError, open_store
    from storage.root import resolve_url

    url, _ = resolve_url(storage)
    local = url.removeprefix("file://") if url.startswith("file://") or "://" not in url else None
    if local is not None and not (Path(local).expanduser() / "artifacts").is_dir():
        raise StorageError(f"no artifact {key!r}: no artifact store at {url} (a read-only command does not create one)")
    store = open_store(storage)
    full = _resolve_key(store, key)
    if not store.exists(full):
        raise StorageError(f"no artifact {key!r} in {store.url}")
    return store, full


def lineage(
    key: str = typer.Argument(..., help="artifact key (or a unique prefix)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL"),
    png: Optional[Path] = typer.Option(None, "--png", help="also draw the graph to this PNG"),
) -> None:
    """Print the artifact DAG (parents first) of KEY from storage manifests alone (no Prefect needed)."""
    from storage import lineage as lineage_of, render_lineage_png, render_lineage_text

    with user_errors():
        store, full = _open_artifact(storage, key)
        graph = lineage_of(store, full)
        typer.echo(render_lineage_text(graph))
        if png is not None:
            render_lineage_png(graph, png)
            typer.echo(f"lineage graph: {png}")


def inspect(
    key: str = typer.Argument(..., help="artifact key (or a unique prefix)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL"),
) -> None:
    """Print an artifact's manifest (kind, parents, config, files, meta) as JSON."""
    with user_errors():
        store, full = _open_artifact(storage, key)
        m = store.manifest(full)
        typer.echo(json.dumps(m.model_dump(mode="json"), indent=2, sort_keys=True))
