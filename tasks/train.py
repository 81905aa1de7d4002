"""GRPO for one stage (TRL GRPOTrainer via `cropi_core.training.train_grpo`), resumable mid-stage, registered
as a content-hashed checkpoint whose parents are the previous checkpoint and the selection."""

from __future__ import annotations

import shutil

from prefect import task

from cropi_core.config import RunConfig
from storage import ArtifactRef, artifact_key
from storage.registry import register_checkpoint
from tasks.common import GPU_TAG, check_cancelled
from tasks.common import (LEDGER, TransientFault, Timer, attempt, computed, fault_budget, get_store, key_policy, log,
                          storage_hit, work_dir, work_lock)


def train_key(cfg: RunConfig, stage: int, ckpt: ArtifactRef, pool: ArtifactRef, sel: ArtifactRef, **_: object) -> str:
    """Producer key: the trained checkpoint's own key is content-hashed, so the task is keyed on its inputs."""
    conf = {"train": cfg.train.hashable(), "stage": stage, "template": cfg.data.template,
            "instruction": cfg.data.instruction}
    return artifact_key("train", parents=[ckpt.key, pool.key, sel.key], config=conf)


def _trained(store, key: str) -> bool:
    from tasks.bootstrap import produced_intact

    return produced_intact(store, "checkpoint", key)


@task(name="train", task_run_name="train-s{stage}", tags=[GPU_TAG], cache_policy=key_policy(train_key, intact=_trained))
def train(cfg: RunConfig, stage: int, ckpt: ArtifactRef, pool: ArtifactRef, sel: ArtifactRef) -> ArtifactRef:
    """E = train.steps_per_stage GRPO steps from `ckpt` on the selected prompts → checkpoint θ_{m+1}.

    Trainer checkpoints every `train.save_steps` steps live in a local work folder keyed by the inputs, so a
    retried or killed task resumes mid-stage. CROPI_FAULT="train:N" fails the first N attempts right after
    the first optimizer step past a saved checkpoint.
    """
    from cropi_core.training import train_grpo
    from tasks.bootstrap import checkpoint_path, find_produced
    from tasks.dataset import load_problems
    from tasks.selection import selected_indices

    store = get_store(cfg)
    key = train_key(cfg, stage, ckpt, pool, sel)
    found = find_produced(store, "checkpoint", key)
    if found is not None:
        return storage_hit("train", found)
    with work_lock(cfg, "train", key[:24]):  # another run on this root may be training the same stage
        return _train(cfg, stage, ckpt, pool, sel, store, key)


def _train(cfg: RunConfig, stage: int, ckpt: ArtifactRef, pool: ArtifactRef, sel: ArtifactRef, store, key: str):
    from cropi_core.training import train_grpo
    from tasks.bootstrap import checkpoint_path, find_produced
    from tasks.dataset import load_problems
    from tasks.selection import selected_indices

    found = find_produced(store, "checkpoint", key)
    if found is not None:  # registered while we waited for the lock
        return storage_hit("train", found)
    problems = load_problems(cfg, pool)
    chosen = [problems[i] for i in selected_indices(cfg, sel)]
    out = work_dir(cfg, "train", key[:24])
    steps = cfg.train.steps_per_stage
    fail = attempt() <= fault_budget("train")
    fault_step = min(cfg.train.save_steps + 1, steps)

    def hook(step: int) -> None:
        log(f"train stage {stage}: step {step}/{steps}")  # progress marker (tests watch it)
        check_cancelled(f"train stage {stage} at step {step}/{steps} (mid-stage checkpoints kept)")
        if fail and step == fault_step:
            LEDGER.add("train", f"attempt-{attempt()}", "fault")
            raise TransientFault(f"injected transient fault in train at step {step} (attempt {attempt()})")

    with Timer() as t:
        res = train_grpo(checkpoint_path(cfg, ckpt), chosen, cfg.train, out, template=cfg.data.template,
                         instruction=cfg.data.instruction, resume=True, fault_hook=hook, progress=True)
        last = res.log_history[-1] if res.log_history else {}
        meta = {"producer": key, "run": cfg.name, "stage": stage + 1, "steps": res.steps,
                "train_loss": float(last.get("train_loss", last.get("loss", float("nan"))))}
        rewards = [float(h["reward"]) for h in res.log_history if "reward" in h]
        meta["reward_mean"] = sum(rewards) / len(rewards) if rewards else None
        ref = register_checkpoint(store, res.final_dir, parents=[ckpt.key, sel.key],
                                  config={"producer": key, "train": cfg.train.hashable()}, meta=meta, move=True)
    shutil.rmtree(out, ignore_errors=True)
    return computed("train", ref, [ckpt, sel], store, t.seconds, {"steps": res.steps})

