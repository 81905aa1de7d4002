"""Bring-your-own-trainer tasks: import a trainer's checkpoint, dataset files and rollout dumps as artifacts.

Each is content-keyed like every other artifact: a checkpoint by the hash of its weight/config/tokenizer files
(or of the GGUF file), a dataset by its normalised records, imported rollouts by the behavior checkpoint, the
dataset and the hash of the rollout files. What comes after (gradient sketches, POPI scores, selection) is the
unchanged `tasks.grads` / `tasks.selection` machinery `cropi run` uses, so the two share every artifact they
have in common.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from cropi_core.config import RunConfig
from cropi_core.errors import ModelError
from storage import ArtifactRef
from tasks.artifacts import (FILE, checkpoint_content, checkpoint_path, count_by, find_produced, load_checkpoint,
                             load_problems, prompt_set, rollouts_meta, write_rollouts)
from tasks.common import GPU_TAG, NO_RETRY_TAG, get_store, storage_hit, work_dir
from tasks.recipes import RECIPES, behavior_temperature, produce, produce_checkpoint

CKPT, DATASET, ROLLOUTS = RECIPES["import_checkpoint"], RECIPES["import_dataset"], RECIPES["import_rollouts"]
import_key, import_dataset_key, imported_rollouts_key = CKPT.key, DATASET.key, ROLLOUTS.key


# ---------------------------------------------------------------- checkpoints
@task(name="import-checkpoint", task_run_name="import-checkpoint-{label}", cache_policy=NO_CACHE)
def import_checkpoint(cfg: RunConfig, path: str, gguf_file: str | None = None, label: str = "checkpoint") -> ArtifactRef:
    """Register an outside trainer's checkpoint (HF folder, or folder + GGUF file converted to safetensors);
    a folder whose content is already a checkpoint artifact is that artifact."""
    if not gguf_file:
        # the same weights already registered (e.g. `cropi run`'s base or stage checkpoint): reuse that artifact,
        # so rollouts and sketches keyed on it are shared with the run
        store = get_store(cfg)
        same = store.find("checkpoint", meta={"content_hash": checkpoint_content(path)})
        if same and find_produced(store, "checkpoint", import_key(cfg, path=path)) is None:
            return storage_hit("import-checkpoint", store.ref(same[0].key))

    def build(key: str, compute) -> ArtifactRef:
        from storage.registry import register_checkpoint

        out = work_dir(cfg, "import", key[:16])
        shutil.rmtree(out, ignore_errors=True)
        if gguf_file:
            from cropi_core.models.gguf import convert_gguf

            convert_gguf(path, gguf_file, out)
        else:
            shutil.copytree(path, out, dirs_exist_ok=True)
        meta = {"producer": key, "source": str(Path(path).resolve()), "gguf_file": gguf_file, "run": cfg.name,
                "imported": True, "compute": compute()}
        return register_checkpoint(get_store(cfg), out, parents=[], config={"producer": key}, meta=meta, move=True)

    return produce_checkpoint(CKPT, "import-checkpoint", cfg, {"path": path, "gguf_file": gguf_file}, build,
                              lock="import", fault="import-checkpoint")


def check_same_tokenizer(cfg: RunConfig, ckpt: ArtifactRef, behavior: ArtifactRef) -> None:
    """ModelError unless the two checkpoints tokenize identically (the stored token ids would not match)."""
    if ckpt.key == behavior.key:
        return
    from cropi_core.models.loading import load_tokenizer

    a, b = load_tokenizer(checkpoint_path(cfg, ckpt)), load_tokenizer(checkpoint_path(cfg, behavior))
    if a.get_vocab() != b.get_vocab():
        raise ModelError(f"checkpoint {ckpt.key[:12]}: its tokenizer differs from the behavior checkpoint "
                         f"{behavior.key[:12]}'s ({len(a.get_vocab())} vs {len(b.get_vocab())} tokens): the rollouts' "
                         f"token ids would not match")


# ---------------------------------------------------------------- datasets
@task(name="dataset", task_run_name="dataset-{name}", tags=[NO_RETRY_TAG], cache_policy=NO_CACHE)
def import_dataset(cfg: RunConfig, path: str, name: str, verifier: str, role: str = "pool") -> ArtifactRef:
    """A trainer's pool / validation file as a `dataset` artifact (the same normalised JSONL `cropi run` writes)."""
    def payload(w) -> dict:
        from cropi_core.data import problems_to_jsonl

        ps = prompt_set(path, name, verifier)
        w.put_bytes(FILE, problems_to_jsonl(ps.problems))
        return {"role": role, "name": name, "n": len(ps.problems), "domains": count_by(p.domain for p in ps.problems),
                "source": str(Path(path).resolve()), "container": ps.container}

    return produce(DATASET, "dataset", cfg, {"path": path, "name": name, "verifier": verifier, "role": role}, payload)


