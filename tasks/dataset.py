"""Dataset artifacts: the pool, validation and test sets as normalised JSONL, keyed by their content hash."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from cropi_core.config import RunConfig
from cropi_core.data import problems_to_jsonl
from storage import ArtifactRef
from tasks.artifacts import FILE, count_by, set_problems
from tasks.common import NO_RETRY_TAG
from tasks.recipes import RECIPES, produce

R = RECIPES["dataset"]
dataset_key = R.key


@task(name="dataset", task_run_name="dataset-{name}", tags=[NO_RETRY_TAG], cache_policy=NO_CACHE)
def dataset(cfg: RunConfig, role: str, name: str) -> ArtifactRef:
    """Write one set as `problems.jsonl` (one `Problem.to_record()` per line)."""
    def payload(w) -> dict:
        problems = set_problems(cfg, role, name)
        w.put_bytes(FILE, problems_to_jsonl(problems))
        return {"role": role, "name": name, "n": len(problems), "domains": count_by(p.domain for p in problems)}

    return produce(R, "dataset", cfg, {"role": role, "name": name}, payload)
