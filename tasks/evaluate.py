"""Evaluation artifacts: greedy pass@1 (and mean@n sampled) of a checkpoint on one test set."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from cropi_core.config import RunConfig
from storage import ArtifactRef
from tasks.artifacts import load_checkpoint, load_problems, ran_on
from tasks.common import GPU_TAG, show_progress
from tasks.recipes import RECIPES, produce

R = RECIPES["evaluation"]
eval_key = R.key


def _run_name() -> str:
    from prefect.runtime import task_run

    p = task_run.parameters
    return f"eval-{p['name']}-s{p.get('stage', 0)}" + (f"-step{p['step']}" if p.get("step") is not None else "")


@task(name="evaluate", task_run_name=_run_name, tags=[GPU_TAG], cache_policy=NO_CACHE)
def evaluate(cfg: RunConfig, ckpt: ArtifactRef, data: ArtifactRef, name: str, stage: int = 0,
             step: int | None = None) -> ArtifactRef:
    """Accuracy of checkpoint `ckpt` on test set `data` (per-item correctness stored for inspection). `stage`: the
    checkpoint θ_stage; `step`: the global GRPO step of a mid-stage checkpoint (eval.every_steps), for names only."""
    def payload(w) -> dict:
        from cropi_core.evaluation import evaluate as run_eval

        e = cfg.eval
        model, tok = load_checkpoint(cfg, ckpt)
        problems = load_problems(cfg, data)
        res = run_eval(model, tok, problems, greedy=e.greedy, n_samples=e.n_samples, temperature=e.temperature,
                       max_new_tokens=e.max_new_tokens, template=cfg.data.template, instruction=cfg.data.instruction,
                       batch_size=e.batch_size, seed=0, progress=show_progress())
        # *_se: standard error over the test prompts (cropi_core.evaluation.standard_error)
        meta = {"set": name, "stage": stage, **({"step": step} if step is not None else {}), "n": len(problems), "accuracy": float(res.accuracy),
                "accuracy_se": float(res.accuracy_se),
                "mean_at_n": None if res.mean_at_n is None else float(res.mean_at_n),
                "mean_at_n_se": None if res.mean_at_n_se is None else float(res.mean_at_n_se), "run": cfg.name,
                "ran_on": ran_on(model)}
        w.put_json("result.json", {**meta, "correct": {k: float(v) for k, v in res.correct.items()},
                                   "sampled": None if res.sampled is None else
                                   {k: float(v) for k, v in res.sampled.items()}})
        return meta

    return produce(R, "evaluate", cfg, {"ckpt": ckpt, "data": data}, payload, fault="evaluate")
