"""The one record every stage of CROPI passes around: a prompt with its K offline responses."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PromptRollouts:
    """A prompt and K responses sampled from the behavior policy β.

    prompt_ids:        LongTensor[P]      prompt token ids (chat template applied, no padding)
    response_ids:      list of K LongTensor[T_k]  response token ids (EOS included if generated)
    behavior_logprobs: list of K FloatTensor[T_k] log β(a_t | s_t), recomputed by teacher forcing β
    rewards:           FloatTensor[K]     verifier rewards in {0, 1}
    problem_id:        id of the `Problem` the prompt came from (None in synthetic unit tests)
    texts:             decoded responses, for inspection only
    """

    prompt_ids: torch.Tensor
    response_ids: list[torch.Tensor]
    behavior_logprobs: list[torch.Tensor]
    rewards: torch.Tensor
    problem_id: str | None = None
    texts: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        k = len(self.response_ids)
        if len(self.behavior_logprobs) != k or self.rewards.shape != (k,):
            raise ValueError(
                f"PromptRollouts {self.problem_id}: {k} responses, {len(self.behavior_logprobs)} log-prob rows, "
                f"rewards shape {tuple(self.rewards.shape)}"
            )
        for i, (r, lp) in enumerate(zip(self.response_ids, self.behavior_logprobs)):
            if r.shape != lp.shape:
                raise ValueError(f"PromptRollouts {self.problem_id}: response {i} has {r.numel()} tokens but {lp.numel()} log-probs")

    @property
    def k(self) -> int:
        return len(self.response_ids)

    @property
    def pass_rate(self) -> float:
        return float(self.rewards.float().mean())

    @property
    def scorable(self) -> bool:
        """False when K < 2 or all K rewards are equal: A ≡ 0, so the policy gradient is exactly zero (the rows
        sketch_prompts sketches; every other row of a sketch is NaN)."""
        return self.k >= 2 and bool((self.rewards != self.rewards[0]).any())

    @property
    def num_tokens(self) -> int:
        """Tokens the model sees when teacher-forcing all K responses (prompt repeated per response)."""
        return sum(self.prompt_ids.numel() + r.numel() for r in self.response_ids)
