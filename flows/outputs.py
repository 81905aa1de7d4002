"""What flows hand each other: typed records of `ArtifactRef`s and task counts, not dicts indexed by strings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage import ArtifactRef


@dataclass
class Tally:
    """What a flow's task runs did (`flows.runtime.Tracker.tally`), read from their final Prefect states: a run in
    state "Cached" found its artifact in storage (`tasks.common.reused`), any other completed run computed the
    artifact it returned — listed as (task name, key; `<grads key>:<chunk>` for a gradient chunk)."""

    task_runs: int = 0
    reused: int = 0
    failed: int = 0
    computed: list[tuple[str, str]] = field(default_factory=list)

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(self.task_runs + other.task_runs, self.reused + other.reused, self.failed + other.failed,
                     self.computed + other.computed)

    def counts(self) -> dict[str, int]:
        """The counts as summaries, the CLI and the scheduled run's table report them."""
        return {"task_runs": self.task_runs, "computed": len(self.computed), "reused": self.reused,
                "failed": self.failed}


@dataclass
class StageOutputs:
    """The artifacts of one curriculum stage m (`flows.stage.stage`)."""

    stage: int
    input_checkpoint: ArtifactRef  # θ_m
    selection: ArtifactRef
    checkpoint: ArtifactRef  # θ_{m+1}
    online: ArtifactRef  # θ_m's rollouts on the selected prompts
    health: ArtifactRef  # off-policy health of the selected prompts
    evals: dict[str, ArtifactRef]  # test set → evaluation of θ_{m+1}
    grads: dict[str, ArtifactRef] = field(default_factory=dict)  # "pool" and each val set (scored methods only)
    # what shaped the sketches or decided to (re)score: "calibration" (influence.allocation = energy), "candidates"
    # (influence.candidates), "drift" (selection.rescore = drift: the pool-health check before the stage)
    shaping: dict[str, ArtifactRef] = field(default_factory=dict)
    scores: ArtifactRef | None = None
    # split-half reliability of the stage's influence ranking (scored stages), and whether the stage kept the
    # previous selection because a re-score fell below selection.rescore_reliability
    reliability: float | None = None
    kept_unreliable: bool = False
    counts: Tally = field(default_factory=Tally)  # what the stage subflow's task runs did
    # eval.every_steps: step k inside the stage → test set → evaluation of the policy after step k
    step_evals: dict[int, dict[str, ArtifactRef]] = field(default_factory=dict)

    @property
    def scoring(self) -> list[ArtifactRef]:
        """What choosing the stage's prompts cost: the calibration and candidates, the sketches, the scores and the
        selection."""
        return [*self.shaping.values(), *self.grads.values(), *([self.scores] if self.scores is not None else []),
                self.selection]


@dataclass
class RunSummary:
    """Everything a curriculum run produced (`flows.curriculum.curriculum`)."""

    name: str
    base_checkpoint: ArtifactRef
    final_checkpoint: ArtifactRef
    pool: ArtifactRef
    pool_rollouts: ArtifactRef  # β's offline rollouts
    val_rollouts: dict[str, ArtifactRef]
    tests: dict[str, ArtifactRef]
    evals0: dict[str, ArtifactRef]  # test set → evaluation of θ_0
    stages: list[StageOutputs]
    refreshes: list[dict[str, Any]]  # behavior-refresh decisions (influence.refresh_ess)
    rescores: list[dict[str, Any]] = field(default_factory=list)  # drift-check decisions (selection.rescore drift)
    report: str = ""
    counts: Tally = field(default_factory=Tally)  # every task run of the curriculum and its stages
    flow_seconds: float = 0.0



@dataclass
class SelectOutputs:
    """The artifacts of one `cropi select` / `cropi score` (`flows.select.select_flow`)."""

    checkpoint: ArtifactRef  # θ, the model the pool is scored at
    behavior: ArtifactRef  # β, whose offline rollouts are reused (θ itself unless --behaviour names another model)
    pool: ArtifactRef
    val: dict[str, ArtifactRef]  # validation set name → dataset
    pool_rollouts: ArtifactRef  # β's rollouts on the pool (generated, or imported with --rollouts)
    val_rollouts: dict[str, ArtifactRef]  # "val/<name>" → β's rollouts on that validation set
    grads: dict[str, ArtifactRef]  # "pool" and each "val/<name>": sketches at θ
    scores: ArtifactRef
    selection: ArtifactRef
    counts: Tally = field(default_factory=Tally)  # what the flow's task runs did


@dataclass
class TrainedStage:
    """One stage of `flows.outside_trainer.outside_trainer`: select at θ_m, then the outside trainer → θ_{m+1}."""

    stage: int
    checkpoint: ArtifactRef  # θ_m, the checkpoint the stage scored at and trained from
    selection: ArtifactRef
    trained: ArtifactRef  # θ_{m+1}: the trainer's output, registered
    select_dir: str  # the stage's `cropi select` output folder (subset, scores, manifest.json)
    trained_dir: str  # the folder θ_{m+1} was read from


@dataclass
class OutsideTrainerOutputs:
    """Everything a loop with an outside trainer produced (`flows.outside_trainer.outside_trainer`)."""

    stages: list[TrainedStage]
    final_checkpoint: str  # folder of the last stage's trained checkpoint
    counts: Tally = field(default_factory=Tally)  # every stage's select flow and trainer registration