# ---------------------------------------------------------------- imported rollouts
def render_for(tok, cfg: RunConfig):
    """Problem -> the prompt text the behavior policy was conditioned on (the run's template)."""
    from cropi_core.data import format_prompt

    return lambda p: format_prompt(p, tok, template=cfg.data.template, instruction=cfg.data.instruction)


def check_rollouts_file(cfg: RunConfig, path: str, fmt: str, problems: list, tokenizer=None) -> None:
    """Validate an imported rollouts file against the pool before anything is computed (DataError otherwise).

    Without a tokenizer (a GGUF behavior checkpoint) verl dumps are matched inside the task instead.
    """
    from cropi_core.rollout.imported import read_responses, render_key, tokenize_responses

    if fmt == "verl" and tokenizer is None:
        return
    render = None
    if tokenizer is not None:
        r = render_for(tokenizer, cfg)
        render = lambda p: render_key(tokenizer, r(p))  # noqa: E731
    responses = read_responses(path, fmt, problems, render)
    if tokenizer is not None:
        tokenize_responses(tokenizer, responses, tokenizer.eos_token_id)


@task(name="rollouts", task_run_name="import-rollouts-{label}", tags=[GPU_TAG], cache_policy=NO_CACHE)
def import_rollouts(cfg: RunConfig, ckpt: ArtifactRef, data: ArtifactRef, path: str, fmt: str,
                    label: str = "pool") -> ArtifactRef:
    """Offline rollouts of β read from a trainer's dump; log β recomputed by teacher forcing `ckpt` (= β)."""
    def payload(w) -> dict:
        from cropi_core.rollout.imported import build_rollouts, read_responses, render_key

        problems = load_problems(cfg, data)
        model, tok = load_checkpoint(cfg, ckpt)
        render = render_for(tok, cfg)
        responses = read_responses(path, fmt, problems, lambda p: render_key(tok, render(p)))
        recs = build_rollouts(model, tok, problems, responses, [render(p) for p in problems],
                              temperature=behavior_temperature(cfg), batch_size=cfg.rollout.batch_size,
                              max_tokens=cfg.rollout.logprob_micro_batch_tokens)
        write_rollouts(w, recs)
        return rollouts_meta(recs, k=max(x.k for x in recs), label=label, imported=fmt,
                             source=str(Path(path).resolve()), run=cfg.name)

    return produce(ROLLOUTS, "rollouts", cfg, {"ckpt": ckpt, "data": data, "path": path, "fmt": fmt}, payload)


def detect_rollouts_format(path: str) -> str:
    """"verl" when the first line has verl's dump fields (`input`, `output`, `score`), else "plain"."""
    import json

    from cropi_core.rollout.imported import rollout_files

    for f in rollout_files(path):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        return "plain"  # read_responses reports the line
                    return "verl" if isinstance(row, dict) and {"input", "output", "score"} <= set(row) else "plain"
    return "plain"
