"""What every `cropi` command shares: one-line user errors (exit code 2) and one-line config deprecations.

Importing this module sets them up for the process: an old config key prints `warning: ...` (one line, no
source location). (Prefect's server startup timeout is set in `flows/__init__.py`, before Prefect is imported.)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import typer

from cropi_core.errors import ConfigDeprecation, CropiError

EXIT_USER_ERROR = 2

_show_warning = warnings.showwarning


def _one_line_deprecation(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """An old config key prints `warning: <file>: config key ... is deprecated, use ...` and nothing else."""
    if issubclass(category, ConfigDeprecation):
        typer.echo(f"warning: {message}", err=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


warnings.showwarning = _one_line_deprecation


def fail(err: BaseException) -> None:
    """Print `error: <err as one line>` on stderr and exit with code 2."""
    msg = " ".join(str(err).split()) or type(err).__name__
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """A CropiError raised inside the block is the user's: `fail` prints it as one line and exits 2. So is
    Prefect's temporary API server not starting in time (a busy machine, not a bug): one line saying what to set."""
    try:
        yield
    except CropiError as err:
        fail(err)
    except RuntimeError as err:
        if "ephemeral Prefect API server" not in str(err):
            raise
        limit = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "20")
        fail(CropiError(f"Prefect's temporary API server did not start within {limit} s on this machine: "
                        "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start one with `cropi ui` "
                        "and export PREFECT_API_URL=http://127.0.0.1:4200/api"))

