"""One recipe per artifact kind: its parents, the config slice it hashes and its format version, in one table.

From a `Recipe` derive the artifact key (`recipe.key`) and the manifest's parents and config (`produce` writes
exactly what the key hashes). `produce` runs the steps every task shares — storage hit → return it as a "Cached"
state; else time the payload inside a writer, record the seconds and the machine in the manifest
(`meta["compute"]`), commit, emit the asset event — so a task body keeps only its payload. storage/README.md
("Artifact recipes") shows the same table.

Parents are named by the task's parameters, in key order: `"a|b"` is a, or b when a is None; a dict-valued
parameter contributes its refs sorted by name; None parents are left out. Content-keyed kinds (datasets, the
stage-0 and imported checkpoints) name a `key_fn`; producer keys of checkpoints (whose own key is the hash of
their weights) name the `key_kind` they are hashed under.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cropi_core.config import RunConfig
from storage import ArtifactRef, artifact_key, dataset_hash
from tasks.artifacts import checkpoint_content, find_produced, held_out_prompts, prompt_set, set_problems
from tasks.common import (Timer, compute_record, computed, get_store, log, maybe_fault, maybe_kill, storage_hit,
                          work_lock)


@dataclass(frozen=True)
class Recipe:
    kind: str  # the artifact's kind in storage
    parents: tuple[str, ...]  # task parameters holding the parent refs, in key order
    config: Callable[..., dict]  # config(cfg, **task params) -> the hashed config slice (the manifest records it)
    version: int = 1  # format version, hashed into the key
    key_kind: str | None = None  # the kind a producer key is hashed under (outputs keyed by content)
    key_fn: Callable[..., str] | None = None  # content-keyed kinds: the key itself, key_fn(cfg, **task params)

    def parent_refs(self, params: dict[str, Any]) -> list[ArtifactRef]:
        out: list[ArtifactRef] = []
        for spec in self.parents:
            value = next((params[n] for n in spec.split("|") if params.get(n) is not None), None)
            if isinstance(value, dict):
                out += [value[n] for n in sorted(value)]
            elif value is not None:
                out.append(value)
        return out

    def key(self, cfg: RunConfig, **params: Any) -> str:
        if self.key_fn is not None:
            return self.key_fn(cfg, **params)
        return artifact_key(self.key_kind or self.kind, parents=[r.key for r in self.parent_refs(params)],
                            config=self.config(cfg, **params), version=self.version)


def produce(recipe: Recipe, task: str, cfg: RunConfig, params: dict[str, Any],
            payload: Callable[[Any], dict | None], fault: str | None = None) -> Any:
    """The artifact of `recipe` for these task parameters: from storage if there (a "Cached" state holding its
    ref, `storage_hit`), else `payload(writer)` puts the files (and returns the manifest meta) inside a writer
    recording the recipe's parents and config; timed, its compute record (`meta["compute"]`) written before the
    manifest is committed, announced as a Prefect asset. `fault`: the CROPI_FAULT name checked first."""
    store = get_store(cfg)
    key = recipe.key(cfg, **params)
    if store.exists(key):
        return storage_hit(task, store.ref(key))
    if fault:
        maybe_fault(fault)
    parents = recipe.parent_refs(params)
    with store.writer(recipe.kind, key, parents=[p.key for p in parents], config=recipe.config(cfg, **params),
                      format_version=recipe.version) as w:
        with Timer() as t:
            meta = payload(w) or {}
        w.meta.update(meta)
        w.meta["compute"] = compute_record(t.seconds, task, meta.get("ran_on"))
        maybe_kill(task)
    if w.reused:
        log(f"{task}: another writer stored {recipe.kind} {key[:12]} first; its manifest stands")
    return computed(task, w.ref, parents, store, w.manifest.meta)


def produce_checkpoint(recipe: Recipe, task: str, cfg: RunConfig, params: dict[str, Any],
                       build: Callable[[str, Callable[..., dict]], ArtifactRef], lock: str,
                       fault: str | None = None, complete: Callable[[], bool] = lambda: True) -> Any:
    """`produce` for checkpoints, whose key is the hash of their weights: found by the producer key
    (`recipe.key`) in their meta; else, holding the work-folder lock `lock` (another run on this root may be
    making the same one), `build(producer key, compute)` trains or copies and registers it, putting
    `compute(ran_on, **extra)` (the compute record so far) in the meta it registers, so the seconds are in the
    manifest from the moment it exists. `complete()`: whether what `build` registers beside the checkpoint is all
    there too (a found checkpoint is a hit only then)."""
    store = get_store(cfg)
    key = recipe.key(cfg, **params)
    found = find_produced(store, "checkpoint", key)
    if found is not None and complete():
        return storage_hit(task, found)
    if fault:
        maybe_fault(fault)
    with work_lock(cfg, lock, key[:24]):
        found = find_produced(store, "checkpoint", key)
        if found is not None and complete():  # registered while we waited for the lock
            return storage_hit(task, found)
        with Timer() as t:
            ref = build(key, lambda ran_on=None, **extra: compute_record(t.elapsed(), task, ran_on, **extra))
    m = store.manifest(ref.key)  # the registered checkpoint's own parents (the asset event names the same)
    return computed(task, ref, list(m.parents), store, m.meta)


# ---------------------------------------------------------------- config slices (what each kind hashes)
def behavior_temperature(cfg: RunConfig) -> float:
    """Temperature the stored log β were computed at (the rollout backend teacher-forces at the sampling
    temperature), so θ's log-probs are taken at the same temperature and ρ = 1 at θ = β."""
    return float(cfg.rollout.temperature)


