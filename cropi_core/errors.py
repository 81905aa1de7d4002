"""User-facing errors. Every message is ONE line naming the problem (file, row, field, value).

The CLI catches `CropiError` and prints `error: <message>` with exit code 2; anything else is a bug.
"""


class CropiError(Exception):
    """Base class for errors a user can cause (bad config, bad data, missing files)."""


class ConfigError(CropiError):
    """Invalid run configuration (unknown key, out-of-range value, missing file)."""


class DataError(CropiError):
    """Malformed dataset input: names file, row (1-based line) and field."""


class ModelError(CropiError):
    """A model or tokenizer that cannot be loaded (missing path, missing optional dependency)."""


class ConfigDeprecation(FutureWarning):
    """A config key under its old name: it still loads (same meaning, same cache keys); the CLI prints one line."""
