"""Prompt templates: how a `Problem`'s question becomes the text a model is conditioned on."""

from __future__ import annotations

from typing import Any

from cropi_core.data.problem import Problem
from cropi_core.errors import ModelError

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TEMPLATES = ("chat_boxed", "plain_boxed", "raw")


def format_prompt(problem: Problem | str, tokenizer: Any = None, template: str = "chat_boxed",
                  instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The model input text for `problem` (a Problem or its question text).

    chat_boxed:  tokenizer's chat template on one user turn "<question> <instruction>", generation prompt added
    plain_boxed: "<question> <instruction>\\n"   (no tokenizer needed)
    raw:         "<question>"
    """
    q = problem.prompt if isinstance(problem, Problem) else problem
    user = f"{q} {instruction}".strip() if instruction else q
    if template == "raw":
        return q
    if template == "plain_boxed":
        return user + "\n"
    if template != "chat_boxed":
        raise ValueError(f"unknown prompt template {template!r} (known: {', '.join(TEMPLATES)})")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        raise ModelError(f"tokenizer {name!r} has no chat template; use data.template: plain_boxed")
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
