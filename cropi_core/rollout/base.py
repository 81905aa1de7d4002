"""The rollout backend interface: sample K responses per problem from β, score them, attach log β."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from cropi_core.rollout.types import PromptRollouts

if TYPE_CHECKING:
    from cropi_core.data import Problem


class RolloutBackend(ABC):
    """Samples offline rollouts of a behavior policy β. Implementations: `hf` (transformers), `vllm` (GPU)."""

    name: str = "base"

    @abstractmethod
    def sample(
        self,
        problems: list["Problem"],
        k: int,
        *,
        temperature: float,
        top_p: float = 1.0,
        max_new_tokens: int,
        seed: int = 0,
        template: str = "chat_boxed",
        instruction: str = "",
        batch_size: int = 64,
        progress: bool = True,
    ) -> list[PromptRollouts]:
        """One PromptRollouts per problem (same order): K responses (EOS kept when generated), rewards from
        `cropi_core.verify.reward`, behavior_logprobs = log β per response token at the sampling temperature,
        recomputed by teacher forcing. Same arguments and seed ⇒ same outputs."""


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from `seed` and labels (e.g. the problem ids of a batch), stable across processes."""
    text = ":".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def truncate_at_eos(ids: list[int], eos_ids: set[int]) -> list[int]:
    """`ids` up to and including the first EOS token (everything after it is padding)."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[: i + 1]
    return ids
