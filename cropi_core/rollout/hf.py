"""`hf` rollout backend: batched transformers `generate` (left padding), K samples per prompt, seeded.

Sampling follows exactly the requested temperature / top-p: every other decoding knob that a checkpoint's
generation_config.json may set (top-k, repetition penalty, min length, ...) is pinned to its neutral value,
so β is the tempered (nucleus) distribution of the model and nothing else.

Seeding: each generate call runs under a private RNG state seeded from (seed, the batch's problem ids),
so the same problems, batch size and seed give the same tokens on the same device, and the global torch RNG
is not disturbed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from cropi_core.data import Problem, format_prompt
from cropi_core.rng import global_rng
from cropi_core.rollout.base import RolloutBackend, derive_seed, truncate_at_eos
from cropi_core.rollout.logprobs import teacher_force_pairs
from cropi_core.rollout.types import PromptRollouts
from cropi_core.verify import reward


@dataclass
class Generated:
    """Output of one batched generate call.

    prompt_ids: B LongTensor[P_b] (unpadded); responses: B lists of K LongTensor[T] (truncated after EOS);
    logits: if requested, B lists of K FloatTensor[T, V], the raw model logits that chose each token.
    """

    prompt_ids: list[torch.Tensor]
    responses: list[list[torch.Tensor]]
    logits: list[list[torch.Tensor]] | None = None


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends a response: the tokenizer's EOS and the model's generation_config EOS ids."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    if gen_eos is not None:
        ids.update([gen_eos] if isinstance(gen_eos, int) else gen_eos)
    return sorted(ids)


def generation_config(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, k: int, do_sample: bool, temperature: float,
    top_p: float, max_new_tokens: int, output_logits: bool = False,
) -> GenerationConfig:
    """Decoding settings with every knob not asked for pinned to neutral (see module docstring)."""
    sample = {"temperature": temperature, "top_p": top_p} if do_sample else {"temperature": 1.0, "top_p": 1.0}
    return GenerationConfig(
        do_sample=do_sample, num_return_sequences=k, max_new_tokens=max_new_tokens, min_length=0,
        top_k=0, typical_p=1.0, min_p=0.0, epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0,
        no_repeat_ngram_size=0, num_beams=1, length_penalty=1.0,
        eos_token_id=eos_token_ids(model, tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        output_logits=output_logits, return_dict_in_generate=True, use_cache=True, **sample,
    )


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    k: int,
    *,
    do_sample: bool,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int,
    seed: int = 0,
    output_logits: bool = False,
) -> Generated:
    """K responses for each prompt text in one left-padded `generate` call (greedy when not `do_sample`)."""
    device = next(model.parameters()).device
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    cfg = generation_config(model, tokenizer, k=k, do_sample=do_sample, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens, output_logits=output_logits)
    with global_rng(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
    new = out.sequences[:, ids.shape[1] :].cpu()
    eos = set(cfg.eos_token_id)
    prompt_ids = [ids[b][mask[b].bool()].cpu() for b in range(len(prompts))]
    responses: list[list[torch.Tensor]] = [[] for _ in prompts]
    logits: list[list[torch.Tensor]] | None = [[] for _ in prompts] if output_logits else None
    steps = torch.stack(out.logits, dim=1).float().cpu() if output_logits else None  # [B*K, T, V]
    for row in range(new.shape[0]):
        kept = truncate_at_eos(new[row].tolist(), eos)
        responses[row // k].append(torch.tensor(kept, dtype=torch.long))
        if logits is not None:
            logits[row // k].append(steps[row, : len(kept)])
    return Generated(prompt_ids, responses, logits)


class HFBackend(RolloutBackend):
    """Rollouts with transformers `generate` on the model's device; log β by teacher forcing the same model."""

    name = "hf"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, logprob_batch_size: int = 64,
                 logprob_micro_batch_tokens: int | None = None):
        """logprob_batch_size: pairs per teacher-forcing pass of log β; logprob_micro_batch_tokens: instead, most
        padded tokens per pass (rollout.logprob_micro_batch_tokens, a memory bound; see `teacher_force_pairs`)."""
        self.model, self.tokenizer = model, tokenizer
        self.logprob_batch_size = logprob_batch_size
        self.logprob_micro_batch_tokens = logprob_micro_batch_tokens
        self.last_stats: dict[str, float] = {}

    def sample(
        self,
        problems: list[Problem],
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
        if k < 1:
            raise ValueError(f"k must be ≥ 1 (got {k})")
        was_training = self.model.training
        self.model.eval()
        start, gen_s, tokens = time.perf_counter(), 0.0, 0
        results: list[PromptRollouts] = []
        bar = tqdm(total=len(problems), desc=f"rollouts k={k}", unit="prompt", disable=not progress, leave=False)
        try:
            for lo in range(0, len(problems), batch_size):
                batch = problems[lo : lo + batch_size]
                texts = [format_prompt(p, self.tokenizer, template=template, instruction=instruction) for p in batch]
                t0 = time.perf_counter()
                gen = generate(self.model, self.tokenizer, texts, k, do_sample=True, temperature=temperature, top_p=top_p,
                               max_new_tokens=max_new_tokens, seed=derive_seed(seed, *(p.id for p in batch)))
                gen_s += time.perf_counter() - t0
                pairs = [(pids, r) for pids, rs in zip(gen.prompt_ids, gen.responses) for r in rs]
                logps = teacher_force_pairs(self.model, pairs, temperature=temperature, batch_size=self.logprob_batch_size,
                                            max_tokens=self.logprob_micro_batch_tokens)
                for b, problem in enumerate(batch):
                    rs = gen.responses[b]
                    decoded = self.tokenizer.batch_decode(rs, skip_special_tokens=True)
                    rewards = torch.tensor([reward(problem, t) for t in decoded], dtype=torch.float32)
                    results.append(PromptRollouts(gen.prompt_ids[b], rs, logps[b * k : (b + 1) * k], rewards,
                                                  problem_id=problem.id, texts=decoded))
                    tokens += sum(r.numel() for r in rs)
                bar.update(len(batch))
        finally:
            bar.close()
            self.model.train(was_training)
        total = time.perf_counter() - start
        self.last_stats = {"prompts": len(problems), "responses": len(problems) * k, "response_tokens": tokens,
                           "generate_s": gen_s, "total_s": total, "tokens_per_s": tokens / max(total, 1e-9)}
        return results
