"""Rollout backends: sample K responses per prompt from β, score them, recompute log β by teacher forcing."""

from cropi_core.rollout.types import PromptRollouts

__all__ = ["PromptRollouts"]
