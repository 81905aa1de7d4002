"""Rollout artifacts: K sampled responses per prompt with rewards and log β per token (CSR Zarr arrays).

Offline rollouts of β are computed once per (behaviour checkpoint, dataset, sampling config, K) and reused by
every stage. The same task measures *online* pass rates: θ_m's rollouts on a stage's selected prompts.
"""

from __future__ import annotations


import numpy as np
from prefect import task

from cropi_core.config import RunConfig
from cropi_core.rollout import PromptRollouts
from storage import ArtifactRef, Store, artifact_key
from tasks.common import GPU_TAG
from tasks.common import Timer, computed, get_store, key_policy, maybe_fault, parent_keys, storage_hit

ARRAYS = ("prompt_ids", "response_ids", "behavior_logprobs", "rewards")


def rollouts_key(cfg: RunConfig, ckpt: ArtifactRef, data: ArtifactRef, k: int, subset: ArtifactRef | None = None,
                 **_: object) -> str:
    sampling = {n: v for n, v in cfg.rollout.hashable().items() if n not in ("k_train", "k_val")}
    conf = {"sampling": sampling, "k": int(k), "template": cfg.data.template, "instruction": cfg.data.instruction}
    return artifact_key("rollouts", parents=parent_keys(ckpt, data, subset), config=conf)


def write_rollouts(store: Store, w, rollouts: list[PromptRollouts]) -> None:
    """Store records as CSR arrays: prompt_ids [N ragged], response_ids / behavior_logprobs [N·K ragged,
    prompt-major], rewards [N rows of K]; problem ids and texts as JSON."""
    w.put_ragged("prompt_ids", [r.prompt_ids.numpy().astype(np.int64) for r in rollouts])
    w.put_ragged("response_ids", [x.numpy().astype(np.int64) for r in rollouts for x in r.response_ids])
    w.put_ragged("behavior_logprobs", [x.numpy().astype(np.float32) for r in rollouts for x in r.behavior_logprobs])
    w.put_ragged("rewards", [r.rewards.numpy().astype(np.float32) for r in rollouts])
    w.put_json("problem_ids.json", [r.problem_id for r in rollouts])
    w.put_json("texts.json", [r.texts or [] for r in rollouts])


def read_rollouts(store: Store, key: str, rows: tuple[int, int] | None = None) -> list[PromptRollouts]:
    """Records [start, stop) (all by default) of a rollout artifact as `PromptRollouts` (no texts)."""
    import torch

    prompts = store.read_ragged(key, "prompt_ids")
    rewards = store.read_ragged(key, "rewards")
    responses = store.read_ragged(key, "response_ids")
    logps = store.read_ragged(key, "behavior_logprobs")
    ids = store.read_json(key, "problem_ids.json")
    start, stop = rows or (0, len(prompts))
    out, off = [], sum(len(r) for r in rewards[:start])
    for i in range(start, stop):
        k = len(rewards[i])
        out.append(PromptRollouts(
            prompt_ids=torch.from_numpy(np.asarray(prompts[i], dtype=np.int64)),
            response_ids=[torch.from_numpy(np.asarray(x, dtype=np.int64)) for x in responses[off:off + k]],
            behavior_logprobs=[torch.from_numpy(np.asarray(x, dtype=np.float32)) for x in logps[off:off + k]],
            rewards=torch.from_numpy(np.asarray(rewards[i], dtype=np.float32)),
            problem_id=ids[i],
        ))
        off += k
    return out


def pass_rates(store: Store, key: str) -> np.ndarray:
    """Per-prompt mean reward of a rollout artifact, float64[N]."""
    return np.array([float(np.mean(r)) for r in store.read_ragged(key, "rewards")], dtype=np.float64)


@task(name="rollouts", task_run_name="rollouts-{label}", tags=[GPU_TAG], cache_policy=key_policy(rollouts_key))
def rollouts(cfg: RunConfig, ckpt: ArtifactRef, data: ArtifactRef, k: int, subset: ArtifactRef | None = None,
             label: str = "pool") -> ArtifactRef:
    """Sample `k` responses per prompt of `data` (only the selected rows when `subset` is a selection) from
    checkpoint `ckpt` with the configured backend; rewards by our verifiers, log-probs by teacher forcing."""
    store = get_store(cfg)
    key = rollouts_key(cfg, ckpt, data, k, subset)
    if store.exists(key):
        return storage_hit("rollouts", store.ref(key))
    maybe_fault("rollouts")
    from cropi_core.rollout import get_backend
    from tasks.bootstrap import load_checkpoint
    from tasks.dataset import load_problems
    from tasks.selection import selected_indices

    problems = load_problems(cfg, data)
    if subset is not None:
        problems = [problems[i] for i in selected_indices(cfg, subset)]
    model, tok = load_checkpoint(cfg, ckpt)
    r = cfg.rollout
    with Timer() as t:
        backend = get_backend(r.backend, model, tok)
        recs = backend.sample(problems, k, temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens,
                              seed=r.seed, template=cfg.data.template, instruction=cfg.data.instruction,
                              batch_size=r.batch_size, progress=True)
        rates = [x.pass_rate for x in recs]
        meta = {"n": len(recs), "k": k, "label": label, "mean_pass_rate": float(np.mean(rates)) if rates else 0.0,
                "scorable": int(sum(x.scorable for x in recs)), "run": cfg.name}
        with store.writer("rollouts", key, parents=parent_keys(ckpt, data, subset),
                          config={"rollout": cfg.rollout.hashable(), "k": k}, meta=meta) as w:
            write_rollouts(store, w, recs)
    return computed("rollouts", store.ref(key), [ckpt, data] + ([subset] if subset else []), store, t.seconds, meta)


def num_rows(store: Store, ref: ArtifactRef) -> int:
    return int(store.manifest(ref.key).meta["n"])


__all__ = ["rollouts", "rollouts_key", "read_rollouts", "write_rollouts", "pass_rates", "num_rows"]
