"""`cropi select`, `cropi score` and `cropi loop`: POPI scores and selections as files an outside trainer loads directly.

All input is validated before any flow starts (pool / validation files, rollout dumps matched to the pool,
tokenizers of the checkpoints): a bad input prints one line `error: <file>: row N: field ...` and exits 2 with
nothing written, neither in storage nor in the output folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cropi_core.errors import ConfigError, ModelError
from flows.cli import console
from flows.cli.common import user_errors
from flows.inputs import parse_sets, probe_storage


def _named(item: str, default: str | None = None) -> tuple[str, str]:
    """"name=path" -> (name, path); a bare path gets `default` or the file stem as its name."""
    if "=" in item and not Path(item).exists():
        name, path = item.split("=", 1)
        if not name or "/" in name:
            raise ConfigError(f"{item!r}: expected NAME=PATH with a NAME without '/'")
        return name, path
    p = Path(item.rstrip("/"))
    stem = p.name.split(".")[0] if p.suffix else p.name
    return default or stem, item


def build_job(*, checkpoint: str, gguf_file: str | None, behavior: str | None, behavior_gguf_file: str | None,
              pool: str, val: list[str], rollouts: str | None, rollouts_format: str, val_rollouts: list[str],
              verifier: str, out: Path, write_subset: bool, config: Path | None, sets: list[str] | None,
              storage: str | None, ratio: float | None, name: str | None):
    """(RunConfig, SelectJob) from the command line, with every input checked (CropiError otherwise)."""
    from cropi_core.config import load_config, resolve_alias
    from cropi_core.verify import VERIFIERS
    from flows.select import InputSet, RolloutsInput, SelectJob
    from tasks.artifacts import checkpoint_content, prompt_set
    from tasks.byot import check_rollouts_file, detect_rollouts_format

    if verifier not in VERIFIERS:
        raise ConfigError(f"--verifier: unknown verifier {verifier!r} (known: {', '.join(VERIFIERS)})")
    checkpoint, gguf_file = resolve_alias(checkpoint, gguf_file)  # a model by name, e.g. smollm2-135m-instruct
    if behavior is not None:
        behavior, behavior_gguf_file = resolve_alias(behavior, behavior_gguf_file)
    if not val:
        raise ConfigError("--val: at least one validation set is required")
    pool_name, pool_path = _named(pool, "pool")
    vals = [InputSet(name=n, path=p) for n, p in (_named(v) for v in val)]
    names = [pool_name] + [v.name for v in vals]
    if len(set(names)) != len(names):
        raise ConfigError(f"--pool/--val: set names must be unique (got {names}); name them NAME=PATH")
    # inputs first: schema errors name the file, row and field
    pool_set = prompt_set(pool_path, pool_name, verifier)
    val_sets = {v.name: prompt_set(v.path, v.name, verifier) for v in vals}

    overrides = parse_sets(sets, storage)
    overrides["name"] = name or "select"
    overrides["selection.method"] = "popi"
    if ratio is not None:
        overrides["selection.ratio"] = ratio
    if config is None:
        # verl / TRL chat prompts already carry their instruction: render them with the model's chat template
        overrides.setdefault("data.template", "chat_boxed" if pool_set.chat else "plain_boxed")
        overrides.setdefault("data.instruction", "")
    cfg = load_config(config, overrides)
    probe_storage(cfg.storage.root)

    checkpoint_content(checkpoint, gguf_file)
    if behavior is not None:
        checkpoint_content(behavior, behavior_gguf_file)
    tok = _tokenizer(behavior or checkpoint, behavior_gguf_file if behavior else gguf_file)
    if behavior is not None and tok is not None:
        other = _tokenizer(checkpoint, gguf_file)
        if other is not None and other.get_vocab() != tok.get_vocab():
            raise ModelError(f"--checkpoint {checkpoint}: its tokenizer differs from the behavior checkpoint "
                             f"{behavior}'s: the rollouts' token ids would not match")

    def roll(path: str | None, fmt: str, problems) -> RolloutsInput | None:
        if path is None:
            return None
        f = detect_rollouts_format(path) if fmt == "auto" else fmt
        if f not in ("verl", "plain"):
            raise ConfigError(f"--rollouts-format: unknown format {fmt!r} (known: auto, verl, plain)")
        check_rollouts_file(cfg, path, f, problems, tok)
        return RolloutsInput(path=path, format=f)

    pool_roll = roll(rollouts, rollouts_format, pool_set.problems)
    vroll = {}
    for item in val_rollouts or []:
        if "=" not in item:
            raise ConfigError(f"--val-rollouts {item!r}: expected NAME=PATH (NAME: a --val set name)")
        n, p = item.split("=", 1)
        if n not in val_sets:
            raise ConfigError(f"--val-rollouts {item!r}: no validation set named {n!r} (have {', '.join(val_sets)})")
        vroll[n] = roll(p, rollouts_format, val_sets[n].problems)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    job = SelectJob(checkpoint=checkpoint, gguf_file=gguf_file, behavior=behavior,
                    behavior_gguf_file=behavior_gguf_file, pool=InputSet(name=pool_name, path=pool_path), val=vals,
                    pool_rollouts=pool_roll, val_rollouts=vroll, verifier=verifier, out=str(out),
                    write_subset=write_subset)
    return cfg, job


def _tokenizer(path: str, gguf_file: str | None):
    """The tokenizer of an HF checkpoint folder (None for GGUF: checked after conversion, inside the flow)."""
    if gguf_file:
        return None
    from cropi_core.models.loading import load_tokenizer

    return load_tokenizer(path)


RENDERED = {"chat_boxed": "with the model's chat template", "plain_boxed": "as plain text (no chat template)",
            "raw": "as the bare question (no chat template)"}


def shortfall_line(summary: dict, cfg, config: Path | None, sets: list[str] | None) -> str | None:
    """When fewer prompts were selected than ratio × pool: one line with how many pool prompts were unscorable
    and why, how the prompts were rendered (and whether that was cropi select's default), and the option that
    changes it; None otherwise."""
    n, asked, why = len(summary["selected_ids"]), summary["asked"], summary.get("unscorable")
    if n >= asked or why is None:
        return None
    template = cfg.data.template
    if "data.template" in parse_sets(sets):
        origin = "given with --set"
    elif config is not None:
        origin = f"from {config}"
    else:
        origin = f"cropi select's default for a {'chat' if template == 'chat_boxed' else 'plain'}-prompt pool"
    total = why["all_right"] + why["all_wrong"] + why["all_equal"]
    other = f", {why['all_equal']} with one other reward shared by all" if why["all_equal"] else ""
    return (f"note: selected {n} of the {asked} prompts asked for (ratio {cfg.selection.ratio} × {summary['n_pool']} "
            f"pool prompts): {total} pool prompts are unscorable, all {why['k']} responses right ({why['all_right']}) "
            f"or all wrong ({why['all_wrong']}){other}; prompts were rendered {RENDERED.get(template, template)} "
            f"(data.template={template}, {origin}); to change it: --set data.template="
            f"{'plain_boxed' if template == 'chat_boxed' else 'chat_boxed'}")


def _run(write_subset: bool, verbose: bool = False, **kw) -> None:
    with user_errors():
        cfg, job = build_job(write_subset=write_subset, **kw)
        from flows.runtime import computed_seconds
        from flows.select import run_select
        from tasks.common import get_store, run_dir

        what = "select" if write_subset else "score"
        with console.session(run_dir(cfg) / console.LOG_NAME, f"cropi {what} → {job.out}",
                             verbose=verbose) as view:
            summary = run_select(cfg, job)
        compute = computed_seconds(get_store(cfg), summary["computed"])
    kinds = sorted({t for t, _ in summary["computed"]})
    say = lambda line: view.console.print(line, soft_wrap=True, markup=False)  # noqa: E731
    say(f"done in {summary['seconds']:.1f}s: {len(summary['computed'])} computed ({', '.join(kinds) or 'nothing'}), "
        f"{summary['counts']['reused']} reused")
    if write_subset:
        say(f"selected {len(summary['selected_ids'])} of {summary['n_pool']} pool prompts "
            f"(selection {summary['selection'][:12]})")
        note = shortfall_line(summary, cfg, kw.get("config"), kw.get("sets"))
        if note is not None:
            say(note)
    say(console.cost_line(summary["seconds"], compute))
    say(f"output: {summary['out']}")


_CKPT = typer.Option(..., "--checkpoint", help="model to score at: an HF folder, a folder with --gguf-file, or a "
                                                "model by name (smollm2-135m-instruct)")
_POOL = typer.Option(..., "--pool", help="[NAME=]PATH: verl parquet, JSONL, or a datasets.save_to_disk folder")
_VAL = typer.Option(..., "--val", help="[NAME=]PATH of a validation set (repeatable; one POPI list each)")


def _select_command(write_subset: bool, ratio_help: str):
    """`cropi select` (write_subset) and `cropi score` take the same options."""
    def command(
        checkpoint: str = _CKPT,
        pool: str = _POOL,
        val: list[str] = _VAL,
        out: Path = typer.Option(..., "--out", "-o", help="output folder (written atomically)"),
        ratio: Optional[float] = typer.Option(None, "--ratio", help=ratio_help),
        gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help="GGUF file inside the --checkpoint folder"),
        behavior: Optional[str] = typer.Option(None, "--behaviour", help="behavior model β of the offline rollouts (default: --checkpoint)"),
        behavior_gguf_file: Optional[str] = typer.Option(None, "--behaviour-gguf-file"),
        rollouts: Optional[str] = typer.Option(None, "--rollouts", help="import the pool's rollouts (verl rollout_data_dir dump or plain JSONL)"),
        rollouts_format: str = typer.Option("auto", "--rollouts-format", help="auto | verl | plain"),
        val_rollouts: Optional[list[str]] = typer.Option(None, "--val-rollouts", help="NAME=PATH: import a validation set's rollouts"),
        verifier: str = typer.Option("math", "--verifier", help="reward for cropi-generated rollouts: math | exact | last_number"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML RunConfig (rollout / influence / selection settings)"),
        set_: Optional[list[str]] = typer.Option(None, "--set", "-s", help="override a field: section.key=value (repeatable)"),
        storage: Optional[str] = typer.Option(None, "--storage", help="storage root URL (default $CROPI_STORAGE or ./.cropi)"),
        name: Optional[str] = typer.Option(None, "--name", help="run name recorded in artifact metadata (full log: "
                                           "runs/<name>/train.log under the storage root)"),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="print everything the libraries print instead "
                                     "of the progress view and train.log"),
    ) -> None:
        _run(write_subset, verbose=verbose, checkpoint=checkpoint, gguf_file=gguf_file, behavior=behavior,
             behavior_gguf_file=behavior_gguf_file, pool=pool, val=val, rollouts=rollouts,
             rollouts_format=rollouts_format, val_rollouts=val_rollouts or [], verifier=verifier, out=out,
             config=config, sets=set_, storage=storage, ratio=ratio, name=name)

    return command


SELECT_HELP = "Score a pool by POPI and write the top --ratio in the pool's own format, with scores and a manifest."
SCORE_HELP = "Like `select` but writes only the scores table (id, POPI per validation set, fused, rank) + manifest."
select = _select_command(True, "fraction of the pool to select (default selection.ratio)")
score = _select_command(False, "per-list top fraction kept by rank fusion")


def loop_cmd(
    checkpoint: str = _CKPT,
    pool: str = _POOL,
    val: list[str] = _VAL,
    train_cmd: str = typer.Option(..., "--train-cmd", help="trainer command template: {checkpoint} {subset} {out} {stage}"),
    stages: int = typer.Option(..., "--stages", help="curriculum stages (select + train each)"),
    work: Path = typer.Option(..., "--work", help="folder for each stage's selection and trained checkpoint"),
    train_retries: int = typer.Option(2, "--train-retries", help="retries of a failed training command"),
    ratio: Optional[float] = typer.Option(None, "--ratio"),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file"),
    rollouts: Optional[str] = typer.Option(None, "--rollouts"),
    rollouts_format: str = typer.Option("auto", "--rollouts-format"),
    val_rollouts: Optional[list[str]] = typer.Option(None, "--val-rollouts"),
    verifier: str = typer.Option("math", "--verifier"),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    set_: Optional[list[str]] = typer.Option(None, "--set", "-s"),
    storage: Optional[str] = typer.Option(None, "--storage"),
    name: Optional[str] = typer.Option(None, "--name"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print everything the libraries and the training "
                                 "command print instead of the progress view and train.log"),
) -> None:
    """CROPI with an outside trainer: per stage, `select` at the current checkpoint, then run --train-cmd on the
    subset (a Prefect task with retries) and register its output checkpoint; rollouts of the stage-0 model reused."""
    from flows.outside_trainer import render_command, run_outside_trainer

    with user_errors():
        if stages < 1:
            raise ConfigError(f"--stages: must be ≥ 1 (got {stages})")
        render_command(train_cmd, checkpoint="c", subset="s", out="o", stage="0")
        cfg, job = build_job(checkpoint=checkpoint, gguf_file=gguf_file, behavior=None, behavior_gguf_file=None,
                             pool=pool, val=val, rollouts=rollouts, rollouts_format=rollouts_format,
                             val_rollouts=val_rollouts or [], verifier=verifier, out=work / "stage-0" / "select",
                             write_subset=True, config=config, sets=set_, storage=storage, ratio=ratio, name=name)
        from tasks.common import run_dir

        with console.session(run_dir(cfg) / console.LOG_NAME, f"cropi loop → {work}", verbose=verbose,
                             stages=stages) as view:
            summary = run_outside_trainer(cfg, job, train_cmd, stages, str(work), retries=train_retries)
    say = lambda line: view.console.print(line, soft_wrap=True, markup=False)  # noqa: E731
    for s in summary["stages"]:
        say(f"stage {s['stage']}: selection {s['selection'][:12]} -> trained checkpoint {s['trained'][:12]} "
            f"({s['trained_dir']})")
    say(f"final checkpoint: {summary['final_checkpoint']}")
