"""What every `RunConfig` field does: its role, and when the code reads it.

`tests/test_field_coverage.py` checks this table against the model and the code, so no silent field can appear:
- every leaf field of `RunConfig` has exactly one row here (a new field fails the test until it is placed);
- the role agrees with the keys: a "values" field is hashed (by its section, or by the recipe in tasks/recipes.py
  that uses it), a field of any other role is excluded from its section's hash;
- traced runs of the curriculum read every field whose condition holds for them (embedded model, file data,
  energy sketches, ...); a condition no traced run meets (Ray, TRL's vLLM) names the module that reads the field,
  and the test finds the read there.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

Role = Literal["values", "schedule", "execution", "label"]

ROLES: dict[str, str] = {
    "values": "changes what an artifact holds, so it is hashed into that artifact's key",
    "schedule": "decides which artifacts are computed (when to re-score or refresh); each artifact's own key is "
                "complete, so the field is not hashed",
    "execution": "where or how work runs (device, storage, chunking, retries, engine); not hashed",
    "label": "names things (the run folder); not hashed",
}

# condition → (does it hold for this RunConfig?, the module that reads the fields, for conditions no traced run meets)
WHEN: dict[str, tuple[Callable[[Any], bool], str]] = {
    "always": (lambda c: True, ""),
    "embedded": (lambda c: c.model.is_embedded, "tasks/bootstrap.py"),
    "synthetic": (lambda c: c.data.synthetic is not None, "cropi_core/data/splits.py"),
    "files": (lambda c: c.data.synthetic is None, "cropi_core/data/splits.py"),
    "scored": (lambda c: c.selection.method in ("popi", "influence_once"), "tasks/selection.py"),  # influence ranks
    "candidates": (lambda c: c.influence.candidates is not None, "tasks/selection.py"),
    "gated": (lambda c: c.selection.gate_probe is not None, "tasks/selection.py"),
    "verify_set": (lambda c: "verify" in c.storage.model_fields_set, "tasks/common.py"),
    "vllm": (lambda c: c.train.use_vllm, "cropi_core/training.py"),
    "vllm_rollout": (lambda c: c.rollout.backend == "vllm", "tasks/rollouts.py"),
    "ray": (lambda c: c.runner.kind == "ray", "flows/runtime.py"),
}

FIELDS: dict[str, tuple[Role, str]] = {
    "name": ("label", "always"),
    "model.name_or_path": ("values", "always"),
    "model.gguf_file": ("values", "always"),
    "model.tokenizer_path": ("values", "always"),
    "model.dtype": ("values", "always"),
    "model.tiny.hidden_size": ("values", "embedded"),
    "model.tiny.num_hidden_layers": ("values", "embedded"),
    "model.tiny.num_attention_heads": ("values", "embedded"),
    "model.tiny.num_key_value_heads": ("values", "embedded"),
    "model.tiny.intermediate_size": ("values", "embedded"),
    "model.tiny.max_position_embeddings": ("values", "embedded"),
    "model.tiny.seed": ("values", "embedded"),
    "model.device": ("execution", "always"),
    "bootstrap.enabled": ("values", "embedded"),
    "bootstrap.steps": ("values", "embedded"),
    "bootstrap.lr": ("values", "embedded"),
    "bootstrap.batch_size": ("values", "embedded"),
    "bootstrap.num_problems": ("values", "embedded"),
    "bootstrap.worked_fraction": ("values", "embedded"),
    "bootstrap.unboxed_fraction": ("values", "embedded"),
    "bootstrap.unboxed_domains": ("values", "embedded"),
    "bootstrap.seed": ("values", "embedded"),
    "data.synthetic.domains": ("values", "synthetic"),
    "data.synthetic.targeted": ("values", "synthetic"),
    "data.synthetic.pool_per_domain": ("values", "synthetic"),
    "data.synthetic.pool_size": ("values", "synthetic"),
    "data.synthetic.val_size": ("values", "synthetic"),
    "data.synthetic.test_size": ("values", "synthetic"),
    "data.synthetic.untargeted_test_size": ("values", "synthetic"),
    "data.synthetic.distractor_share": ("values", "synthetic"),
    "data.synthetic.conflict_domains": ("values", "synthetic"),
    "data.synthetic.conflict_strength": ("values", "synthetic"),
    "data.synthetic.verifiers": ("values", "synthetic"),
    "data.synthetic.seed": ("values", "synthetic"),
    "data.pool": ("values", "files"),
    "data.targeted": ("values", "files"),
    "data.untargeted": ("values", "files"),
    "data.template": ("values", "always"),
    "data.instruction": ("values", "always"),
    "data.split_seed": ("values", "files"),
    "data.dedup": ("values", "files"),
    "rollout.backend": ("values", "always"),
    "rollout.vllm_server": ("execution", "vllm_rollout"),
    "rollout.num_generations": ("values", "always"),
    "rollout.num_generations_val": ("values", "always"),
    "rollout.temperature": ("values", "always"),
    "rollout.top_p": ("values", "always"),
    "rollout.max_new_tokens": ("values", "always"),
    "rollout.seed": ("values", "always"),
    "rollout.batch_size": ("values", "always"),
    "rollout.logprob_micro_batch_tokens": ("execution", "always"),
    "influence.projector": ("values", "scored"),
    "influence.sketch_dim": ("values", "scored"),
    "influence.sparse_ratio": ("values", "scored"),
    "influence.transform": ("values", "scored"),
    "influence.sjl_s": ("values", "scored"),
    "influence.allocation": ("values", "scored"),
    "influence.calibration_prompts": ("values", "scored"),
    "influence.seed": ("values", "scored"),
    "influence.dtype": ("values", "scored"),
    "influence.aggregation": ("values", "scored"),
    "influence.micro_batch_tokens": ("execution", "scored"),
    "influence.chunk_rows": ("execution", "scored"),
    "influence.refresh_ess": ("schedule", "scored"),
    "influence.candidates": ("values", "scored"),
    "influence.candidates_by": ("values", "candidates"),
    "influence.score": ("values", "scored"),
    "influence.norm_power": ("values", "scored"),
    "influence.ess_power": ("values", "scored"),
    "selection.method": ("values", "always"),
    "selection.ratio": ("values", "always"),
    "selection.k_rrf": ("values", "always"),
    "selection.seed": ("values", "always"),
    "selection.mix_random": ("values", "always"),
    "selection.fusion": ("values", "scored"),
    "selection.k_fusion": ("values", "scored"),
    "selection.rescore": ("schedule", "scored"),
    "selection.drift_ess": ("schedule", "scored"),
    "selection.drift_kl": ("schedule", "scored"),
    "selection.rescore_reliability": ("schedule", "scored"),
    "selection.gate_probe": ("values", "scored"),
    "selection.gate_score": ("values", "gated"),
    "selection.gate_share": ("values", "gated"),
    "train.stages": ("values", "always"),
    "train.steps_per_stage": ("values", "always"),
    "train.lr": ("values", "always"),
    "train.prompts_per_step": ("values", "always"),
    "train.num_generations": ("values", "always"),
    "train.loss_type": ("values", "always"),
    "train.beta": ("values", "always"),
    "train.epsilon": ("values", "always"),
    "train.temperature": ("values", "always"),
    "train.max_new_tokens": ("values", "always"),
    "train.dynamic_sampling": ("values", "always"),
    "train.save_steps": ("execution", "always"),
    "train.seed": ("values", "always"),
    "train.use_vllm": ("execution", "always"),
    "train.vllm_mode": ("execution", "vllm"),
    "train.vllm_gpu_memory_utilization": ("execution", "vllm"),
    "train.mixed_precision": ("values", "always"),
    "train.micro_batch_size": ("execution", "always"),
    "eval.greedy": ("values", "always"),
    "eval.n_samples": ("values", "always"),
    "eval.temperature": ("values", "always"),
    "eval.max_new_tokens": ("values", "always"),
    "eval.batch_size": ("values", "always"),
    "eval.every_steps": ("schedule", "always"),
    "storage.root": ("execution", "always"),
    "storage.verify": ("execution", "verify_set"),
    "runner.kind": ("execution", "always"),
    "runner.address": ("execution", "ray"),
    "runner.num_cpus": ("execution", "always"),
    "runner.gpus_per_task": ("execution", "ray"),
    "runner.retries": ("execution", "always"),
    "runner.retry_delay_s": ("execution", "always"),
}


def role_of(path: str) -> tuple[Role, str]:
    """(role, condition) of a dotted field path; KeyError names a field the table lacks."""
    try:
        return FIELDS[path]
    except KeyError:
        raise KeyError(f"{path}: not in cropi_core/config_fields.FIELDS") from None
