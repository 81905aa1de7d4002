"""GRPO for one curriculum stage with TRL's `GRPOTrainer` (PAPER.md §1, §6), resumable mid-stage.

One call trains the model in `model_dir` for `cfg.steps_per_stage` optimizer steps on the selected problems
and writes the result to `out_dir/final` (safetensors + tokenizer + `train_result.json`, written last via an
atomic rename, so a `final/` folder that exists is complete).

Batching (TRL 1.16 semantics): `per_device_train_batch_size` counts *completions*. With `cfg.micro_batch_size`
null it is the whole step, B = `prompts_per_step · num_generations`, and `gradient_accumulation_steps = 1`.
With `micro_batch_size = m` (m divides B) it is m and `gradient_accumulation_steps = B / m`. Either way TRL's
`steps_per_generation` defaults to `gradient_accumulation_steps` and `generation_batch_size` to
`per_device_train_batch_size · steps_per_generation = B` (one process), so every optimizer step samples
`num_generations` completions for each of `prompts_per_step` fresh prompts *once* (reference log-probs in
passes of m), shuffles the B rows with one `torch.randperm(B)` (as without micro-batches) and splits them into
B/m micro-batches whose losses, each divided by B/m, accumulate into exactly one update (the reference run's
"one optimizer update per step"). For loss_type grpo / dr_grpo (a mean over completions of equal-size
micro-batches) and dapo (normalised by the generation batch's token count) the accumulated gradient is the
one-pass gradient up to float rounding; bnpo (a token mean per micro-batch) and dynamic sampling (uneven
micro-batches) would change it and are refused (`cropi_core.config.micro_batch_problem`).

Prompt order: instead of TRL's sampler shuffling (a `torch.Generator` that is *not* restored when a run
resumes in a later epoch, so a resumed run would see a different order), the dataset handed to TRL is
already the full visiting order — concatenated seeded permutations of the problems, exactly
`steps · prompts_per_step` rows — and TRL's shuffling is off. The order is a pure function of
(problems, cfg.seed); training is a single epoch, so resuming only needs TRL's skip-ahead of the
dataloader plus the RNG state (python/numpy/torch) that `Trainer` stores in every checkpoint and restores
after the skip. Result: a run interrupted at any step and resumed from its last checkpoint ends with
bit-identical weights to an uninterrupted run (CPU; tested).

Learning rate is constant (no warm-up, no decay) so a stage's schedule does not depend on how many
stages follow. Checkpoints: `out_dir/checkpoints/checkpoint-<step>` every `cfg.save_steps` steps
(the two newest kept; a checkpoint counts only once its `trainer_state.json`, written last, exists).
They are deleted once `final/` is written.

Dynamic sampling (`cfg.dynamic_sampling`, DAPO): groups whose rewards are all equal are removed from the
batch right after generation and scoring, before the loss. Their advantages are zero anyway, but without
the filter they still contribute through the KL term (beta > 0) and through the loss normaliser (the
number of sequences for "grpo", of tokens for "dapo"/"bnpo"). The filter does not resample replacement
prompts (the batch shrinks); a step whose every group is equal contributes a zero gradient, although
the Adam step still applies its momentum. Kept groups are logged as `dynamic_sampling/kept_fraction`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cropi_core.config import TrainConfig
from cropi_core.errors import ConfigError, CropiError, ModelError
from cropi_core.rng import global_rng

__all__ = ["TrainResult", "train_grpo", "load_policy", "build_trainer", "drop_equal_reward_groups", "training_order",
           "micro_batching"]

RESULT_FILE = "train_result.json"
STEPS_DIR = "steps"  # out_dir/steps/step-<k>: the policy after step k (keep_steps), saved before any checkpoint at k
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainResult:
    """steps: optimizer steps taken in the stage; log_history: TRL's per-step logs (loss, reward, kl, ...);
    final_dir: the trained model folder (safetensors + tokenizer); ran_on: what the policy's forward passes
    computed in, observed on its output layer ({"dtype": "bfloat16", "device": "cpu", "weights": "float32"})."""

    steps: int
    log_history: list[dict[str, Any]] = field(default_factory=list)
    final_dir: Path = Path()
    ran_on: dict[str, Any] = field(default_factory=dict)
    step_dirs: dict[int, Path] = field(default_factory=dict)  # step k in the stage → the policy saved after it


# ---------------------------------------------------------------- loading


def load_policy(model_dir: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from an HF folder; tokenizer padded on the left as TRL requires, chosen by the one
    rule of `cropi_core.models.loading.load_tokenizer` (our char tokenizer as PreTrainedTokenizerFast)."""
    from transformers import AutoModelForCausalLM

    from cropi_core.models.hf_io import LOAD_LOCK
    from cropi_core.models.loading import load_tokenizer

    folder = Path(model_dir)
    if not (folder / "config.json").exists():
        raise ModelError(f"model folder {folder}: config.json not found (expected a saved HF model)")
    tok = load_tokenizer(folder)
    with LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    return model, tok


