"""`evaluate(config, checkpoint)`: score any registered checkpoint on the run's targeted and untargeted tests
(the same cached `evaluate` tasks the curriculum uses), e.g. to compare checkpoints from different runs."""

from __future__ import annotations

from prefect import flow

from cropi_core.config import RunConfig
from flows.runtime import Tracker
from storage import ArtifactRef
from tasks import artifacts as A
from tasks import dataset as T_data
from tasks import evaluate as T_eval
from tasks.common import get_store


@flow(name="cropi-evaluate", flow_run_name="evaluate-{checkpoint}")
def evaluate(config: RunConfig, checkpoint: str, stage: int = -1) -> dict[str, float]:
    """Accuracy per test set (greedy pass@1, or per `config.eval`) of checkpoint key `checkpoint`."""
    cfg = config
    tr = Tracker(cfg)
    ckpt: ArtifactRef = get_store(cfg).ref(checkpoint)
    names = A.set_names(cfg)
    tests = {n: tr.submit(T_data.dataset, cfg=cfg, role=role, name=n)
             for role in ("test_targeted", "test_untargeted") for n in names[role]}
    evals = {n: tr.submit(T_eval.evaluate, cfg=cfg, ckpt=ckpt, data=d, name=n, stage=stage) for n, d in tests.items()}
    return {n: float(A.meta_of(cfg, f.result())["accuracy"]) for n, f in evals.items()}
