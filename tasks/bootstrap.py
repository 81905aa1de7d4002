"""The stage-0 checkpoint: the embedded tiny model after its supervised warm-up, or a registered local model."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from prefect import task

from cropi_core.config import RunConfig
from storage import ArtifactRef, Store, artifact_key
from storage.registry import register_checkpoint
from tasks.common import GPU_TAG
from tasks.common import Timer, computed, get_store, key_policy, maybe_fault, storage_hit, work_dir, work_lock


def find_produced(store: Store, kind: str, producer: str) -> ArtifactRef | None:
    """The newest intact artifact of `kind` whose meta records `producer` (content-keyed outputs, e.g.
    checkpoints); a damaged one is skipped with a warning (checkpoints are hashed in full), so it is recomputed."""
    found = store.find(kind, meta={"producer": producer})
    for m in reversed(found):
        if store.exists(m.key, verify="full" if kind == "checkpoint" else None):
            return store.ref(m.key)
    return None


def produced_intact(store: Store, kind: str, producer: str) -> bool:
    """False only if artifacts of `kind` made by `producer` exist and every one is damaged (see key_policy)."""
    found = store.find(kind, meta={"producer": producer})
    return not found or find_produced(store, kind, producer) is not None


def checkpoint_path(cfg: RunConfig, ref: ArtifactRef | str) -> Path:
    """Local folder of a checkpoint artifact (loadable with `cropi_core.models.load_model`)."""
    from storage.registry import checkpoint_dir

    return checkpoint_dir(get_store(cfg), ref.key if isinstance(ref, ArtifactRef) else ref)


def copy_model_folder(src: Path, out: Path) -> None:
    """Copy a user's model folder into a checkpoint without pickle-format files (nothing is ever unpickled from
    storage): with safetensors weights they are just left out; a .bin-only model is loaded once from the user's
    folder and saved again as safetensors."""
    from storage.registry import PICKLE_SUFFIXES

    if any(src.glob("*.safetensors")):
        shutil.copytree(src, out, dirs_exist_ok=True,
                        ignore=lambda _d, names: [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)])
        return
    from cropi_core.models import load_model, save_model

    model, tok = load_model(str(src))
    save_model(model, tok, out)


def load_checkpoint(cfg: RunConfig, ref: ArtifactRef):
    """(model, tokenizer) of a checkpoint artifact, on CPU in the configured dtype."""
    from transformers.utils import logging as hf_logging

    from cropi_core.models import load_model

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per chunk task is noise
    return load_model(str(checkpoint_path(cfg, ref)))


def base_key(cfg: RunConfig) -> str:
    """Producer key of the stage-0 checkpoint (tiny model shape + warm-up config, or the model source)."""
    conf = {"model": cfg.model.hashable()}
    if not cfg.model.is_embedded:
        return artifact_key("base_model", parents=[], config=conf)
    conf["bootstrap"] = cfg.bootstrap.hashable()
    conf["data"] = {"template": cfg.data.template, "instruction": cfg.data.instruction,
                    "domains": cfg.data.synthetic.domains if cfg.data.synthetic else None}
    # The warm-up draws problems avoiding every pool/val/test prompt, so the held-out set changes the weights
    # (e.g. another `data.synthetic.targeted` or `test_size`); version 1 left it out and shared one checkpoint.
    conf["held_out"] = prompts_hash(held_out_prompts(cfg))
    return artifact_key("base_model", parents=[], config=conf, version=2)


def held_out_prompts(cfg: RunConfig) -> list[str]:
    """Every pool/val/test prompt of the run's data (the warm-up never sees them)."""
    from tasks.dataset import build_splits_cached

    return [p.prompt for p in build_splits_cached(cfg.data).all_problems()]


def prompts_hash(prompts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(prompts)).encode("utf-8")).hexdigest()


def bootstrap_problems(cfg: RunConfig, exclude: list[str]):
    """Warm-up problems: a seeded synthetic mixture avoiding every pool/val/test prompt."""
    from cropi_core.data import DOMAINS, generate_mixture

    domains = cfg.data.synthetic.domains if cfg.data.synthetic is not None else list(DOMAINS)
    return generate_mixture(domains, cfg.bootstrap.num_problems, seed=10_000 + cfg.bootstrap.seed, exclude=exclude)


@task(name="bootstrap", tags=[GPU_TAG], cache_policy=key_policy(lambda cfg: base_key(cfg),
                                                              intact=lambda store, key: produced_intact(store, "checkpoint", key)))
def base_model(cfg: RunConfig) -> ArtifactRef:
    """Register the stage-0 checkpoint θ_0 = β.

    Embedded model: build the ~1M-parameter Qwen2 with the character tokenizer and run the supervised
    warm-up on synthetic problems disjoint from every evaluation prompt. Real model: copy the local folder.
    """
    store = get_store(cfg)
    key = base_key(cfg)
    found = find_produced(store, "checkpoint", key)
    if found is not None:
        return storage_hit("bootstrap", found)
    maybe_fault("bootstrap")
    with work_lock(cfg, "bootstrap", key[:16]):  # another run on this root may be bootstrapping the same model
        found = find_produced(store, "checkpoint", key)
        if found is not None:
            return storage_hit("bootstrap", found)
        return _bootstrap(cfg, store, key)


def _bootstrap(cfg: RunConfig, store: Store, key: str) -> ArtifactRef:
    out = work_dir(cfg, "bootstrap", key[:16])
    shutil.rmtree(out, ignore_errors=True)
    with Timer() as t:
        meta = {"producer": key, "run": cfg.name, "stage": 0}
        if cfg.model.is_embedded:
            from cropi_core.models import bootstrap, build_char_tokenizer, build_tiny, save_model
            torch_seed(cfg.model.tiny.seed)
            tok = build_char_tokenizer()
            model = build_tiny(cfg.model.tiny, tok)
            held = held_out_prompts(cfg)
            stats = {}
            if cfg.bootstrap.enabled and cfg.bootstrap.steps > 0:
                stats = bootstrap(model, tok, bootstrap_problems(cfg, held), cfg.bootstrap,
                                  template=cfg.data.template, instruction=cfg.data.instruction, progress=True) or {}
            save_model(model, tok, out)
            meta["bootstrap"] = {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}
        else:
            src = Path(cfg.model.name_or_path)
            if cfg.model.gguf_file:
                from cropi_core.models.gguf import convert_gguf

                src = convert_gguf(src, cfg.model.gguf_file, out)
            else:
                copy_model_folder(src, out)
        ref = register_checkpoint(store, out, parents=[], config={"producer": key, **cfg.model.hashable()},
                                  meta=meta, move=True)
    return computed("bootstrap", ref, [], store, t.seconds)


def torch_seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
