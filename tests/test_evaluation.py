"""Evaluation: greedy pass@1 and mean@n against a per-problem reference, determinism, batching."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cropi_core.config import BootstrapConfig, TinyModelConfig
from cropi_core.data import format_prompt, generate_problems
from cropi_core.evaluation import evaluate
from cropi_core.models import bootstrap, build_char_tokenizer, build_tiny
from cropi_core.verify import reward

INSTRUCTION = "Answer in \\boxed{}."
SMALL = TinyModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=128)


@pytest.fixture(scope="module")
def memorised():
    """A small model that memorised 8 problems (supervised on exactly them): known-correct answers."""
    tok = build_char_tokenizer()
    model = build_tiny(SMALL, tok)
    problems = generate_problems("add", 8, seed=5)
    stats = bootstrap(model, tok, problems, BootstrapConfig(steps=80, lr=1e-2, batch_size=8), template="chat_boxed",
                      instruction=INSTRUCTION, progress=False)
    assert stats["loss_last"] < 0.05, stats["loss_last"]
    return model, tok, problems


def _greedy_reference(model, tok, problem) -> float:
    """One prompt, no padding, token-by-token argmax (independent of generate)."""
    ids = tok.encode(format_prompt(problem, tok, instruction=INSTRUCTION), add_special_tokens=False)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(12):
            nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == tok.eos_token_id:
                break
    return reward(problem, tok.decode(out, skip_special_tokens=True))


def test_greedy_accuracy_matches_reference(memorised):
    model, tok, problems = memorised
    # the same questions with wrong golds (and another domain label) must all score 0
    wrong = [replace(p, id=p.id + "/wrong", gold=str(int(p.gold) + 1), domain="wrong") for p in problems]
    items = problems + wrong
    res = evaluate(model, tok, items, max_new_tokens=12, instruction=INSTRUCTION, batch_size=5, progress=False)
    ref = {p.id: _greedy_reference(model, tok, p) for p in items}
    assert res.correct == ref
    assert res.by_domain["add"] == 1.0 and res.by_domain["wrong"] == 0.0
    assert res.accuracy == 0.5 and res.mean_at_n is None and res.sampled is None
    again = evaluate(model, tok, items, max_new_tokens=12, instruction=INSTRUCTION, batch_size=16, progress=False)
    assert again.correct == res.correct, "batching does not change greedy results"


def test_sampled_mean_at_n(memorised):
    model, tok, problems = memorised
    kw = dict(n_samples=6, temperature=0.5, max_new_tokens=12, instruction=INSTRUCTION, progress=False)
    res = evaluate(model, tok, problems, seed=1, **kw)
    assert res.n == 6 and set(res.sampled) == {p.id for p in problems}
    assert all(v * 6 == round(v * 6) for v in res.sampled.values()), "means of 6 binary rewards"
    assert res.mean_at_n == pytest.approx(sum(res.sampled.values()) / len(problems))
    assert res.mean_at_n > 0.7, "memorised answers survive T=0.5 sampling"
    assert evaluate(model, tok, problems, seed=1, **kw).sampled == res.sampled, "seeded"
    hot = evaluate(model, tok, problems, seed=1, **{**kw, "temperature": 3.0, "greedy": False})
    assert hot.mean_at_n < res.mean_at_n and hot.accuracy == hot.mean_at_n, "no greedy: accuracy is mean@n"
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, tok, [], progress=False)
