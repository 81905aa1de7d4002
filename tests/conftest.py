"""Session-wide test setup: offline, no telemetry, a throwaway Prefect home, shared data location."""

import os
import tempfile
from pathlib import Path

import pytest

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="cropi-prefect-"))

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CROPI_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (data, models). Tests read real data from here."""
    assert (SHARED / "data").is_dir(), f"shared data not found at {SHARED} (set CROPI_SHARED)"
    return SHARED


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return shared_dir / "data"


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API server for the whole session (../shared/STACK.md); yields its API URL.

    Subprocesses given PREFECT_API_URL=<this> report to the same server instead of starting their own.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny-model matmuls: one torch thread is ~10-40× faster than two on a shared 2-core machine.
    Use per module with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def seaweed():
    """A real S3 server for the whole session: SeaweedFS `weed mini` on 127.0.0.1, free ports, telemetry off,
    in a temp folder (tests/seaweed.py); stopped at the end. Yields a `SeaweedS3` (endpoint, creds, env())."""
    from seaweed import start_seaweed

    server = start_seaweed(buckets=("cropi-test", "cropi-scaleout"))
    yield server
    server.stop()


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """The SeaweedFS endpoint and credentials in the environment, as a user would export them (subprocesses and
    Ray workers inherit them); s3fs's instance cache is cleared so no client from another server is reused."""
    import s3fs

    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    yield seaweed.endpoint
    s3fs.S3FileSystem.clear_instance_cache()
