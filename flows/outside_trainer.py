"""CROPI with an outside trainer: `cropi select` at θ_m → your trainer for E steps on the subset → θ_{m+1}.

The training step is an external command (verl, TRL, OpenRLHF, a shell script) run as a Prefect task with
retries (`tasks.external`); its output folder is registered as a `checkpoint` artifact whose parents are the
checkpoint it started from and the selection it trained on (so `cropi lineage` draws the whole curriculum), and
published as a Prefect link artifact. Every stage scores at the new checkpoint against the stage-0 behavior rollouts, which are
computed (or imported) once and reused, as in `cropi run`. A rerun (or a killed loop started again) resumes: a stage
whose (input checkpoint, selection, command) already has a registered trained checkpoint is not trained again.

The command is a template; `{checkpoint}`, `{subset}`, `{out}` and `{stage}` are replaced by the stage's input
checkpoint folder, the selected subset (in the pool's own format), the folder the trainer must write an HF
checkpoint to, and the stage number. It is split like a shell line but run without a shell.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from prefect import flow

from cropi_core.config import RunConfig
from cropi_core.data.formats import subset_name
from cropi_core.errors import ConfigError, CropiError
from flows.outputs import OutsideTrainerOutputs, Tally, TrainedStage
from flows.runtime import for_run
from flows.select import SelectJob, export, select_flow
from tasks.artifacts import checkpoint_path, prompt_set
from tasks.common import bind, log
from tasks.external import external_train, register_trained, trained_before


def render_command(template: str, **values: str) -> list[str]:
    """argv of the command template with {checkpoint}/{subset}/{out}/{stage} filled in each token."""
    try:
        argv = shlex.split(template)
    except ValueError as err:
        raise CropiError(f"--train-cmd: cannot split {template!r}: {err}") from None
    try:
        return [tok.format(**values) for tok in argv]
    except (KeyError, IndexError) as err:
        raise CropiError(f"--train-cmd: unknown placeholder {err} (known: {', '.join('{' + k + '}' for k in values)})") from None


@flow(name="cropi-outside-trainer", flow_run_name="outside-trainer-{config.name}")
def outside_trainer(config: RunConfig, job: SelectJob, train_command: str, stages: int, work: str,
                    retries: int = 2, timeout_s: float | None = None) -> OutsideTrainerOutputs:
    """`stages` × (select at θ_m → external training on the subset → θ_{m+1}); returns per-stage refs/paths."""
    cfg = config
    work_dir = Path(work).resolve()
    behavior = job.behavior or job.checkpoint
    behavior_gguf = job.behavior_gguf_file if job.behavior else job.gguf_file
    theta = job.checkpoint
    out: list[TrainedStage] = []
    counts = Tally()
    for m in range(stages):
        sel_dir = work_dir / f"stage-{m}" / "select"
        j = job.model_copy(update={"checkpoint": theta, "gguf_file": job.gguf_file if m == 0 else None,
                                   "behavior": behavior, "behavior_gguf_file": behavior_gguf, "stage": m,
                                   "out": str(sel_dir), "write_subset": True})
        refs = select_flow(config=cfg, job=j)
        counts = counts + refs.counts
        export(cfg, j, refs)
        ckpt_out = work_dir / f"stage-{m}" / "checkpoint"
        argv = render_command(train_command, checkpoint=str(checkpoint_path(cfg, refs.checkpoint)),
                              subset=str(sel_dir / subset_name_for(j)), out=str(ckpt_out), stage=str(m))
        new = trained_before(cfg, refs.checkpoint, refs.selection, train_command)
        if new is not None:  # resume: this stage was trained (and registered) by an earlier run of the loop
            log(f"stage {m}: reusing checkpoint {new.key[:12]} the trainer made for this selection before")
            counts = counts + Tally(task_runs=1, reused=1)
            folder = str(checkpoint_path(cfg, new))
        else:
            train = external_train.with_options(retries=retries, retry_delay_seconds=cfg.runner.retry_delay_s)
            try:
                ran = train(argv, str(ckpt_out), m, timeout_s)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
                raise CropiError(f"stage {m}: {err} (after {retries + 1} attempts)") from None
            folder = ran["folder"]
            new = bind(register_trained, cfg)(cfg, folder, refs.checkpoint, refs.selection, m, train_command,
                                              ran["seconds"])
            counts = counts + Tally(task_runs=1, computed=[("register-trained", new.key)])
        out.append(TrainedStage(stage=m, checkpoint=refs.checkpoint, selection=refs.selection, trained=new,
                                select_dir=str(sel_dir), trained_dir=folder))
        theta = folder
    return OutsideTrainerOutputs(stages=out, final_checkpoint=theta, counts=counts)


def subset_name_for(job: SelectJob) -> str:
    return subset_name(prompt_set(job.pool.path, job.pool.name, job.verifier))


def run_outside_trainer(cfg: RunConfig, job: SelectJob, train_command: str, stages: int, work: str,
                        retries: int = 2) -> dict[str, Any]:
    """Run the loop with the configured task runner; returns a JSON-able summary."""
    if stages < 1:
        raise ConfigError(f"--stages: must be ≥ 1 (got {stages})")
    t0 = time.perf_counter()
    res = for_run(outside_trainer, cfg)(
        config=cfg, job=job, train_command=train_command, stages=stages, work=work, retries=retries)
    return {"seconds": time.perf_counter() - t0, "computed": res.counts.computed, "final_checkpoint": res.final_checkpoint,
            "stages": [{"stage": s.stage, "selection": s.selection.key, "checkpoint": s.checkpoint.key,
                        "trained": s.trained.key, "select_dir": s.select_dir, "trained_dir": s.trained_dir}
                       for s in res.stages]}


__all__ = ["outside_trainer", "run_outside_trainer", "render_command"]