def prompt_format(cfg: RunConfig) -> dict:
    return {"template": cfg.data.template, "instruction": cfg.data.instruction}


RANDOM_METHODS = ("random", "pass_rate")
INFLUENCE_METHODS = ("popi", "influence_once")  # the methods that rank by influence scores


def mixes_random(cfg: RunConfig) -> bool:
    return cfg.selection.mix_random > 0 and cfg.selection.method != "full"


def selection_config(cfg: RunConfig, stage: int, **_: Any) -> dict:
    conf = {"selection": cfg.selection.hashable()}
    if cfg.selection.method == "full":
        # every pool prompt whatever the ratio, seed, k_rrf or mix_random: full data keeps one key across a sweep of
        # them (version 1 hashed the ratio and seed too, so `cropi compare --set selection.ratio=…` retrained it)
        conf["selection"] = {"method": "full"}
    elif cfg.selection.method not in INFLUENCE_METHODS:  # the fusion with learnability only shapes influence rankings
        conf["selection"] = {k: v for k, v in conf["selection"].items() if k not in ("fusion", "k_fusion")}
    if cfg.selection.method in RANDOM_METHODS or mixes_random(cfg):
        conf["stage"] = stage  # a fresh random subset each stage
    return conf


def rollouts_config(cfg: RunConfig, k: int, **_: Any) -> dict:
    # K is the argument `k`; hashable() names the two K fields by their pre-rename keys (k_train, k_val)
    sampling = {n: v for n, v in cfg.rollout.hashable().items() if n not in ("k_train", "k_val")}
    return {"sampling": sampling, "k": int(k), **prompt_format(cfg)}


def imported_rollouts_config(cfg: RunConfig, path: str, fmt: str, **_: Any) -> dict:
    from cropi_core.rollout.imported import content_hash

    return {"import": {"format": fmt, "content": content_hash(path), "eos": True},
            "temperature": behavior_temperature(cfg), **prompt_format(cfg)}


def prompts_hash(prompts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(prompts)).encode("utf-8")).hexdigest()


def base_config(cfg: RunConfig, **_: Any) -> dict:
    """The stage-0 checkpoint's producer config: the model source, and for the embedded model its warm-up."""
    conf = {"model": cfg.model.hashable()}
    if not cfg.model.is_embedded:
        return conf
    conf["bootstrap"] = cfg.bootstrap.hashable()
    syn = cfg.data.synthetic
    conf["data"] = {**prompt_format(cfg), "domains": syn.domains if syn else None}
    if syn is not None and syn.conflict_domains:  # the warm-up teaches their problems the other convention
        conf["data"]["conflict"] = {"domains": syn.conflict_domains, "strength": syn.conflict_strength,
                                    "seed": syn.seed}
    # The warm-up draws problems avoiding every pool/val/test prompt, so the held-out set changes the weights
    # (e.g. another `data.synthetic.targeted` or `test_size`); version 1 left it out and shared one checkpoint.
    conf["held_out"] = prompts_hash(held_out_prompts(cfg))
    return conf


def base_recipe(cfg: RunConfig) -> Recipe:
    return RECIPES["bootstrap" if cfg.model.is_embedded else "base_model"]


def grads_config(cfg: RunConfig, **_: Any) -> dict:
    conf = {"influence": cfg.influence.hashable(), **_temperature(cfg)}
    if cfg.influence.uses_energy:
        # energy ratios v2: computed in a fixed order with exact sums. v1 summed in set order (PYTHONHASHSEED), so
        # each process drew its own masks and v1 sketches of one key need not match each other: never reuse them
        conf["energy_ratios"] = 2
    return conf


def candidates_config(cfg: RunConfig, stage: int, **_: Any) -> dict:
    conf = {"candidates": cfg.influence.candidates, "ratio": cfg.selection.ratio, "seed": cfg.selection.seed,
            "stage": stage}
    if cfg.influence.candidates_by != "random":  # the cascade: no seed or stage draws them (kept for one key rule)
        conf["by"] = cfg.influence.candidates_by
    return conf