# ---------------------------------------------------------------- data


def training_order(n_problems: int, steps: int, prompts_per_step: int, seed: int) -> np.ndarray:
    """Problem indices in visiting order (int64[steps·prompts_per_step]): concatenated seeded permutations,
    so every problem is seen once before any is repeated (epochs without a sampler)."""
    need = steps * prompts_per_step
    rng = np.random.default_rng(seed)
    reps = math.ceil(need / n_problems)
    return np.concatenate([rng.permutation(n_problems) for _ in range(reps)])[:need].astype(np.int64)


def _build_dataset(problems: Sequence[Any], order: np.ndarray, tokenizer, template: str, instruction: str):
    from datasets import Dataset

    from cropi_core.data import format_prompt

    prompts = [format_prompt(p, tokenizer, template=template, instruction=instruction) for p in problems]
    records = [json.dumps(p.to_record(), sort_keys=True) for p in problems]
    return Dataset.from_dict({"prompt": [prompts[i] for i in order], "problem": [records[i] for i in order]})


def make_reward_func() -> Callable[..., list[float]]:
    """TRL reward function: (prompts, completions, problem=[json records], ...) -> verifier rewards in {0, 1}."""
    from cropi_core.data import Problem
    from cropi_core.verify import reward

    cache: dict[str, Any] = {}

    def verifier_reward(prompts, completions, problem, **_: Any) -> list[float]:
        out = []
        for rec, completion in zip(problem, completions, strict=True):
            p = cache.get(rec)
            if p is None:
                p = cache[rec] = Problem.from_record(json.loads(rec))
            text = completion if isinstance(completion, str) else completion[-1]["content"]
            out.append(float(reward(p, text)))
        return out

    return verifier_reward


# ---------------------------------------------------------------- dynamic sampling


def drop_equal_reward_groups(batch: dict[str, Any], rewards: torch.Tensor, num_generations: int) -> tuple[dict[str, Any], int]:
    """Keep only the groups (consecutive blocks of `num_generations` rows) whose rewards are not all equal.

    batch: TRL's generation batch (tensors with first dim B = groups·num_generations, plus the scalar
    `num_items_in_batch`, recomputed here as the kept completion tokens). rewards: FloatTensor[B].
    Returns (filtered batch, number of kept groups).
    """
    g = rewards.view(-1, num_generations)
    keep_group = (g != g[:, :1]).any(dim=1)
    keep = keep_group.repeat_interleave(num_generations)
    b = rewards.shape[0]
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == b:
            out[k] = v[keep.to(v.device)]
        else:
            out[k] = v
    if "num_items_in_batch" in batch:
        mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
        out["num_items_in_batch"] = mask.sum()
    return out, int(keep_group.sum())


