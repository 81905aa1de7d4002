"""What flows hand each other: typed records of `ArtifactRef`s and task counts, not dicts indexed by strings."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from storage import ArtifactRef


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
    counts: dict[str, int] = field(default_factory=dict)  # task runs / cached / failed in the stage subflow

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
    refreshes: list[dict[str, Any]]  # behaviour-refresh decisions (influence.refresh_ess)
    rescores: list[dict[str, Any]] = field(default_factory=list)  # drift-check decisions (selection.rescore drift)
    report: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    flow_seconds: float = 0.0


def artifact_view(x: Any, skip: tuple[str, ...] = ()) -> Any:
    """Plain JSON of a record: refs as their keys, records as dicts without the fields in `skip`."""
    if isinstance(x, ArtifactRef):
        return x.key
    if isinstance(x, (StageOutputs, RunSummary)):
        return {f.name: artifact_view(getattr(x, f.name), skip) for f in fields(x) if f.name not in skip}
    if isinstance(x, dict):
        return {str(k): artifact_view(v, skip) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [artifact_view(v, skip) for v in x]
    return x if isinstance(x, (str, int, float, bool)) or x is None else str(x)
