"""Supervised warm-up ("bootstrap") of the embedded tiny model into a usable starting policy β.

The untrained model emits noise and never writes `\\boxed{}`, so RL would see only zero rewards. A short
supervised phase on synthetic problems teaches the answer format and part of the fact tables: the target of a
prompt is `\\boxed{<gold>}` (or, for a seeded share of the multi-step problems, their worked solution
ending in it, see `target_text`) followed by EOS, and the loss is the mean cross-entropy over response tokens
only (prompt and padding positions are masked). The default (1000 steps × 64, lr 3e-3, ≈2.5 min on 2 CPU
cores) stops while every domain is partially solved (greedy pass@1 ≈ 0.2–0.5 per domain, about half the pool
prompts with 0 < sampled pass rate < 1), which is what CROPI needs; tests/test_bootstrap_floor.py holds it.
"""

from __future__ import annotations

import hashlib
import math
import time

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cropi_core.config import BootstrapConfig
from cropi_core.data import Problem, format_prompt, worked_response
from cropi_core.errors import DataError


def target_text(p: Problem, worked_fraction: float, seed: int, unboxed_fraction: float = 0.0,
                unboxed_domains: list[str] | tuple[str, ...] | None = None) -> str:
    """The supervised response of `p`. Multi-step domains (those with a worked solution): the worked solution for
    a seeded `worked_fraction` of the problems. Domains with the unboxed habit (`unboxed_domains`; None = the
    multi-step domains): the unboxed `Answer: gold` (wrong format, reward 0) for the next `unboxed_fraction` of
    the problems (the first `unboxed_fraction` in a one-fact domain). Everything else: the direct
    `\\boxed{gold}`. The choice is a pure function of (problem id, seed): a problem keeps its format for the whole
    warm-up, and listing a one-fact domain does not change which multi-step problems are worked.

    A problem of the other convention (verifier `answer_line`, `SyntheticConfig.conflict_domains`) is the mirror
    image: `Answer: gold` is its right form, and the boxed answer its wrong-format habit for a seeded
    `unboxed_fraction` of the problems, so its pass rate is intermediate and RL can strengthen the convention."""
    worked = worked_response(p)
    u = int.from_bytes(hashlib.sha256(f"{seed}:{p.id}".encode()).digest()[:8], "big") / 2**64  # uniform [0, 1)
    if p.verifier == "answer_line":
        return f"\\boxed{{{p.gold}}}" if u < unboxed_fraction else f"Answer: {p.gold}"
    habit = worked is not None if unboxed_domains is None else p.domain in unboxed_domains
    if worked is not None and u < worked_fraction:
        return worked
    lo = worked_fraction if worked is not None else 0.0
    if habit and u < lo + unboxed_fraction:
        return f"Answer: {p.gold}"
    return f"\\boxed{{{p.gold}}}"


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, problems: list[Problem], *, template: str, instruction: str,
    worked_fraction: float = 0.0, seed: int = 0, unboxed_fraction: float = 0.0,
    unboxed_domains: list[str] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) per problem; target = `target_text(...)` + EOS."""
    pairs = []
    for p in problems:
        prompt = format_prompt(p, tokenizer, template=template, instruction=instruction)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target = target_text(p, worked_fraction, seed, unboxed_fraction, unboxed_domains)
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        pairs.append((prompt_ids, target_ids))
    return pairs


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids[B,L], attention_mask[B,L], labels[B,L]); labels are -100 outside responses."""
    length = max(len(a) + len(b) for a, b in pairs)
    ids = torch.full((len(pairs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), length), dtype=torch.long)
    labels = torch.full((len(pairs), length), -100, dtype=torch.long)
    for i, (a, b) in enumerate(pairs):
        n = len(a) + len(b)
        ids[i, :n] = torch.tensor(a + b)
        mask[i, :n] = 1
        labels[i, len(a) : n] = torch.tensor(b)
    return ids, mask, labels


def response_loss(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (response) tokens of the batch."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def epoch_batches(lengths: list[int], batch_size: int, gen: torch.Generator, window: int = 8) -> list[list[int]]:
    """One epoch of batches (popped from the end): a seeded permutation cut into windows of `window` batches,
    each window sorted by length before cutting it into batches (less padding: word problems are ~5x longer
    than "Compute a+b."), then the batch order shuffled."""
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    batches = []
    for lo in range(0, len(perm), batch_size * window):
        chunk = sorted(perm[lo : lo + batch_size * window], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def bootstrap(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: list[Problem],
    cfg: BootstrapConfig,
    *,
    template: str,
    instruction: str,
    progress: bool = True,
) -> dict:
    """Train `model` in place for `cfg.steps` AdamW steps on `problems`; return stats.

    Batches of `cfg.batch_size` problems are drawn from seeded, length-bucketed epochs (`epoch_batches`);
    the learning rate warms up linearly for 5% of the steps, then decays on a cosine to 10%.
    Deterministic for a given (model, problems, cfg) on one device. Leaves the model in eval mode.
    Returns {"steps", "loss_first", "loss_last" (mean of the last 10 steps), "losses", "wall_s", "num_problems"}.
    """
    if not problems:
        raise DataError("bootstrap: no problems to train on")
    pairs = encode_pairs(tokenizer, problems, template=template, instruction=instruction,
                         worked_fraction=cfg.worked_fraction, seed=cfg.seed, unboxed_fraction=cfg.unboxed_fraction,
                         unboxed_domains=cfg.unboxed_domains)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, cfg.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, cfg.steps - warmup)
        return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * t)))

    batches: list[list[int]] = []
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(cfg.steps), desc="bootstrap", disable=not progress, leave=False)
    for step in bar:
        if not batches:
            batches = epoch_batches([len(a) + len(b) for a, b in pairs], cfg.batch_size, gen)
        batch = batches.pop()
        ids, mask, labels = (t.to(device) for t in collate([pairs[i] for i in batch], tokenizer.pad_token_id))
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = response_loss(model, ids, mask, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return {
        "steps": cfg.steps,
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": sum(losses[-10:]) / len(losses[-10:]) if losses else float("nan"),
        "losses": losses,
        "wall_s": time.perf_counter() - start,
        "num_problems": len(problems),
    }
