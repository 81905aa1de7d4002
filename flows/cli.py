"""The `cropi` command line: run the curriculum, inspect artifacts and lineage, start the Prefect UI.

Every user error (bad config, bad data, unreachable storage) prints ONE line `error: ...` on stderr and
exits with code 2; validation happens before any flow starts, so nothing is registered on bad input.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Optional

import typer
import yaml

from cropi_core.errors import ConfigDeprecation, ConfigError, CropiError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="CROPI: curriculum RL with off-policy influence guidance.")

EXIT_USER_ERROR = 2
# `cropi run` without --config: the embedded default written out (RunConfig() + the short instruction the
# character-level model is tuned for; tests/test_config.py keeps the two in sync)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
# a loaded 2-core machine can take > 20 s (Prefect's default) to start the temporary API server
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


_show_warning = warnings.showwarning


def _one_line_deprecation(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """An old config key prints `warning: <file>: config key ... is deprecated, use ...` and nothing else."""
    if issubclass(category, ConfigDeprecation):
        typer.echo(f"warning: {message}", err=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


warnings.showwarning = _one_line_deprecation


def _fail(err: BaseException) -> None:
    msg = " ".join(str(err).split()) or type(err).__name__
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """A CropiError raised inside the block is the user's: `_fail` prints it as one line and exits 2."""
    try:
        yield
    except CropiError as err:
        _fail(err)


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
    """Raise StorageError unless the storage root at `url` can be created, written and read back."""
    import fsspec

    from storage import StorageError

    try:
        fs, path = fsspec.core.url_to_fs(url)
        path = path.rstrip("/") or "/"
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


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML RunConfig (default: the embedded tiny setup)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="override a field: section.key=value (repeatable)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL (default $CROPI_STORAGE or ./.cropi)"),
    name: Optional[str] = typer.Option(None, "--name", help="run name (report folder runs/<name>)"),
) -> None:
    """Run the CROPI curriculum (cached: a rerun recomputes nothing) and print where the report is."""
    with user_errors():
        cfg = prepare(config, set_, storage, name)
        from flows.curriculum import run_curriculum

        summary = run_curriculum(cfg)
    from flows.runtime import counts_line

    typer.echo(f"done in {summary['seconds']:.1f}s (flow {summary['flow_seconds']:.1f}s): "
               f"{counts_line(summary['counts'])}")
    typer.echo(f"final checkpoint: {summary['final_checkpoint']}")
    typer.echo(f"report: {summary['report']}")


@app.command("config")
def show_config(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML RunConfig (default: the embedded tiny setup)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="override a field: section.key=value (repeatable)"),
) -> None:
    """Validate a config and print it in full as YAML, under today's field names (an old file, migrated)."""
    from cropi_core.config import load_config

    with user_errors():
        cfg = load_config(default_config(config), parse_sets(set_), check_files=False)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True), nl=False)