def probe_config(cfg: RunConfig, stage: int, **_: Any) -> dict:
    """The conflict gate's probe: a seeded random draw of gate_probe scorable prompts."""
    return {"probe": cfg.selection.gate_probe, "seed": cfg.selection.seed, "stage": stage}


def scores_config(cfg: RunConfig, ess: ArtifactRef | None = None, **_: Any) -> dict:
    """{} for the paper's cosine (every key from before the other rules stays), else the rule and its power; the
    ESS weighting's power when a pool-health artifact weighs the scores (influence.ess_power > 0, stage ≥ 1)."""
    rule = cfg.influence.score
    conf = {} if rule == "cosine" else {
        "score": rule, **({"norm_power": cfg.influence.norm_power} if rule == "cosine_norm" else {})}
    if ess is not None:
        conf["ess_power"] = cfg.influence.ess_power
    return conf


def base_key(cfg: RunConfig, **_: Any) -> str:
    """Producer key of the stage-0 checkpoint (tiny model shape + warm-up config, or the model source)."""
    return base_recipe(cfg).key(cfg)


def dataset_key(cfg: RunConfig, role: str, name: str, **_: Any) -> str:
    """Content hash of the set's normalised records."""
    return dataset_hash([p.to_record() for p in set_problems(cfg, role, name)])


def import_dataset_key(cfg: RunConfig, path: str, name: str, verifier: str, **_: Any) -> str:
    return dataset_hash([p.to_record() for p in prompt_set(path, name, verifier).problems])


def _temperature(cfg: RunConfig, **_: Any) -> dict:
    return {"temperature": behavior_temperature(cfg)}


def _set_name(cfg: RunConfig, role: str, name: str, **_: Any) -> dict:
    return {"role": role, "name": name}


# ---------------------------------------------------------------- the table: kind → parents → config
RECIPES: dict[str, Recipe] = {
    "dataset": Recipe("dataset", (), _set_name, key_fn=dataset_key),
    "import_dataset": Recipe("dataset", (), _set_name, key_fn=import_dataset_key),
    "bootstrap": Recipe("checkpoint", (), base_config, version=2, key_kind="base_model"),  # the embedded model
    "base_model": Recipe("checkpoint", (), base_config, key_kind="base_model"),  # a local model folder
    "import_checkpoint": Recipe("checkpoint", (), lambda cfg, path, gguf_file=None, **_: {
        "content": checkpoint_content(path, gguf_file)}, key_kind="import_checkpoint"),
    "rollouts": Recipe("rollouts", ("ckpt", "data", "subset"), rollouts_config),
    "import_rollouts": Recipe("rollouts", ("ckpt", "data"), imported_rollouts_config),
    "calibration": Recipe("calibration", ("ckpt", "pool_rollouts"), lambda cfg, **_: {
        "calibration_prompts": cfg.influence.calibration_prompts, "aggregation": cfg.influence.aggregation,
        **_temperature(cfg)}),
    "candidates": Recipe("candidates", ("pool_rollouts", "previous"), candidates_config),
    "grads": Recipe("grads", ("ckpt", "rollouts", "calibration", "candidates"), grads_config),
    "scores": Recipe("scores", ("pool_grads", "val_grads", "ess"), scores_config),
    "probe": Recipe("candidates", ("pool_rollouts",), probe_config),
    "gate": Recipe("gate", ("scores",), lambda cfg, **_: {"gate_score": cfg.selection.gate_score,
                                                          "gate_share": cfg.selection.gate_share}),
    "selection": Recipe("selection", ("pool", "scores|pool_rollouts"), selection_config),
    "health": Recipe("health", ("ckpt", "pool_rollouts", "sel"), _temperature),
    "pool_health": Recipe("health", ("ckpt", "pool_rollouts"), lambda cfg, **_: {**_temperature(cfg), "prompts": "all"}),
    "train": Recipe("checkpoint", ("ckpt", "pool", "sel"), lambda cfg, stage, **_: {
        "train": cfg.train.hashable(), "stage": stage, **prompt_format(cfg)}, key_kind="train"),
    # the policy after step k of a stage (eval.every_steps): the stage's training inputs and k
    "train_step": Recipe("checkpoint", ("ckpt", "pool", "sel"), lambda cfg, stage, step, **_: {
        "train": cfg.train.hashable(), "stage": stage, "step": step, **prompt_format(cfg)}, key_kind="train_step"),
    "evaluation": Recipe("evaluation", ("ckpt", "data"), lambda cfg, **_: {"eval": cfg.eval.hashable(),
                                                                          **prompt_format(cfg)}),
}
