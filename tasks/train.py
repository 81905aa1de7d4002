"""GRPO for one stage (TRL GRPOTrainer via `cropi_core.training.train_grpo`), resumable mid-stage, registered
as a content-hashed checkpoint whose parents are the previous checkpoint and the selection."""

from __future__ import annotations

import shutil

from prefect import task
from prefect.cache_policies import NO_CACHE

from cropi_core.config import RunConfig
from storage import ArtifactRef
from storage.registry import register_checkpoint
from tasks.artifacts import checkpoint_path, load_problems, selected_indices
from tasks.common import (GPU_TAG, TransientFault, attempt, check_cancelled, fault_budget, get_store, log,
                          show_progress, work_dir)
from tasks.recipes import RECIPES, produce_checkpoint

R = RECIPES["train"]
R_STEP = RECIPES["train_step"]
train_key = R.key  # producer key: the trained checkpoint's own key is content-hashed, so the task is keyed on its inputs


@task(name="train", task_run_name="train-s{stage}", tags=[GPU_TAG], cache_policy=NO_CACHE)
def train(cfg: RunConfig, stage: int, ckpt: ArtifactRef, pool: ArtifactRef, sel: ArtifactRef) -> ArtifactRef:
    """E = train.steps_per_stage GRPO steps from `ckpt` on the selected prompts → checkpoint θ_{m+1}.

    Trainer checkpoints every `train.save_steps` steps live in a local work folder keyed by the inputs, so a
    retried or killed task resumes mid-stage. CROPI_FAULT="train:N" fails the first N attempts right after
    the first optimizer step past a saved checkpoint. With eval.every_steps, the policy after each of those steps
    is registered too (`step_checkpoints`), before the final one; a final found without them trains again.
    """
    complete = lambda: None not in step_checkpoints(cfg, stage, ckpt, pool, sel).values()  # noqa: E731
    return produce_checkpoint(R, "train", cfg, {"stage": stage, "ckpt": ckpt, "pool": pool, "sel": sel},
                              lambda key, compute: _train(cfg, stage, ckpt, pool, sel, key, compute),
                              lock="train", complete=complete)


def step_checkpoints(cfg: RunConfig, stage: int, ckpt: ArtifactRef, pool: ArtifactRef,
                     sel: ArtifactRef) -> dict[int, ArtifactRef | None]:
    """{k: the registered policy after step k of this stage, None if missing} for k in eval.mid_steps (empty
    without eval.every_steps)."""
    from tasks.artifacts import find_produced_each

    keys = {k: R_STEP.key(cfg, stage=stage, ckpt=ckpt, pool=pool, sel=sel, step=k)
            for k in cfg.eval.mid_steps(cfg.train.steps_per_stage)}
    found = find_produced_each(get_store(cfg), "checkpoint", list(keys.values())) if keys else {}
    return {k: found[key] for k, key in keys.items()}


def _train(cfg: RunConfig, stage: int, ckpt: ArtifactRef, pool: ArtifactRef, sel: ArtifactRef, key: str,
           compute) -> ArtifactRef:
    from cropi_core.training import train_grpo

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
            raise TransientFault(f"injected transient fault in train at step {step} (attempt {attempt()})")

    resumed = any(out.glob("checkpoints/checkpoint-*"))  # an earlier attempt's steps: not in this one's seconds
    server = {}
    if cfg.train.use_vllm and cfg.train.vllm_mode == "serve":  # cropi's vllm serve generates (docs/vllm.md)
        from tasks.vllm_server import served

        srv = served(checkpoint_path(cfg, ckpt), dtype=cfg.model.dtype)
        server = {"vllm_url": srv.url, "vllm_model": srv.folder}
    try:
        res = train_grpo(checkpoint_path(cfg, ckpt), chosen, cfg.train, out, template=cfg.data.template,
                         instruction=cfg.data.instruction, resume=True, fault_hook=hook,
                         progress=show_progress(), log=log, device=cfg.model.device,
                         keep_steps=cfg.eval.mid_steps(steps), **server)
    finally:
        if server:  # the engine now holds a synced policy, no checkpoint's weights
            from tasks.vllm_server import forget_loaded

            forget_loaded()
    last = res.log_history[-1] if res.log_history else {}
    rewards = [float(h["reward"]) for h in res.log_history if "reward" in h]
    meta = {"producer": key, "run": cfg.name, "stage": stage + 1, "steps": res.steps,
            "train_loss": float(last.get("train_loss", last.get("loss", float("nan")))),
            "reward_mean": sum(rewards) / len(rewards) if rewards else None, "ran_on": res.ran_on,
            "compute": compute(res.ran_on, **({"partial": True} if resumed else {}))}
    store = get_store(cfg)
    for k, folder in sorted(res.step_dirs.items()):  # registered first: a final checkpoint implies its steps
        step_key = R_STEP.key(cfg, stage=stage, ckpt=ckpt, pool=pool, sel=sel, step=k)
        register_checkpoint(store, folder, parents=[ckpt.key, sel.key],
                            config={"producer": step_key, "train": cfg.train.hashable(), "step": k},
                            meta={"producer": step_key, "run": cfg.name, "in_stage": stage, "step": k,
                                  "global_step": stage * steps + k}, move=True)
    # the config enters the checkpoint's own key (storage.registry): {"producer", "train"} as ever
    ref = register_checkpoint(store, res.final_dir, parents=[ckpt.key, sel.key],
                              config={"producer": key, "train": cfg.train.hashable()}, meta=meta, move=True)
    shutil.rmtree(out, ignore_errors=True)
    return ref
