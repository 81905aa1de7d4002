"""Rollout backends: sample K responses per prompt from β, score them, recompute log β by teacher forcing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cropi_core.rollout.base import RolloutBackend
from cropi_core.rollout.logprobs import teacher_force_logprobs, teacher_force_pairs
from cropi_core.rollout.types import PromptRollouts

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BACKENDS = ("hf", "vllm")


def get_backend(name: str, model: "PreTrainedModel | str", tokenizer: "PreTrainedTokenizerBase", **kwargs: Any) -> RolloutBackend:
    """The backend called `name`: "hf" (transformers generate) or "vllm": with `url=` a vLLM server over HTTP
    (cropi_core/rollout/vllm_http.py), else vLLM in this process (imported only when asked for)."""
    if name == "hf":
        from cropi_core.rollout.hf import HFBackend

        return HFBackend(model, tokenizer, **kwargs)
    if name == "vllm" and kwargs.get("url"):
        from cropi_core.rollout.vllm_http import VLLMServerBackend

        return VLLMServerBackend(model, tokenizer, **kwargs)
    if name == "vllm":
        kwargs.pop("url", None)
        from cropi_core.rollout.vllm import VLLMBackend

        return VLLMBackend(model, tokenizer, **kwargs)
    from cropi_core.errors import ConfigError

    raise ConfigError(f"rollout.backend: unknown backend {name!r} (known: {', '.join(BACKENDS)})")


__all__ = ["BACKENDS", "PromptRollouts", "RolloutBackend", "get_backend", "teacher_force_logprobs", "teacher_force_pairs"]
