"""Bring-your-own-trainer tasks: import a trainer's checkpoint, dataset files and rollout dumps as artifacts.

Each is content-keyed like every other artifact: a checkpoint by the hash of its weight/config/tokenizer files
(or of the GGUF file), a dataset by its normalised records, imported rollouts by the behaviour checkpoint, the
dataset and the hash of the rollout files. What comes after (gradient sketches, POPI scores, selection) is the
unchanged `tasks.grads` / `tasks.selection` machinery `cropi run` uses, so the two share every artifact they
have in common.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
from prefect import task

from cropi_core.config import RunConfig
from cropi_core.data.formats import PromptSet, read_prompt_set
from cropi_core.errors import ModelError
from storage import ArtifactRef, artifact_key, checkpoint_hash, dataset_hash
from tasks.common import Timer, computed, get_store, key_policy, maybe_fault, storage_hit, work_dir
from tasks.dataset import FILE


# ---------------------------------------------------------------- checkpoints
def _stat_sig(folder: Path) -> tuple:
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


@functools.lru_cache(maxsize=32)
def _content(folder: str, gguf_file: str | None, _sig: tuple) -> str:
    from storage.keys import sha256_file

    if gguf_file:
        return "gguf:" + sha256_file(Path(folder) / gguf_file)
    return checkpoint_hash(folder)


def checkpoint_content(path: str, gguf_file: str | None = None) -> str:
    """Content hash of a model folder (or of `folder/gguf_file`), memoised on the files' sizes and mtimes."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"{path}: checkpoint folder not found")
    if gguf_file and not (folder / gguf_file).is_file():
        raise ModelError(f"{path}: GGUF file {gguf_file!r} not found in the folder")
    try:
        return _content(str(folder.resolve()), gguf_file, _stat_sig(folder))
    except Exception as err:  # noqa: BLE001 - StorageError: no weights
        raise ModelError(f"{path}: {err}") from None


def import_key(cfg: RunConfig, path: str, gguf_file: str | None = None, **_: object) -> str:
    """Producer key of an imported checkpoint: its content, not its path (a retrained folder is a new key)."""
    return artifact_key("import_checkpoint", parents=[], config={"content": checkpoint_content(path, gguf_file)})


@task(name="import-checkpoint", task_run_name="import-checkpoint-{label}", cache_policy=key_policy(import_key))
def import_checkpoint(cfg: RunConfig, path: str, gguf_file: str | None = None, label: str = "checkpoint") -> ArtifactRef:
    """Register an outside trainer's checkpoint (HF folder, or folder + GGUF file converted to safetensors);
    a folder whose content is already a checkpoint artifact is that artifact."""
    from storage.registry import register_checkpoint
    from tasks.bootstrap import find_produced

    store = get_store(cfg)
    key = import_key(cfg, path, gguf_file)
    found = find_produced(store, "checkpoint", key)
    if found is None and not gguf_file:
        # the same weights already registered (e.g. `cropi run`'s base or stage checkpoint): reuse that artifact,
        # so rollouts and sketches keyed on it are shared with the run
        same = store.find("checkpoint", meta={"content_hash": checkpoint_content(path)})
        found = store.ref(same[0].key) if same else None
    if found is not None:
        return storage_hit("import-checkpoint", found)
    maybe_fault("import-checkpoint")
    out = work_dir(cfg, "import", key[:16])
    shutil.rmtree(out, ignore_errors=True)
    with Timer() as t:
        if gguf_file:
            from cropi_core.models.gguf import convert_gguf

            convert_gguf(path, gguf_file, out)
        else:
            shutil.copytree(path, out, dirs_exist_ok=True)
        meta = {"producer": key, "source": str(Path(path).resolve()), "gguf_file": gguf_file, "run": cfg.name,
                "imported": True}
        ref = register_checkpoint(store, out, parents=[], config={"producer": key}, meta=meta, move=True)
    return computed("import-checkpoint", ref, [], store, t.seconds, {"source": meta["source"]})


def check_same_tokenizer(cfg: RunConfig, ckpt: ArtifactRef, behaviour: ArtifactRef) -> None:
    """ModelError unless the two checkpoints tokenize identically (the stored token ids would not match)."""
    if ckpt.key == behaviour.key:
        return
    from cropi_core.models.loading import load_tokenizer
    from tasks.bootstrap import checkpoint_path

    a, b = load_tokenizer(checkpoint_path(cfg, ckpt)), load_tokenizer(checkpoint_path(cfg, behaviour))
    if a.get_vocab() != b.get_vocab():
        raise ModelError(f"checkpoint {ckpt.key[:12]}: its tokenizer differs from the behaviour checkpoint "
                         f"{behaviour.key[:12]}'s ({len(a.get_vocab())} vs {len(b.get_vocab())} tokens): the rollouts' "
                         f"token ids would not match")


