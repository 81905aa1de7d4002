"""Evaluation artifacts: greedy pass@1 (and mean@n sampled) of a checkpoint on one test set."""

from __future__ import annotations

from prefect import task

from cropi_core.config import RunConfig
from storage import ArtifactRef, artifact_key
from tasks.common import GPU_TAG
from tasks.common import Timer, computed, get_store, key_policy, maybe_fault, storage_hit


def eval_key(cfg: RunConfig, ckpt: ArtifactRef, data: ArtifactRef, **_: object) -> str:
    conf = {"eval": cfg.eval.hashable(), "template": cfg.data.template, "instruction": cfg.data.instruction}
    return artifact_key("evaluation", parents=[ckpt.key, data.key], config=conf)


@task(name="evaluate", task_run_name="eval-{name}-s{stage}", tags=[GPU_TAG], cache_policy=key_policy(eval_key))
def evaluate(cfg: RunConfig, ckpt: ArtifactRef, data: ArtifactRef, name: str, stage: int = 0) -> ArtifactRef:
    """Accuracy of checkpoint `ckpt` on test set `data` (per-item correctness stored for inspection)."""
    from cropi_core.evaluation import evaluate as run_eval
    from tasks.bootstrap import load_checkpoint
    from tasks.dataset import load_problems

    store = get_store(cfg)
    key = eval_key(cfg, ckpt, data)
    if store.exists(key):
        return storage_hit("evaluate", store.ref(key))
    maybe_fault("evaluate")
    e = cfg.eval
    with Timer() as t:
        model, tok = load_checkpoint(cfg, ckpt)
        problems = load_problems(cfg, data)
        res = run_eval(model, tok, problems, greedy=e.greedy, n_samples=e.n_samples, temperature=e.temperature,
                       max_new_tokens=e.max_new_tokens, template=cfg.data.template, instruction=cfg.data.instruction,
                       batch_size=e.batch_size, seed=0)
        # *_se: standard error over the test prompts (cropi_core.evaluation.standard_error)
        meta = {"set": name, "stage": stage, "n": len(problems), "accuracy": float(res.accuracy),
                "accuracy_se": float(res.accuracy_se),
                "mean_at_n": None if res.mean_at_n is None else float(res.mean_at_n),
                "mean_at_n_se": None if res.mean_at_n_se is None else float(res.mean_at_n_se), "run": cfg.name}
        with store.writer("evaluation", key, parents=[ckpt.key, data.key],
                          config={"eval": e.hashable()}, meta=meta) as w:
            w.put_json("result.json", {**meta, "correct": {k: float(v) for k, v in res.correct.items()},
                                       "sampled": None if res.sampled is None else
                                       {k: float(v) for k, v in res.sampled.items()}})
    return computed("evaluate", store.ref(key), [ckpt, data], store, t.seconds, meta)


def read_eval(cfg: RunConfig, ref: ArtifactRef) -> dict:
    return dict(get_store(cfg).manifest(ref.key).meta)


def metric_of(cfg: RunConfig) -> str:
    """The accuracy field reports and comparisons use: "mean_at_n" when eval.n_samples > 0, else "accuracy"
    (greedy pass@1, or mean@n when greedy is off)."""
    return "mean_at_n" if cfg.eval.n_samples > 0 else "accuracy"


def metric_label(cfg: RunConfig) -> str:
    e = cfg.eval
    return f"mean@{e.n_samples} (T={e.temperature})" if e.n_samples > 0 else ("greedy pass@1" if e.greedy else
                                                                             f"mean@1 (T={e.temperature})")


def accuracy_and_se(cfg: RunConfig, ref: ArtifactRef) -> tuple[float | None, float | None]:
    """(metric value, its standard error over test prompts) of one evaluation artifact. Evaluations written before
    the SE was recorded get it from their per-item scores (`result.json`) where those hold the metric."""
    store = get_store(cfg)
    meta = store.manifest(ref.key).meta
    m = metric_of(cfg)
    val, se = meta.get(m), meta.get(f"{m}_se")
    if val is not None and se is None:
        from cropi_core.evaluation import standard_error

        try:
            res = store.read_json(ref.key, "result.json")
        except Exception:  # noqa: BLE001 - an old artifact without per-item scores
            res = None
        items = None
        if res is not None:
            items = res.get("sampled") if m == "mean_at_n" else res.get("correct")
            if items is None and m == "mean_at_n" and not cfg.eval.greedy:
                items = res.get("correct")  # greedy off: "correct" holds each problem's mean@n
        se = standard_error(items.values()) if items else None
    return val, se
