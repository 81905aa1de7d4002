"""Rollout artifacts: K sampled responses per prompt with rewards and log β per token (CSR Zarr arrays).

Offline rollouts of β are computed once per (behaviour checkpoint, dataset, sampling config, K) and reused by
every stage. The same task measures *online* pass rates: θ_m's rollouts on a stage's selected prompts.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from cropi_core.config import RunConfig
from storage import ArtifactRef
from tasks.artifacts import load_checkpoint, load_problems, ran_on, rollouts_meta, selected_indices, write_rollouts
from tasks.common import GPU_TAG, show_progress
from tasks.recipes import RECIPES, produce

R = RECIPES["rollouts"]


def vllm_kwargs(cfg: RunConfig, model) -> dict:
    """Backend arguments for `rollout.backend: vllm`, per `rollout.vllm_server`: "serve" starts (or reuses) a
    `vllm serve` of the checkpoint's folder from the vLLM venv (tasks/vllm_server.py) and samples over HTTP; a URL
    samples from that server (which must serve the folder); "inprocess" runs vllm.LLM here."""
    server = cfg.rollout.vllm_server
    if server == "inprocess":
        return {"dtype": cfg.model.dtype}
    if server == "serve":
        from tasks.vllm_server import served

        server = served(model.config.name_or_path, dtype=cfg.model.dtype)  # holds this checkpoint's weights
        return {"url": server.url, "model_name": server.folder}
    return {"url": server}


rollouts_key = R.key


@task(name="rollouts", task_run_name="rollouts-{label}", tags=[GPU_TAG], cache_policy=NO_CACHE)
def rollouts(cfg: RunConfig, ckpt: ArtifactRef, data: ArtifactRef, k: int, subset: ArtifactRef | None = None,
             label: str = "pool") -> ArtifactRef:
    """Sample `k` responses per prompt of `data` (only the selected rows when `subset` is a selection) from
    checkpoint `ckpt` with the configured backend; rewards by our verifiers, log-probs by teacher forcing."""
    def payload(w) -> dict:
        from cropi_core.rollout import get_backend

        problems = load_problems(cfg, data)
        if subset is not None:
            problems = [problems[i] for i in selected_indices(cfg, subset)]
        model, tok = load_checkpoint(cfg, ckpt)
        r = cfg.rollout
        kwargs = vllm_kwargs(cfg, model) if r.backend == "vllm" else {}
        kwargs["logprob_micro_batch_tokens"] = r.logprob_micro_batch_tokens  # log β's passes: a memory bound only
        recs = get_backend(r.backend, model, tok, **kwargs).sample(
            problems, k, temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens, seed=r.seed,
            template=cfg.data.template, instruction=cfg.data.instruction, batch_size=r.batch_size,
            progress=show_progress())
        write_rollouts(w, recs)
        return rollouts_meta(recs, k=k, label=label, run=cfg.name, ran_on=ran_on(model))

    return produce(R, "rollouts", cfg, {"ckpt": ckpt, "data": data, "k": k, "subset": subset}, payload,
                   fault="rollouts")