# ---------------------------------------------------------------- datasets
def _file_sig(path: str) -> tuple:
    p = Path(path)
    if p.is_dir():
        return tuple(sorted((q.name, q.stat().st_size, q.stat().st_mtime_ns) for q in p.rglob("*") if q.is_file()))
    return (p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else ()


@functools.lru_cache(maxsize=16)
def _read(path: str, name: str, verifier: str, _sig: tuple) -> PromptSet:
    return read_prompt_set(path, name, verifier)


def prompt_set(path: str, name: str, verifier: str) -> PromptSet:
    """`read_prompt_set`, memoised per process on the file's size and mtime."""
    return _read(str(path), name, verifier, _file_sig(str(path)))


def import_dataset_key(cfg: RunConfig, path: str, name: str, verifier: str, **_: object) -> str:
    return dataset_hash([p.to_record() for p in prompt_set(path, name, verifier).problems])


@task(name="dataset", task_run_name="dataset-{name}", cache_policy=key_policy(import_dataset_key))
def import_dataset(cfg: RunConfig, path: str, name: str, verifier: str, role: str = "pool") -> ArtifactRef:
    """A trainer's pool / validation file as a `dataset` artifact (the same normalised JSONL `cropi run` writes)."""
    store = get_store(cfg)
    key = import_dataset_key(cfg, path, name, verifier)
    if store.exists(key):
        return storage_hit("dataset", store.ref(key))
    ps = prompt_set(path, name, verifier)
    from cropi_core.data import problems_to_jsonl

    domains: dict[str, int] = {}
    for p in ps.problems:
        domains[p.domain] = domains.get(p.domain, 0) + 1
    meta = {"role": role, "name": name, "n": len(ps.problems), "domains": domains, "source": str(Path(path).resolve()),
            "container": ps.container}
    with Timer() as t:
        with store.writer("dataset", key, parents=[], config={"role": role, "name": name}, meta=meta) as w:
            w.put_bytes(FILE, problems_to_jsonl(ps.problems))
    return computed("dataset", store.ref(key), [], store, t.seconds, meta)


# ---------------------------------------------------------------- imported rollouts
def imported_rollouts_key(cfg: RunConfig, ckpt: ArtifactRef, data: ArtifactRef, path: str, fmt: str, **_: object) -> str:
    from cropi_core.rollout.imported import content_hash

    conf = {"import": {"format": fmt, "content": content_hash(path), "eos": True},
            "temperature": float(cfg.rollout.temperature), "template": cfg.data.template,
            "instruction": cfg.data.instruction}
    return artifact_key("rollouts", parents=[ckpt.key, data.key], config=conf)


def render_for(tok, cfg: RunConfig):
    """Problem -> the prompt text the behaviour policy was conditioned on (the run's template)."""
    from cropi_core.data import format_prompt

    return lambda p: format_prompt(p, tok, template=cfg.data.template, instruction=cfg.data.instruction)


def check_rollouts_file(cfg: RunConfig, path: str, fmt: str, problems: list, tokenizer=None) -> None:
    """Validate an imported rollouts file against the pool before anything is computed (DataError otherwise).

    Without a tokenizer (a GGUF behaviour checkpoint) verl dumps are matched inside the task instead.
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


@task(name="rollouts", task_run_name="import-rollouts-{label}", cache_policy=key_policy(imported_rollouts_key))
def import_rollouts(cfg: RunConfig, ckpt: ArtifactRef, data: ArtifactRef, path: str, fmt: str,
                    label: str = "pool") -> ArtifactRef:
    """Offline rollouts of β read from a trainer's dump; log β recomputed by teacher forcing `ckpt` (= β)."""
    from cropi_core.rollout.imported import build_rollouts, read_responses, render_key
    from tasks.bootstrap import load_checkpoint
    from tasks.dataset import load_problems
    from tasks.rollouts import write_rollouts

    store = get_store(cfg)
    key = imported_rollouts_key(cfg, ckpt, data, path, fmt)
    if store.exists(key):
        return storage_hit("rollouts", store.ref(key))
    problems = load_problems(cfg, data)
    model, tok = load_checkpoint(cfg, ckpt)
    render = render_for(tok, cfg)
    with Timer() as t:
        responses = read_responses(path, fmt, problems, lambda p: render_key(tok, render(p)))
        recs = build_rollouts(model, tok, problems, responses, [render(p) for p in problems],
                              temperature=float(cfg.rollout.temperature), batch_size=cfg.rollout.batch_size)
        rates = [x.pass_rate for x in recs]
        meta = {"n": len(recs), "k": max(x.k for x in recs), "label": label, "imported": fmt,
                "source": str(Path(path).resolve()), "mean_pass_rate": float(np.mean(rates)),
                "scorable": int(sum(x.scorable for x in recs)), "run": cfg.name}
        conf = {"import": {"format": fmt, "eos": True}, "temperature": float(cfg.rollout.temperature)}
        with store.writer("rollouts", key, parents=[ckpt.key, data.key], config=conf, meta=meta) as w:
            write_rollouts(store, w, recs)
    return computed("rollouts", store.ref(key), [ckpt, data], store, t.seconds, meta)


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


__all__ = ["import_checkpoint", "import_dataset", "import_rollouts", "prompt_set", "check_rollouts_file",
           "check_same_tokenizer", "checkpoint_content", "detect_rollouts_format"]
