"""Prefect flows (stage, curriculum, compare, evaluate) and the `cropi` CLI (`flows.cli`).

Prefect reads its settings once, when it is first imported, so the one default cropi changes is set here,
before any flow module imports Prefect: a loaded 2-core machine can take more than Prefect's default 20 s to
start the temporary API server (a run then died with "Timed out while attempting to connect to ephemeral
Prefect API server"). A value in the environment still wins.
"""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
