"""`scheduled_curriculum(config, sets, storage)`: the flow that deployments run (`cropi deploy`, `prefect.yaml`).

A deployment names its config instead of carrying a frozen `RunConfig`: a path to a YAML file (relative to the
run's working directory = the checkout, or to the repository this module lives in), a `file://` path, or any
fsspec URL (`s3://bucket/configs/x.yaml`), plus optional `--set`-style overrides. It is resolved and validated
when the run starts, so editing `configs/x.yaml` changes the next scheduled run, and a missing or invalid file
fails the run with ONE `error: ...` line in the flow run's log (state Failed, nothing computed or registered).

The curriculum itself runs as the `cropi-curriculum` subflow (cached, resumable), and the run publishes a
table artifact `cropi-<name>-run` with what it computed vs reused, so "a rerun computes nothing" is visible in
the UI. While it runs, `CancelWatch` polls the run's state: once it is Cancelling (the UI's Cancel button),
GRPO training stops at its next step, keeping its mid-stage checkpoints, so the next run resumes there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed, State

from cropi_core.config import RunConfig
from cropi_core.errors import ConfigError, CropiError

REPO = Path(__file__).resolve().parents[1]


def one_line(err: BaseException) -> str:
    """An exception as the single line the CLI prints (whitespace collapsed)."""
    return " ".join(str(err).split()) or type(err).__name__


def resolve_config_path(spec: str, tmp: Path | None = None) -> Path:
    """The local YAML file a deployment's `config` parameter names.

    Relative paths are tried against the working directory, then the repository root; `file://` is stripped;
    any other URL is fetched with fsspec into `tmp` (relative data paths in a remote YAML resolve against that
    temporary folder, so remote configs should name data by absolute path or URL). Raises ConfigError.
    """
    spec = str(spec).strip()
    if not spec:
        raise ConfigError("config: empty (name a YAML file, e.g. configs/tiny.yaml)")
    if "://" in spec and not spec.startswith("file://"):
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(spec)
            if not fs.exists(path):
                raise ConfigError(f"{spec}: config file not found")
            tmp = tmp or Path(tempfile.mkdtemp(prefix="cropi-config-"))
            local = tmp / (Path(path).name or "config.yaml")
            local.write_bytes(fs.cat_file(path))
        except CropiError:
            raise
        except Exception as err:  # noqa: BLE001 - any backend failure: the config cannot be read
            raise ConfigError(f"{spec}: cannot read config: {type(err).__name__}: {one_line(err)}") from None
        return local
    p = Path(spec.removeprefix("file://")).expanduser()
    if p.is_absolute():
        return p
    for base in (Path.cwd(), REPO):
        if (base / p).exists():
            return (base / p).resolve()
    return p  # load_config reports "<spec>: config file not found"


def load_deployment_config(config: str, sets: list[str] | None = None, storage: str | None = None) -> RunConfig:
    """Resolve + validate a deployment's config exactly as `cropi run` would (file, overrides, storage probe,
    datasets); raises CropiError with a one-line message on bad input."""
    from flows.inputs import prepare

    env_root = os.environ.get("CROPI_STORAGE", "")
    if not env_root.strip() or env_root.lstrip().startswith("{{"):
        # prefect.yaml passes "{{ $CROPI_STORAGE }}": empty, or left unrendered when unset at deploy time
        os.environ.pop("CROPI_STORAGE", None)
    path = resolve_config_path(config)
    if not path.exists():
        where = " and ".join(dict.fromkeys(str(b) for b in (Path.cwd(), REPO)))
        raise ConfigError(f"{config}: config file not found" + ("" if path.is_absolute() else f" (looked in {where})"))
    return prepare(path, list(sets or []), storage)


class CancelWatch:
    """While active, polls the flow run's state every `every` seconds and sets `tasks.common.CANCEL` once it is
    Cancelling/Cancelled. (Prefect delivers a cancellation to the flow's main thread, which is blocked waiting on
    the running task; the task itself must learn it some other way.)"""

    def __init__(self, flow_run_id: str | None, every: float = 2.0) -> None:
        import threading

        self.run_id, self.every = flow_run_id, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, name="cropi-cancel-watch", daemon=True)

    def _poll(self) -> None:
        from prefect.client.orchestration import get_client

        from tasks.common import CANCEL

        while not self.stop.wait(self.every):
            try:
                with get_client(sync_client=True) as client:
                    state = client.read_flow_run(self.run_id).state
            except Exception:  # noqa: BLE001 - API hiccup: try again next tick
                continue
            if state is not None and state.type.value in ("CANCELLING", "CANCELLED"):
                CANCEL.set()
                return

    def __enter__(self) -> "CancelWatch":
        from tasks.common import CANCEL

        CANCEL.clear()
        if self.run_id:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()


def _publish_run_table(cfg: RunConfig, summary: dict[str, Any]) -> None:
    """Table artifact `cropi-<name>-run`: counts of this run (computed vs reused) and its final checkpoint."""
    from prefect.artifacts import create_table_artifact

    from tasks.reports import slug

    c = summary["counts"]
    rows = [{"field": k, "value": v} for k, v in (
        ("computed", c["computed"]), ("reused", c["reused"]), ("task runs", c["task_runs"]), ("failed", c["failed"]),
        ("final checkpoint", summary["final_checkpoint"]),
        ("report", summary["report"]), ("seconds", round(summary["seconds"], 1)))]
    create_table_artifact(table=rows, key=f"{slug(cfg)}-run",
                          description=f"{cfg.name}: what this scheduled run computed")


def _run_name() -> str:
    """Flow run name: `scheduled-<config file stem>` (e.g. scheduled-tiny)."""
    from prefect.runtime import flow_run

    spec = str(flow_run.parameters.get("config") or "config")
    return f"scheduled-{Path(spec.rstrip('/')).stem or 'config'}"


@flow(name="cropi-scheduled", flow_run_name=_run_name, log_prints=False)
def scheduled_curriculum(config: str = "configs/tiny.yaml", sets: list[str] | None = None,
                         storage: str | None = None) -> dict[str, Any] | State:
    """Run the CROPI curriculum of the YAML config `config` (+ `sets` overrides, e.g. ["train.stages=2"], and an
    optional storage root URL). Returns the run summary; a missing/invalid config fails the run with one line."""
    logger = get_run_logger()
    try:
        cfg = load_deployment_config(config, sets, storage)
    except CropiError as err:
        msg = f"error: {one_line(err)}"
        logger.error(msg)
        return Failed(message=msg)
    logger.info(f"config {config} -> run {cfg.name!r}, storage {cfg.storage.root}")
    from flows.curriculum import run_curriculum
    from prefect.runtime import flow_run

    with CancelWatch(flow_run.id):  # a cancelled run stops training at the next step instead of ending the stage
        summary = run_curriculum(cfg)
    from flows.runtime import counts_line

    logger.info(f"done in {summary['seconds']:.1f}s: {counts_line(summary['counts'])}; "
                f"final checkpoint {summary['final_checkpoint']}; report {summary['report']}")
    try:
        _publish_run_table(cfg, summary)
    except Exception as err:  # noqa: BLE001 - a report artifact must never fail a finished run
        logger.warning(f"run table artifact not published: {err}")
    return summary
