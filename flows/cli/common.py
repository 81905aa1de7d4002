"""What every `cropi` command shares: one-line user errors (exit code 2) and one-line config deprecations.

Importing this module sets them up for the process: an old config key prints `warning: ...` (one line, no
source location). (Prefect's server startup timeout is set in `flows/__init__.py`, before Prefect is imported.)
"""

from __future__ import annotations

import contextlib
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
    """A CropiError raised inside the block is the user's: `fail` prints it as one line and exits 2."""
    try:
        yield
    except CropiError as err:
        fail(err)

