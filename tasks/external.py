"""An outside trainer's stage as Prefect tasks: run its command, register what it wrote as a checkpoint artifact.

`flows.outside_trainer` calls them once per stage: `external_train` (the command, with retries) and
`register_trained` (its output folder as a `checkpoint` whose parents are the checkpoint it started from and the
selection it trained on), or finds with `trained_before` that an earlier run already did both.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from cropi_core.config import RunConfig
from storage import ArtifactRef
from tasks.common import NO_RETRY_TAG, compute_record, computed, get_store, log


@task(name="external-train", task_run_name="external-train-s{stage}", cache_policy=NO_CACHE)
def external_train(argv: list[str], out: str, stage: int, timeout_s: float | None = None) -> dict:
    """Run the trainer; succeed only if it exits 0 and leaves an HF checkpoint (config.json + weights) in `out`.
    Returns {"folder", "seconds"}: the seconds go into the registered checkpoint's compute record."""
    log(f"stage {stage}: running {shlex.join(argv)}")
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"training command exited {proc.returncode}: {tail[:300]}")
    folder = Path(out)
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise RuntimeError(f"training command left no HF checkpoint (config.json + *.safetensors) in {folder}")
    seconds = time.perf_counter() - t0
    log(f"stage {stage}: trainer finished in {seconds:.1f}s")
    return {"folder": str(folder), "seconds": seconds}


@task(name="register-trained", task_run_name="register-trained-s{stage}", tags=[NO_RETRY_TAG],
      cache_policy=NO_CACHE)
def register_trained(cfg: RunConfig, folder: str, parent: ArtifactRef, selection: ArtifactRef, stage: int,
                     command: str, train_seconds: float | None = None) -> ArtifactRef:
    """The trainer's output as a checkpoint artifact (parents: its input checkpoint and the selection); its compute
    record holds the seconds the trainer's command ran (`external_train`, on this machine; unknown → 0 and
    `partial`)."""
    from storage.registry import register_checkpoint

    store = get_store(cfg)
    meta = {"run": cfg.name, "stage": stage + 1, "external_command": command, "source": str(Path(folder).resolve()),
            "compute": compute_record(train_seconds or 0.0, "external-train",
                                      **({"partial": True} if train_seconds is None else {}))}
    ref = register_checkpoint(store, folder, parents=[parent.key, selection.key], config={"external": command}, meta=meta)
    computed("register-trained", ref, [parent, selection], store, store.manifest(ref.key).meta)
    try:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(link=ref.uri, link_text=f"checkpoint {ref.key[:12]} (stage {stage + 1})",
                             key=f"{cfg.name.lower().replace('_', '-')}-checkpoint-s{stage + 1}"[:64],
                             description=f"Output of `{command}` on selection {selection.key[:12]}")
    except Exception as err:  # noqa: BLE001 - a UI artifact must never fail the stage
        log(f"link artifact not created: {err}")
    return ref


def trained_before(cfg: RunConfig, parent: ArtifactRef, selection: ArtifactRef, command: str) -> ArtifactRef | None:
    """The checkpoint an earlier run of the loop registered for (parent checkpoint, selection, command), if any:
    a rerun (or a killed loop) resumes instead of training the stage again."""
    store = get_store(cfg)
    found = [m for m in store.find("checkpoint", parent=selection.key, meta={"external_command": command})
             if parent.key in m.parents]
    return store.ref(found[0].key) if found else None


__all__ = ["external_train", "register_trained", "trained_before"]
