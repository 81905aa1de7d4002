"""`StorageError`: the one error type storage raises for user-visible problems (one line, names the artifact)."""

from __future__ import annotations

from cropi_core.errors import CropiError


class StorageError(CropiError):
    """A storage problem a user can act on: unsafe path, unknown manifest version, missing chunks, bad key."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line