def _trainer_class():
    from trl import GRPOTrainer

    class CropiGRPOTrainer(GRPOTrainer):
        """GRPOTrainer + optional DAPO dynamic sampling (filter equal-reward groups before the loss)."""

        dynamic_sampling: bool = False

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._last_rewards_per_func = per_func
            return per_func

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if not self.dynamic_sampling or not self.model.training:
                return out
            weights = self.reward_weights.to(self._last_rewards_per_func.device)
            rewards = (self._last_rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
            out, kept = drop_equal_reward_groups(out, rewards, self.num_generations)
            self._metrics["train"]["dynamic_sampling/kept_fraction"].append(kept / (rewards.shape[0] // self.num_generations))
            return out

        def _compute_loss(self, model, inputs):
            if inputs["completion_ids"].shape[0] == 0:  # every group dropped: zero loss, zero gradient
                return sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)
            return super()._compute_loss(model, inputs)

    return CropiGRPOTrainer


# ---------------------------------------------------------------- trainer


def micro_batching(cfg: TrainConfig) -> tuple[int, int]:
    """(per_device_train_batch_size, gradient_accumulation_steps) in completions for `cfg`: (B, 1) with
    micro_batch_size null, else (m, B / m), B = prompts_per_step · num_generations. ConfigError (one line) when m
    does not divide B or cannot be used with the loss (see `cropi_core.config.micro_batch_problem`)."""
    from cropi_core.config import micro_batch_problem
    from cropi_core.errors import ConfigError

    total = cfg.prompts_per_step * cfg.num_generations
    mb = cfg.micro_batch_size
    problem = micro_batch_problem(mb, cfg.prompts_per_step, cfg.num_generations, cfg.loss_type, cfg.dynamic_sampling)
    if problem:
        raise ConfigError(f"train.micro_batch_size: {problem} (got {mb})")
    return (total, 1) if mb is None else (mb, total // mb)


def _grpo_args(cfg: TrainConfig, ckpt_dir: Path, progress: bool, device: str = "auto"):
    from trl import GRPOConfig

    from cropi_core.models.loading import resolve_device

    per_device, accumulation = micro_batching(cfg)
    return GRPOConfig(
        output_dir=str(ckpt_dir),
        use_cpu=resolve_device(device).type == "cpu",
        bf16=cfg.mixed_precision == "bf16",
        fp16=False,
        activation_checkpointing=False,
        report_to="none",
        max_steps=cfg.steps_per_stage,
        per_device_train_batch_size=per_device,  # completions per forward/backward
        gradient_accumulation_steps=accumulation,  # steps_per_generation defaults to it: one generation per step
        num_generations=cfg.num_generations,
        shuffle_dataset=False,  # the dataset already is the seeded visiting order (see module docstring)
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        loss_type=cfg.loss_type,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        temperature=cfg.temperature,
        top_p=1.0,
        max_completion_length=cfg.max_new_tokens,
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        save_only_model=False,  # optimizer + scheduler + RNG state are needed for an exact resume
        logging_steps=1,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        log_completions=False,
        **_vllm_args(cfg),
    )


def _vllm_args(cfg: TrainConfig) -> dict[str, Any]:
    """GRPOConfig options for `train.use_vllm` (TRL generates with vLLM); ConfigError if vLLM is missing. With
    vllm_mode "serve", TRL's own vLLM stays off: cropi's server generates through `rollout_func` (`VLLMServeRollouts`)."""
    if not cfg.use_vllm or cfg.vllm_mode == "serve":
        return {}
    import importlib.util

    from cropi_core.errors import ConfigError

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("train.use_vllm: true needs vLLM and a GPU: pip install 'cropi[vllm]'")
    # TRL's vLLM importance-sampling correction (on by default) reweights the loss by π_trainer / π_vLLM per token:
    # a different objective under an unkeyed execution field. Off, the loss is the paper's GRPO loss whichever
    # engine sampled (as verl's default), and train.use_vllm stays a pure choice of sampler.
    return {"use_vllm": True, "vllm_mode": cfg.vllm_mode, "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization,
            "vllm_importance_sampling_correction": False}


class VLLMServeRollouts:
    """TRL `rollout_func` for `train.use_vllm` with vllm_mode "serve": GRPO's completions come from a `vllm serve`
    at `url` (a server in dev mode, tasks/vllm_server.py). Before the first generation of every optimizer step the
    policy's weights are saved to `sync_dir` and loaded into the engine in place (`reload_weights`), so each step
    samples from the current policy (on-policy, as TRL's own generation). Prompts are TRL's own token ids
    (`_tokenize_prompts`); each row (TRL repeats a prompt num_generations times) gets one sample with a seed from
    (train.seed, step, row); completions are vLLM's token ids, cut after the first EOS (kept)."""

    def __init__(self, url: str, model_name: str, cfg: TrainConfig, sync_dir: str | os.PathLike):
        self.url, self.model_name, self.cfg, self.sync_dir = url.rstrip("/"), model_name, cfg, Path(sync_dir)
        self.synced_step: int | None = None
        self.syncs, self.sync_s, self.generate_s, self.tokens = 0, 0.0, 0.0, 0

    def sync(self, trainer: Any) -> None:
        """Save the policy and load it into the engine (only when the optimizer step changed)."""
        import time

        from cropi_core.rollout.vllm_http import reload_weights

        step = int(trainer.state.global_step)
        if self.synced_step == step:
            return
        t0 = time.perf_counter()
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(str(self.sync_dir), safe_serialization=True)
        trainer.processing_class.save_pretrained(str(self.sync_dir))
        reload_weights(self.url, self.sync_dir)
        self.synced_step, self.syncs, self.sync_s = step, self.syncs + 1, self.sync_s + time.perf_counter() - t0

    def __call__(self, prompts: list, trainer: Any) -> dict[str, Any]:
        import time

        from cropi_core.rollout.base import derive_seed, truncate_at_eos
        from cropi_core.rollout.vllm_http import completions

        self.sync(trainer)
        prompt_ids, _, _ = trainer._tokenize_prompts(prompts)
        tok = trainer.processing_class
        eos = sorted(set(getattr(trainer, "eos_token_ids", None) or [tok.eos_token_id]))
        step = self.synced_step
        bodies = [{"model": self.model_name, "prompt": list(ids), "n": 1, "temperature": self.cfg.temperature,
                   "top_p": 1.0, "top_k": -1, "min_p": 0.0, "max_tokens": self.cfg.max_new_tokens, "min_tokens": 0,
                   "repetition_penalty": 1.0, "seed": derive_seed(self.cfg.seed, "grpo", step, row) % (2**31),
                   "stop_token_ids": eos, "skip_special_tokens": True, "return_token_ids": True}
                  for row, ids in enumerate(prompt_ids)]
        t0 = time.perf_counter()
        answers = completions(self.url, bodies)
        self.generate_s += time.perf_counter() - t0
        comp = [truncate_at_eos(list(a["choices"][0]["token_ids"]), set(eos)) for a in answers]
        self.tokens += sum(len(c) for c in comp)
        return {"prompt_ids": [list(p) for p in prompt_ids], "completion_ids": comp, "logprobs": None}

    def record(self) -> dict[str, Any]:
        """What generation ran on, for the checkpoint's meta (`ran_on["generate"]`)."""
        return {"engine": "vllm serve", "weight_syncs": self.syncs, "sync_s": round(self.sync_s, 3),
                "generate_s": round(self.generate_s, 3), "tokens": self.tokens}


def build_trainer(model_dir, problems, cfg: TrainConfig, ckpt_dir, *, template: str, instruction: str,
                  fault_hook: Callable[[int], None] | None = None, progress: bool = True, device: str = "auto",
                  log: Callable[[str], None] | None = None, vllm_url: str | None = None,
                  vllm_model: str | None = None, keep_steps: Sequence[int] = (), steps_dir: Path | None = None):
    """The configured `GRPOTrainer` subclass for one stage (exposed for tests and benchmarks); `device` as
    `model.device` ("auto": CUDA when available; "cpu" keeps training on the CPU). With `progress` off, Trainer's
    per-step log dicts go to `log` (as Trainer would print them), or nowhere without one. `vllm_url` /
    `vllm_model`: the server (and its model name) that generates when train.use_vllm with vllm_mode "serve".
    keep_steps: save the policy (weights + tokenizer) after these optimizer steps to `steps_dir/step-<k>`."""
    from transformers import TrainerCallback

    if len(problems) == 0:
        raise CropiError("train_grpo: no problems selected for training")
    model, tok = load_policy(model_dir)
    order = training_order(len(problems), cfg.steps_per_stage, cfg.prompts_per_step, cfg.seed)
    dataset = _build_dataset(problems, order, tok, template, instruction)
    callbacks = []
    if fault_hook is not None:

        class _FaultHook(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                fault_hook(state.global_step)

        callbacks.append(_FaultHook())
    if keep_steps:
        keep, folder = frozenset(keep_steps), Path(steps_dir or Path(ckpt_dir).parent / STEPS_DIR)

        class _KeepSteps(TrainerCallback):
            # on_step_end runs before Trainer saves its own checkpoint of the same step, so a resumed run never
            # starts past a kept step whose folder is missing
            def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
                if state.global_step in keep:
                    save_policy(model, processing_class, folder / f"step-{state.global_step}")

        callbacks.insert(0, _KeepSteps())
    if not progress and log is not None:

        class _LogDicts(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):  # PrinterCallback's format, to `log`
                if state.is_local_process_zero and logs:
                    log(str({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in logs.items()
                             if k != "total_flos"}))

        callbacks.append(_LogDicts())
    from cropi_core.models.hf_io import LOAD_LOCK

    cls = _trainer_class()
    with LOAD_LOCK:  # GRPOTrainer loads the KL reference model with from_pretrained
        trainer = cls(
            model=model,
            reward_funcs=[make_reward_func()],
            args=_grpo_args(cfg, Path(ckpt_dir), progress, device),
            train_dataset=dataset,
            processing_class=tok,
            callbacks=callbacks,
        )
    trainer.dynamic_sampling = cfg.dynamic_sampling
    trainer.vllm_rollouts = None
    if cfg.use_vllm and cfg.vllm_mode == "serve":
        if not vllm_url:
            raise ConfigError("train.vllm_mode serve needs a vllm serve URL (tasks/train.py starts one)")
        trainer.vllm_rollouts = VLLMServeRollouts(vllm_url, vllm_model or str(model_dir), cfg,
                                                  Path(ckpt_dir).parent / "vllm-sync")
        trainer.rollout_func = trainer.vllm_rollouts  # TRL's (experimental) generation hook
    # the dtype the policy's logits come out in: bfloat16 under train.mixed_precision "bf16" (autocast)
    trainer.compute_dtypes = set()
    model.get_output_embeddings().register_forward_hook(
        lambda _m, _i, out: trainer.compute_dtypes.add(_dtype_name(out.dtype)))
    if not progress:  # with tqdm off, Trainer would print every log dict on stdout instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def last_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """Newest complete checkpoint folder (one with trainer_state.json, which Trainer writes last)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name)) and (p / "trainer_state.json").exists()]
    return max(found)[1] if found else None


def train_grpo(
    model_dir: str | os.PathLike,
    problems: Sequence[Any],
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    template: str,
    instruction: str,
    resume: bool = True,
    fault_hook: Callable[[int], None] | None = None,
    progress: bool = True,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
    vllm_url: str | None = None,
    vllm_model: str | None = None,
    keep_steps: Sequence[int] = (),
) -> TrainResult:
    """GRPO on `problems` (the stage's selected `Problem`s) for `cfg.steps_per_stage` steps.

    model_dir: HF folder of the current policy (also the KL reference when cfg.beta > 0).
    out_dir: working folder; checkpoints in out_dir/checkpoints, the trained model in out_dir/final.
    resume: continue from the newest complete checkpoint (and return at once if final/ is already there);
    False starts from scratch, deleting old checkpoints. fault_hook(step) runs after every optimizer step
    (tests raise from it to simulate a crash). device: `model.device` (see `build_trainer`). progress: tqdm bar and
    per-step dicts on the console; off, the dicts go to `log` (e.g. the run's logger) if given. vllm_url /
    vllm_model: the `vllm serve` that generates with train.use_vllm and vllm_mode "serve" (`VLLMServeRollouts`);
    what it did lands in `ran_on["generate"]`. keep_steps: optimizer steps after which the policy is also saved,
    to `out_dir/steps/step-<k>` (`TrainResult.step_dirs`; eval.every_steps).
    """
    out = Path(out_dir)
    final_dir, ckpt_dir, steps_dir = out / "final", out / "checkpoints", out / STEPS_DIR
    kept = lambda: {k: steps_dir / f"step-{k}" for k in keep_steps if (steps_dir / f"step-{k}").is_dir()}  # noqa: E731
    if resume and (final_dir / RESULT_FILE).exists() and len(kept()) == len(set(keep_steps)):
        saved = json.loads((final_dir / RESULT_FILE).read_text())
        return TrainResult(steps=saved["steps"], log_history=saved["log_history"], final_dir=final_dir,
                           ran_on=saved.get("ran_on", {}), step_dirs=kept())
    if not resume or (final_dir / RESULT_FILE).exists():  # (a final without the kept steps asked for: again)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        shutil.rmtree(final_dir, ignore_errors=True)
        shutil.rmtree(steps_dir, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    with global_rng():  # TRL seeds and samples from torch's process-wide generator (cropi_core/rng.py)
        trainer = build_trainer(model_dir, problems, cfg, ckpt_dir, template=template, instruction=instruction,
                                fault_hook=fault_hook, progress=progress, device=device, log=log,
                                vllm_url=vllm_url, vllm_model=vllm_model, keep_steps=keep_steps,
                                steps_dir=steps_dir)
        start = last_checkpoint(ckpt_dir) if resume else None
        trainer.train(resume_from_checkpoint=str(start) if start else None)

    tmp = out / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(tmp), safe_serialization=True)
    trainer.processing_class.save_pretrained(str(tmp))
    history = [dict(h) for h in trainer.state.log_history]
    ran_on = {"dtype": "/".join(sorted(trainer.compute_dtypes)), "device": trainer.model.device.type,
              "weights": _dtype_name(next(trainer.model.parameters()).dtype)}
    if trainer.vllm_rollouts is not None:
        ran_on["generate"] = trainer.vllm_rollouts.record()
        shutil.rmtree(trainer.vllm_rollouts.sync_dir, ignore_errors=True)
    (tmp / RESULT_FILE).write_text(json.dumps({"steps": trainer.state.global_step, "log_history": history,
                                               "ran_on": ran_on}, default=float))
    shutil.rmtree(final_dir, ignore_errors=True)
    os.replace(tmp, final_dir)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    missing = sorted(set(keep_steps) - set(kept()))
    if missing:  # only a step past the stage's end (the caller's mistake) can be missing here
        raise CropiError(f"train_grpo: no policy was saved after step(s) {missing} of {trainer.state.global_step}")
    return TrainResult(steps=trainer.state.global_step, log_history=history, final_dir=final_dir, ran_on=ran_on,
                       step_dirs=kept())


def save_policy(model, tokenizer, folder: Path) -> None:
    """The policy's weights (safetensors) and tokenizer in `folder`, which appears complete or not at all."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