@app.command()
def compare(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML RunConfig (default: the embedded tiny setup)"),
    methods: str = typer.Option("cropi,cropi-paper,full,random,pass_rate,learnability,influence_once,dapo,cropi+dapo",
                                "--methods",
                                help="comma-separated methods to compare"),
    seeds: int = typer.Option(3, "--seeds", help="seeds per method (train.seed/selection.seed + 0..N-1)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="override a field: section.key=value (repeatable)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL (default $CROPI_STORAGE or ./.cropi)"),
    name: Optional[str] = typer.Option(None, "--name", help="base run name (report folder runs/<name>-compare)"),
    workers: int = typer.Option(1, "--workers", "-w", help="runs at a time, each in its own process with "
                                "cores/workers torch threads (the first run goes alone: it computes what all share)"),
) -> None:
    """CROPI vs baselines from the same bootstrap at an equal budget, several seeds; prints the report path."""
    from flows.compare import parse_methods, run_compare
    from flows.compare_report import times, wall

    with user_errors():
        names = parse_methods(methods)
        if seeds < 1:
            raise ConfigError(f"--seeds: must be ≥ 1 (got {seeds})")
        if workers < 1:
            raise ConfigError(f"--workers: must be ≥ 1 (got {workers})")
        cfg = prepare(config, set_, storage, name)
        if len(cfg.name) > 80:  # runs are named <name>-<method>-s<seed> (at most 100 characters)
            raise ConfigError(f"name: at most 80 characters for cropi compare (got {len(cfg.name)})")
        out = run_compare(cfg, names, seeds, workers)
    res = out["results"]
    typer.echo(f"compared {len(out['records'])} runs in {out['seconds']:.1f}s")
    for m, row in res["methods"].items():
        tgt, unt = row.get("tgt_final", [float("nan")] * 2), row.get("unt_final", [float("nan")] * 2)
        extra = ""
        if "step_speedup" in row:
            extra = f", step speed-up {times(row['step_speedup'])}, wall speed-up {wall(row)}"
        typer.echo(f"  {m}: targeted {tgt[0]:.3f}±{tgt[1]:.3f}, untargeted {unt[0]:.3f}±{unt[1]:.3f}{extra}")
    typer.echo(f"report: {out['report']}")


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


@app.command()
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


@app.command()
def inspect(
    key: str = typer.Argument(..., help="artifact key (or a unique prefix)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL"),
) -> None:
    """Print an artifact's manifest (kind, parents, config, files, meta) as JSON."""
    with user_errors():
        store, full = _open_artifact(storage, key)
        m = store.manifest(full)
        typer.echo(json.dumps(m.model_dump(mode="json"), indent=2, sort_keys=True))


POOL_TYPES_KNOWN = ("process", "docker", "kubernetes", "ecs", "cloud-run", "vertex-ai", "azure-container-instance")


def _deployment_config_param(config: str, path: Path) -> str:
    """The `config` parameter a deployment stores: the path of the file it names (`path`) relative to the checkout
    when it is inside it (the worker runs in the checkout), an absolute path otherwise, or the URL as given."""
    if "://" in config and not config.startswith("file://"):
        return config
    from flows.scheduled import REPO

    p = path.expanduser().resolve()
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return str(p)


@app.command()
def deploy(
    config: str = typer.Option(..., "--config", "-c", help="YAML RunConfig the deployment runs (path in the checkout or a storage URL)"),
    name: str = typer.Option(..., "--name", help="deployment name (runs as cropi-scheduled/NAME)"),
    cron: Optional[str] = typer.Option(None, "--cron", help='schedule, e.g. "0 2 * * *" (none: run on demand only)'),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA timezone of the cron schedule"),
    pool: str = typer.Option("cropi", "--pool", help="work pool (created when missing)"),
    pool_type: str = typer.Option("process", "--pool-type", help="type of a pool created here (process)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="override a field: section.key=value (repeatable)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL baked into the deployment"),
    check_files: bool = typer.Option(True, "--check-files/--no-check-files",
                                     help="check the config's data/model paths exist here (off when the worker is another machine)"),
) -> None:
    """Create or update a deployment of the curriculum that runs CONFIG (resolved and validated again when each
    run starts) on work pool POOL, optionally on a cron schedule; prints how to start a worker for it."""
    from flows.scheduled import REPO, resolve_config_path, scheduled_curriculum

    # 1. every argument is checked before anything is registered
    with user_errors():
        if not name.strip() or "/" in name:
            raise ConfigError(f"--name {name!r}: must be non-empty and contain no '/'")
        schedule = None
        if cron is not None:
            from prefect.client.schemas.schedules import CronSchedule

            try:
                CronSchedule(cron=cron, timezone="UTC")
            except Exception:  # noqa: BLE001 - pydantic ValidationError
                raise ConfigError(f"--cron {cron!r}: not a valid cron expression (5 fields, e.g. \"0 2 * * *\")") from None
            try:
                schedule = CronSchedule(cron=cron, timezone=timezone)
            except Exception:  # noqa: BLE001
                raise ConfigError(f"--timezone {timezone!r}: not an IANA timezone (e.g. UTC, Europe/Paris)") from None
        if pool_type != "process":
            why = "unknown work pool type" if pool_type not in POOL_TYPES_KNOWN else "unsupported work pool type"
            raise ConfigError(f"--pool-type {pool_type!r}: {why}; cropi deploy runs this checkout in place and needs a "
                              "'process' pool (use prefect.yaml with an image for container pools)")
        from cropi_core.config import load_config

        path = resolve_config_path(config)
        load_config(path, parse_sets(set_, storage), check_files=check_files)
        param_config = _deployment_config_param(config, path)

    # 2. the server, the pool, then the deployment (Prefect's own API: the same calls `flow.deploy` makes)
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url
    if not api:
        _fail(CropiError("PREFECT_API_URL is not set: start a server (cropi ui) and "
                         "export PREFECT_API_URL=http://127.0.0.1:4200/api"))
    try:
        with get_client(sync_client=True) as client:
            try:
                wp = client.read_work_pool(pool)
                if wp.type != "process":
                    raise ConfigError(f"--pool {pool!r} is a {wp.type!r} work pool; cropi deploy needs a 'process' pool")
                created = False
            except ObjectNotFound:
                from prefect.client.schemas.actions import WorkPoolCreate
                from prefect.workers.process import ProcessWorker

                client.create_work_pool(WorkPoolCreate(
                    name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
                created = True
        params: dict[str, Any] = {"config": param_config, "sets": list(set_ or []), "storage": storage}
        fl = scheduled_curriculum.from_source(source=str(REPO), entrypoint="flows/scheduled.py:scheduled_curriculum")
        dep = fl.to_deployment(name=name, work_pool_name=pool, parameters=params, schedule=schedule,
                               description=f"cropi curriculum of {param_config} (cropi deploy)", tags=["cropi"])
        dep_id = dep.apply(work_pool_name=pool)
    except CropiError as err:
        _fail(err)
    except Exception as err:  # noqa: BLE001 - server unreachable / refused: one line, not a traceback
        _fail(CropiError(f"could not create the deployment on {api}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"))
    when = f"cron {cron!r} ({timezone})" if cron else "no schedule (run on demand)"
    typer.echo(f"deployment cropi-scheduled/{name} ({dep_id}) on pool {pool!r}{' (created)' if created else ''}: "
               f"config {param_config}, {when}")
    typer.echo(f"start a worker:  prefect worker start --pool {pool}")
    typer.echo(f"run it now:      prefect deployment run cropi-scheduled/{name}")


def wait_healthy(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> bool:
    """Poll `<url>/api/health` until it answers 200 (False on timeout or if `proc` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.5)
    return False


def start_server(port: int, log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start `prefect server start --host 127.0.0.1 --port PORT` in the background; return (process, url)."""
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("prefect")
    cmd = [str(exe) if exe.exists() else "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    env = {**os.environ, "PREFECT_UI_API_URL": f"{url}/api"}  # the UI must call this port, not the default 4200
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    return proc, url


def port_in_use(port: int) -> bool:
    """True if something already listens on 127.0.0.1:`port` (the UI binds loopback only)."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@app.command()
def ui(
    port: int = typer.Option(4200, "--port", help="port for the Prefect server"),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds to wait for the server to become healthy"),
) -> None:
    """Start the Prefect server + UI on 127.0.0.1, wait until healthy, print the URL; Ctrl-C stops it."""
    import signal

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt

    if not 1 <= port <= 65535:
        _fail(ConfigError(f"--port: must be in 1..65535 (got {port})"))
    if port_in_use(port):
        _fail(ConfigError(f"--port: 127.0.0.1:{port} is already in use (pick another with --port)"))
    signal.signal(signal.SIGTERM, _stop)  # `kill` stops the server too, like Ctrl-C
    proc, url = start_server(port)
    try:
        if not wait_healthy(url, timeout, proc):
            proc.terminate()
            _fail(CropiError(f"prefect server did not become healthy on {url} within {timeout:.0f}s"))
        typer.echo(f"Prefect UI: {url}", nl=True)
        typer.echo(f"send runs to it with: export PREFECT_API_URL={url}/api")
        sys.stdout.flush()
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


from flows import select_cli as _select_cli  # noqa: E402,F401 - registers `cropi select` / `cropi score`


def main() -> None:  # pragma: no cover - `python -m flows.cli`
    from flows.cli import app as registered  # as __main__, the commands registered by imports live on flows.cli

    registered()


if __name__ == "__main__":  # pragma: no cover
    main()
