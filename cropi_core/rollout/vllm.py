"""`vllm` rollout backend (GPU): same interface as `hf`; vLLM is imported only when this backend is built.

vLLM samples; log β is then recomputed by teacher forcing the HF model (as the paper does, and so that it is
bit-for-bit the quantity the influence code compares against), unless no HF model is given, in which case
the sampled-token log-probs that vLLM returns are used (`logprobs_mode="processed_logprobs"`: after
temperature, like teacher forcing at the sampling temperature).

`rollouts_from_vllm` converts vLLM `RequestOutput`-shaped objects into PromptRollouts and needs no vLLM:
it reads only `.prompt_token_ids`, `.outputs[i].token_ids`, `.outputs[i].text` and `.outputs[i].logprobs`.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cropi_core.data import Problem, format_prompt
from cropi_core.errors import ModelError
from cropi_core.rollout.base import RolloutBackend, derive_seed, truncate_at_eos
from cropi_core.rollout.logprobs import teacher_force_pairs
from cropi_core.rollout.types import PromptRollouts
from cropi_core.verify import reward

LogprobFn = Callable[[list[tuple[torch.Tensor, torch.Tensor]]], list[torch.Tensor]]


def import_vllm() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError:
        raise ModelError("vllm not installed: pip install 'cropi[vllm]' on a GPU machine, or set rollout.backend: hf") from None


def _sampled_logprobs(token_ids: Sequence[int], logprobs: Any) -> torch.Tensor:
    """log-prob of each sampled token from vLLM's per-position {token_id: Logprob(logprob=...)} dicts."""
    if logprobs is None or len(logprobs) < len(token_ids):
        raise ModelError("vLLM output has no per-token logprobs; pass an HF model for teacher forcing")
    vals = []
    for t, entry in zip(token_ids, logprobs):
        lp = entry[t]
        vals.append(float(getattr(lp, "logprob", lp)))
    return torch.tensor(vals, dtype=torch.float32)


def rollouts_from_vllm(
    outputs: Sequence[Any],
    problems: Sequence[Problem],
    *,
    eos_ids: set[int],
    decode: Callable[[list[int]], str] | None = None,
    logprob_fn: LogprobFn | None = None,
) -> list[PromptRollouts]:
    """PromptRollouts from vLLM RequestOutputs (one per problem, same order).

    Responses are cut after the first EOS in `eos_ids` (EOS kept). Texts are vLLM's `.text` unless `decode`
    is given (needed when a response was cut). log β comes from `logprob_fn(pairs)` (teacher forcing over
    (prompt_ids, response_ids) pairs) or, without it, from each output's `.logprobs`.
    """
    if len(outputs) != len(problems):
        raise ValueError(f"{len(outputs)} vLLM outputs for {len(problems)} problems")
    prompts: list[torch.Tensor] = []
    responses: list[list[torch.Tensor]] = []
    texts: list[list[str]] = []
    vllm_lps: list[list[torch.Tensor]] = []
    for out in outputs:
        prompts.append(torch.tensor(list(out.prompt_token_ids), dtype=torch.long))
        rs, ts, lps = [], [], []
        for comp in out.outputs:
            full = list(comp.token_ids)
            kept = truncate_at_eos(full, eos_ids)
            rs.append(torch.tensor(kept, dtype=torch.long))
            ts.append(decode(kept) if decode is not None else comp.text)
            if logprob_fn is None:
                lps.append(_sampled_logprobs(kept, getattr(comp, "logprobs", None)))
        responses.append(rs)
        texts.append(ts)
        vllm_lps.append(lps)
    if logprob_fn is not None:
        flat = logprob_fn([(p, r) for p, rs in zip(prompts, responses) for r in rs])
        vllm_lps, pos = [], 0
        for rs in responses:
            vllm_lps.append(flat[pos : pos + len(rs)])
            pos += len(rs)
    result = []
    for problem, p_ids, rs, ts, lps in zip(problems, prompts, responses, texts, vllm_lps):
        rewards = torch.tensor([reward(problem, t) for t in ts], dtype=torch.float32)
        result.append(PromptRollouts(p_ids, rs, lps, rewards, problem_id=problem.id, texts=ts))
    return result


def _eos_ids(path: str, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Tokenizer EOS plus the checkpoint's generation_config.json eos_token_id(s)."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    gen_file = Path(path) / "generation_config.json"
    if gen_file.is_file():
        extra = json.loads(gen_file.read_text()).get("eos_token_id")
        ids.update([extra] if isinstance(extra, int) else (extra or []))
    return ids


class VLLMBackend(RolloutBackend):
    """Rollouts with vLLM. `model`: a local checkpoint folder (str) or an HF model saved at `name_or_path`;
    with an HF model, log β is recomputed by teacher forcing it (move it to the GPU yourself)."""

    name = "vllm"

    def __init__(self, model: PreTrainedModel | str, tokenizer: PreTrainedTokenizerBase, *, gpu_memory_utilization: float = 0.5,
                 dtype: str = "float32", logprob_batch_size: int = 64, logprob_micro_batch_tokens: int | None = None,
                 **llm_kwargs: Any):
        vllm = import_vllm()
        self.hf_model = None if isinstance(model, str) else model
        path = model if isinstance(model, str) else model.config.name_or_path
        if not path:
            raise ModelError("vllm backend needs a checkpoint folder (save the model first)")
        self.tokenizer = tokenizer
        self.logprob_batch_size = logprob_batch_size
        self.logprob_micro_batch_tokens = logprob_micro_batch_tokens  # padded tokens per teacher-forcing pass
        self.llm = vllm.LLM(model=str(path), tokenizer=str(path), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                            logprobs_mode="processed_logprobs", **llm_kwargs)
        self.eos_ids = _eos_ids(path, tokenizer)
        self.last_stats: dict[str, float] = {}

    def sample(self, problems: list[Problem], k: int, *, temperature: float, top_p: float = 1.0, max_new_tokens: int,
               seed: int = 0, template: str = "chat_boxed", instruction: str = "", batch_size: int = 64,
               progress: bool = True) -> list[PromptRollouts]:
        vllm = import_vllm()
        # one seed per request (problem id): outputs do not depend on batching or on the other prompts
        params = [vllm.SamplingParams(n=k, temperature=temperature, top_p=top_p, top_k=-1, max_tokens=max_new_tokens,
                                      seed=derive_seed(seed, "vllm", p.id) % (2**31),
                                      logprobs=None if self.hf_model is not None else 0, skip_special_tokens=True)
                  for p in problems]
        texts = [format_prompt(p, self.tokenizer, template=template, instruction=instruction) for p in problems]
        token_prompts = [{"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]
        start = time.perf_counter()
        outputs = self.llm.generate(token_prompts, params, use_tqdm=progress)
        eos = self.eos_ids
        fn = None
        if self.hf_model is not None:
            model = self.hf_model

            def fn(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
                return teacher_force_pairs(model, pairs, temperature=temperature, batch_size=self.logprob_batch_size,
                                           max_tokens=self.logprob_micro_batch_tokens)

        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        result = rollouts_from_vllm(outputs, problems, eos_ids=eos, decode=decode, logprob_fn=fn)
        tokens = sum(r.numel() for pr in result for r in pr.response_ids)
        total = time.perf_counter() - start
        self.last_stats = {"prompts": len(problems), "responses": len(problems) * k, "response_tokens": tokens,
                           "total_s": total, "tokens_per_s": tokens / max(total, 1e-9)}
        return result
