"""`ArtifactRef`: the small, JSON-able, hashable handle tasks pass around instead of data."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ArtifactRef(BaseModel):
    """kind, key (sha256 hex) and uri (fsspec URL of the artifact folder)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str
    key: str
    uri: str

    @property
    def short(self) -> str:
        return self.key[:8]
