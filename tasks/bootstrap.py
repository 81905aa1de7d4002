"""The stage-0 checkpoint: the embedded tiny model after its supervised warm-up, or a registered local model."""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from cropi_core.config import RunConfig
from storage import ArtifactRef
from storage.registry import register_checkpoint
from tasks.artifacts import held_out_prompts, ran_on
from tasks.common import GPU_TAG, get_store, show_progress, work_dir
from tasks.recipes import base_recipe, produce_checkpoint


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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json")


def replace_tokenizer(out: Path, tokenizer_path: str) -> None:
    """Store `model.tokenizer_path`'s tokenizer in the base checkpoint in place of the model folder's own, so every
    later checkpoint (and every task loading one) uses the tokenizer the run asked for."""
    from cropi_core.models.loading import load_tokenizer, local_folder

    tok = load_tokenizer(local_folder(tokenizer_path))
    for name in TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
    tok.save_pretrained(str(out))


def bootstrap_problems(cfg: RunConfig, exclude: list[str]):
    """Warm-up problems: a seeded synthetic mixture avoiding every pool/val/test prompt."""
    from cropi_core.data import DOMAINS, generate_mixture
    from cropi_core.data.synthetic import with_conventions

    syn = cfg.data.synthetic
    domains = syn.domains if syn is not None else list(DOMAINS)
    problems = generate_mixture(domains, cfg.bootstrap.num_problems, seed=10_000 + cfg.bootstrap.seed, exclude=exclude)
    if syn is not None:  # a conflicting domain's warm-up problems carry its convention too (bootstrap.target_text)
        problems = with_conventions(problems, syn.conflict_domains, syn.conflict_strength, syn.seed)
    return problems


@task(name="bootstrap", tags=[GPU_TAG], cache_policy=NO_CACHE)
def base_model(cfg: RunConfig) -> ArtifactRef:
    """Register the stage-0 checkpoint θ_0 = β.

    Embedded model: build the ~1M-parameter Qwen2 with the character tokenizer and run the supervised
    warm-up on synthetic problems disjoint from every evaluation prompt. Real model: copy the local folder.
    """
    return produce_checkpoint(base_recipe(cfg), "bootstrap", cfg, {},
                              lambda key, compute: _bootstrap(cfg, key, compute), lock="bootstrap", fault="bootstrap")


def _bootstrap(cfg: RunConfig, key: str, compute) -> ArtifactRef:
    out = work_dir(cfg, "bootstrap", key[:16])
    shutil.rmtree(out, ignore_errors=True)
    meta = {"producer": key, "run": cfg.name, "stage": 0}
    if cfg.model.is_embedded:
        from transformers import set_seed

        from cropi_core.models import bootstrap, build_char_tokenizer, build_tiny, save_model

        set_seed(cfg.model.tiny.seed)  # random, numpy and torch
        tok = build_char_tokenizer()
        model = build_tiny(cfg.model.tiny, tok)
        held = held_out_prompts(cfg)
        stats = {}
        if cfg.bootstrap.enabled and cfg.bootstrap.steps > 0:
            stats = bootstrap(model, tok, bootstrap_problems(cfg, held), cfg.bootstrap,
                              template=cfg.data.template, instruction=cfg.data.instruction,
                              progress=show_progress()) or {}
        save_model(model, tok, out)
        meta["bootstrap"] = {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}
    else:
        from cropi_core.config import resolve_alias
        from cropi_core.models.loading import local_folder

        name, gguf_file = resolve_alias(cfg.model.name_or_path, cfg.model.gguf_file)
        src = local_folder(name)
        if gguf_file:
            from cropi_core.models.gguf import convert_gguf

            src = convert_gguf(src, gguf_file, out)
        else:
            copy_model_folder(src, out)
        if cfg.model.tokenizer_path:
            replace_tokenizer(out, cfg.model.tokenizer_path)
    meta["compute"] = compute(ran_on(model) if cfg.model.is_embedded else None)  # a copy ran on no device
    # the config enters the checkpoint's own key (storage.registry): {"producer": key, **model} as ever
    return register_checkpoint(get_store(cfg), out, parents=[], config={"producer": key, **cfg.model.hashable()},
                               meta=meta, move=True)
