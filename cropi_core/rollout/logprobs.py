"""log β(a_t | s_t) per response token, recomputed by teacher forcing the behavior model (as the paper does).

Sequences `prompt ++ response` are right-padded into batches; position p of the logits predicts token p+1,
so response token t (at absolute position P + t) is scored by the logits at position P + t − 1. Only those
positions go through the LM head (a 150k-token vocabulary times every prompt position would dominate memory),
in float32, as log_softmax(logits / temperature).

Passes: pairs sorted by length, then either `batch_size` pairs per pass, or, with `max_tokens` (the config's
`rollout.logprob_micro_batch_tokens`), as many consecutive pairs as keep rows × longest row ≤ max_tokens (at
least one): a pass then holds ≤ max_tokens response positions, so its logits are ≤ max_tokens × vocabulary ×
(model dtype + 8) bytes and its activations ∝ max_tokens, whatever the response lengths. The grouping changes
results only by float rounding (right padding is causal-masked; measured identical to ≤ 1e-6 in float32).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


def teacher_force_logprobs(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    response_ids: list[torch.Tensor],
    *,
    temperature: float = 1.0,
    batch_size: int = 64,
    max_tokens: int | None = None,
) -> list[torch.Tensor]:
    """log-probs of each response's tokens given the prompt: K FloatTensor[T_k] (float32, on CPU).

    prompt_ids: LongTensor[P]; response_ids: K LongTensor[T_k]. `temperature` divides the logits
    (use the sampling temperature to get the distribution the tokens were drawn from). Passes as in
    `teacher_force_pairs` (`batch_size` pairs, or ≤ `max_tokens` padded tokens).
    """
    return teacher_force_pairs(model, [(prompt_ids, r) for r in response_ids], temperature=temperature,
                               batch_size=batch_size, max_tokens=max_tokens)


def pass_groups(lengths: list[int], *, batch_size: int = 64, max_tokens: int | None = None) -> list[list[int]]:
    """Indices of the sequences of each teacher-forcing pass, given their lengths (tokens, prompt + response).

    Sorted by length (stable), then cut every `batch_size` sequences, or, with `max_tokens`, before the sequence
    that would make rows × longest row exceed max_tokens (a sequence longer than max_tokens gets a pass alone).
    """
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0 (got {max_tokens})")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if max_tokens is None:
        return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    groups: list[list[int]] = []
    for i in order:  # ascending: the newcomer is the longest row of its pass
        if groups and (len(groups[-1]) + 1) * lengths[i] <= max_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@torch.no_grad()
def teacher_force_pairs(
    model: PreTrainedModel,
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    temperature: float = 1.0,
    batch_size: int = 64,
    max_tokens: int | None = None,
) -> list[torch.Tensor]:
    """`teacher_force_logprobs` for many (prompt_ids[P_i], response_ids[T_i]) pairs: FloatTensor[T_i] each.

    batch_size: pairs per pass, used when `max_tokens` is None; max_tokens: most padded tokens (rows × longest
    row) per pass, a bound on the pass's peak memory (see `pass_groups`)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    device = next(model.parameters()).device
    pad_id = getattr(model.config, "pad_token_id", None) or 0
    out: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    # similar lengths together: less padding (results do not depend on the grouping beyond float rounding)
    lengths = [pairs[i][0].numel() + pairs[i][1].numel() for i in range(len(pairs))]
    for idx in pass_groups(lengths, batch_size=batch_size, max_tokens=max_tokens):
        seqs = [torch.cat([pairs[i][0].reshape(-1), pairs[i][1].reshape(-1)]).long() for i in idx]
        length = max(s.numel() for s in seqs)
        ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : s.numel()] = s
            mask[row, : s.numel()] = 1
        # (row, position) of every scored token: positions P-1 .. P+T-2 predict the response tokens
        rows, pos, targets, sizes = [], [], [], []
        for row, i in enumerate(idx):
            p, t = pairs[i][0].numel(), pairs[i][1].numel()
            if t and not p:
                raise ValueError("teacher forcing needs a non-empty prompt (nothing predicts the first token)")
            rows.append(torch.full((t,), row, dtype=torch.long))
            pos.append(torch.arange(p - 1, p + t - 1))
            targets.append(pairs[i][1].reshape(-1).long())
            sizes.append(t)
        rows_t, pos_t, tgt_t = torch.cat(rows), torch.cat(pos), torch.cat(targets)
        logits = _logits_at(model, ids.to(device), mask.to(device), rows_t.to(device), pos_t.to(device))
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        picked = logp.gather(-1, tgt_t.to(device)[:, None])[:, 0].cpu()
        for i, chunk in zip(idx, picked.split(sizes)):
            out[i] = chunk.clone()
    return out


def _logits_at(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] at the given (row, position) pairs only."""
    base = getattr(model, "model", None)
    head = model.get_output_embeddings()
    plain_head = head is not None and base is not None and not _has_logit_postprocessing(model)
    if plain_head:
        hidden = base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        return head(hidden[rows, pos])
    return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[rows, pos]


def _has_logit_postprocessing(model: PreTrainedModel) -> bool:
    cfg = model.config
    return bool(getattr(cfg, "final_logit_softcapping", None)) or getattr(cfg, "logit_scale", None) not in (None, 1.0)
