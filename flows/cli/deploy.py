"""`cropi deploy` (a scheduled deployment of the curriculum on a Prefect server) and `cropi ui` (that server + UI).

The deployments run `flows.scheduled.scheduled_curriculum`, which resolves and validates its config when each
run starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import typer

from cropi_core.errors import ConfigError, CropiError
from flows.cli.common import fail, user_errors
from flows.inputs import parse_sets

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
        fail(CropiError("PREFECT_API_URL is not set: start a server (cropi ui) and "
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
        fail(err)
    except Exception as err:  # noqa: BLE001 - server unreachable / refused: one line, not a traceback
        fail(CropiError(f"could not create the deployment on {api}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"))
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


def ui(
    port: int = typer.Option(4200, "--port", help="port for the Prefect server"),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds to wait for the server to become healthy"),
) -> None:
    """Start the Prefect server + UI on 127.0.0.1, wait until healthy, print the URL; Ctrl-C stops it."""
    import signal

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt

    if not 1 <= port <= 65535:
        fail(ConfigError(f"--port: must be in 1..65535 (got {port})"))
    if port_in_use(port):
        fail(ConfigError(f"--port: 127.0.0.1:{port} is already in use (pick another with --port)"))
    signal.signal(signal.SIGTERM, _stop)  # `kill` stops the server too, like Ctrl-C
    proc, url = start_server(port)
    try:
        if not wait_healthy(url, timeout, proc):
            proc.terminate()
            fail(CropiError(f"prefect server did not become healthy on {url} within {timeout:.0f}s"))
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
