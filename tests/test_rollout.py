"""Rollouts: teacher-forced log β vs generate's logits, the hf backend's contract, vLLM conversion and lazy import."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from cropi_core.config import TinyModelConfig
from cropi_core.data import Problem, format_prompt
from cropi_core.errors import ConfigError, ModelError
from cropi_core.models import build_char_tokenizer, build_tiny
from cropi_core.rollout import PromptRollouts, get_backend, teacher_force_logprobs, teacher_force_pairs
from cropi_core.rollout.hf import generate
from cropi_core.rollout.vllm import rollouts_from_vllm
from cropi_core.verify import reward

INSTRUCTION = "Answer in \\boxed{}."
SMALL = TinyModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    m = build_tiny(SMALL, tok)
    with torch.no_grad():  # sharper than the N(0, 0.02) init, and EOS likely (logit ~2 on average hidden states),
        m.lm_head.weight.mul_(10.0)  # so sampled responses vary in length and some stop at EOS
        h = m.model(torch.tensor([tok.encode("Compute 47+385. Answer in \\boxed{}.")])).last_hidden_state[0].mean(0)
        m.lm_head.weight[tok.eos_token_id] = h * (2.0 / h.dot(h))
    return m


PROBLEMS = [
    Problem("t/0", "Compute 1+2.", "3", "unit", "add", "exact"),
    Problem("t/1", "Compute 47+385.", "432", "unit", "add", "exact"),
    Problem("t/2", "Tom has 12 apples and buys 7 more. How many apples does he have?", "19", "unit", "word", "exact"),
]


def _reference_logprobs(model, prompt: torch.Tensor, response: torch.Tensor, temperature: float) -> torch.Tensor:
    """One sequence, no padding, float64 copy of the model: the independent reference."""
    m64 = _double(model)
    ids = torch.cat([prompt, response])[None]
    with torch.no_grad():
        logits = m64(ids).logits[0, prompt.numel() - 1 : -1].double()
    return torch.log_softmax(logits / temperature, -1).gather(-1, response[:, None])[:, 0]


_DOUBLE: dict[int, torch.nn.Module] = {}


def _double(model):
    if id(model) not in _DOUBLE:
        import copy

        _DOUBLE[id(model)] = copy.deepcopy(model).double()
    return _DOUBLE[id(model)]


def test_teacher_forced_logprobs_equal_generate_logits(model, tok):
    """log β recomputed by teacher forcing == log_softmax of the logits generate sampled from (T=1, float32)."""
    texts = [format_prompt(p, tok, instruction=INSTRUCTION) for p in PROBLEMS]  # different lengths: left padding
    gen = generate(model, tok, texts, 4, do_sample=True, temperature=1.0, max_new_tokens=20, seed=3, output_logits=True)
    lengths = {r.numel() for rs in gen.responses for r in rs}
    assert len(lengths) > 1, "responses of different lengths (some stopped at EOS)"
    worst = 0.0
    for b in range(len(texts)):
        got = teacher_force_logprobs(model, gen.prompt_ids[b], gen.responses[b], temperature=1.0, batch_size=3)
        for r, lp, logits in zip(gen.responses[b], got, gen.logits[b]):
            want = torch.log_softmax(logits.float(), -1).gather(-1, r[:, None])[:, 0]
            assert lp.dtype == torch.float32 and lp.shape == r.shape
            worst = max(worst, (lp - want).abs().max().item())
    assert worst < 1e-5, worst


def test_teacher_forcing_exact_against_float64_single_sequences(model, tok):
    prompts = [torch.tensor(tok.encode(format_prompt(p, tok, instruction=INSTRUCTION))) for p in PROBLEMS]
    g = torch.Generator().manual_seed(0)
    pairs = [(p, torch.randint(3, len(tok), (n,), generator=g)) for p in prompts for n in (1, 5, 17)]
    for temperature in (1.0, 0.5):
        refs = [_reference_logprobs(model, p, r, temperature) for p, r in pairs]
        for bs in (1, 4, 64):  # batch composition / padding must not matter beyond float32 rounding
            got = teacher_force_pairs(model, pairs, temperature=temperature, batch_size=bs)
            for ref, lp in zip(refs, got):
                assert torch.allclose(lp.double(), ref, atol=2e-6, rtol=0), (temperature, bs, (lp.double() - ref).abs().max())
    with pytest.raises(ValueError, match="temperature"):
        teacher_force_pairs(model, pairs, temperature=0.0)


def test_teacher_forcing_token_budget_bounds_passes_not_values(model, tok):
    """rollout.logprob_micro_batch_tokens: passes of ≤ max_tokens padded tokens; log β identical to ≤ 1e-6
    (float32) between a budget of one short pair per pass and one that holds every pair (not bitwise: another
    batch shape reorders float sums), and to the default 64-pair passes."""
    from cropi_core.rollout.logprobs import pass_groups

    prompts = [torch.tensor(tok.encode(format_prompt(p, tok, instruction=INSTRUCTION))) for p in PROBLEMS]
    g = torch.Generator().manual_seed(1)
    pairs = [(p, torch.randint(3, len(tok), (n,), generator=g)) for p in prompts for n in (1, 7, 30, 64)]
    lengths = [p.numel() + r.numel() for p, r in pairs]
    for budget in (1, 100, 200, 10**6):
        groups = pass_groups(lengths, max_tokens=budget)
        assert sorted(i for grp in groups for i in grp) == list(range(len(pairs)))
        for grp in groups:  # within budget, or a single pair longer than it
            assert len(grp) == 1 or len(grp) * max(lengths[i] for i in grp) <= budget
    assert len(pass_groups(lengths, max_tokens=10**6)) == 1 and len(pass_groups(lengths, max_tokens=1)) == len(pairs)
    assert len(pass_groups(lengths, max_tokens=200)) > 2  # the middle budgets really split
    default = teacher_force_pairs(model, pairs, temperature=0.5)
    small = teacher_force_pairs(model, pairs, temperature=0.5, max_tokens=100)
    large = teacher_force_pairs(model, pairs, temperature=0.5, max_tokens=10**6)
    worst = 0.0
    for a, b, c, (_, r) in zip(small, large, default, pairs):
        assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == r.shape
        worst = max(worst, (a - b).abs().max().item(), (a - c).abs().max().item())
    assert worst <= 1e-6, worst
    with pytest.raises(ValueError, match="max_tokens"):
        teacher_force_pairs(model, pairs, max_tokens=0)


def test_hf_backend_contract(model, tok):
    backend = get_backend("hf", model, tok)
    rng = torch.get_rng_state()
    kw = dict(temperature=0.7, top_p=1.0, max_new_tokens=16, template="chat_boxed", instruction=INSTRUCTION, batch_size=2,
              progress=False)
    out = backend.sample(PROBLEMS, 5, seed=11, **kw)
    assert torch.equal(rng, torch.get_rng_state()), "global RNG untouched"
    assert [r.problem_id for r in out] == [p.id for p in PROBLEMS]
    eos = tok.eos_token_id
    for pr, p in zip(out, PROBLEMS):
        assert isinstance(pr, PromptRollouts) and pr.k == 5
        assert pr.prompt_ids.tolist() == tok.encode(format_prompt(p, tok, instruction=INSTRUCTION))
        for r, lp, text, rew in zip(pr.response_ids, pr.behavior_logprobs, pr.texts, pr.rewards):
            ids = r.tolist()
            assert 1 <= len(ids) <= 16
            assert eos not in ids[:-1], "truncated at the first EOS"
            assert len(ids) == 16 or ids[-1] == eos, "shorter responses end with EOS (kept)"
            assert text == tok.decode(ids, skip_special_tokens=True)
            assert rew.item() == reward(p, text)
            assert (lp <= 0).all() and lp.shape == r.shape
        # log β at the sampling temperature, the same numbers a single-prompt teacher forcing gives
        ref = teacher_force_logprobs(model, pr.prompt_ids, pr.response_ids, temperature=0.7)
        for a, b in zip(pr.behavior_logprobs, ref):
            assert torch.allclose(a, b, atol=1e-6)
    assert any(r[-1].item() == eos for pr in out for r in pr.response_ids)
    again = backend.sample(PROBLEMS, 5, seed=11, **kw)
    other = backend.sample(PROBLEMS, 5, seed=12, **kw)
    flat = lambda rs: [r.tolist() for pr in rs for r in pr.response_ids]  # noqa: E731
    assert flat(again) == flat(out), "same seed, same outputs"
    assert flat(other) != flat(out), "different seed, different outputs"
    assert backend.last_stats["responses"] == 15 and backend.last_stats["tokens_per_s"] > 0


def test_hf_backend_ignores_checkpoint_decoding_defaults(model, tok):
    """A checkpoint's generation_config (top_k, repetition penalty, ...) must not change β."""
    kw = dict(temperature=1.0, max_new_tokens=12, seed=5, instruction=INSTRUCTION, progress=False)
    plain = get_backend("hf", model, tok).sample(PROBLEMS[:2], 4, **kw)
    saved = model.generation_config
    try:
        model.generation_config = saved.__class__(**{**saved.to_dict(), "top_k": 1, "repetition_penalty": 3.0,
                                                     "temperature": 0.1, "do_sample": False})
        odd = get_backend("hf", model, tok).sample(PROBLEMS[:2], 4, **kw)
    finally:
        model.generation_config = saved
    assert [r.tolist() for pr in odd for r in pr.response_ids] == [r.tolist() for pr in plain for r in pr.response_ids]


def test_unknown_backend_and_missing_vllm(model, tok, monkeypatch):
    with pytest.raises(ConfigError, match="unknown backend 'tgi'"):
        get_backend("tgi", model, tok)
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ModelError, match="vllm not installed") as err:
        get_backend("vllm", model, tok)
    assert "\n" not in str(err.value)


def _logprob(v: float) -> SimpleNamespace:
    return SimpleNamespace(logprob=v, rank=1, decoded_token=None)


def test_rollouts_from_vllm_shaped_outputs(tok):
    """Constructed RequestOutput-shaped objects (the fields vLLM 0.x returns) -> PromptRollouts."""
    eos = tok.eos_token_id
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    p_ids = enc(format_prompt(PROBLEMS[0], tok, instruction=INSTRUCTION))
    right, wrong = enc("\\boxed{3}") + [eos], enc("\\boxed{4}")
    after_eos = enc("\\boxed{3}") + [eos] + enc("junk")  # e.g. ignore_eos / a stop string that ran past EOS
    comps = []
    for ids, text in ((right, "\\boxed{3}"), (wrong, "\\boxed{4}"), (after_eos, "\\boxed{3}junk")):
        lps = [{t: _logprob(-0.1 * (i + 1)), 99: _logprob(-9.0)} for i, t in enumerate(ids)]
        comps.append(SimpleNamespace(index=len(comps), text=text, token_ids=tuple(ids), cumulative_logprob=None, logprobs=lps,
                                     finish_reason="stop" if ids[-1] == eos else "length", stop_reason=None))
    outputs = [SimpleNamespace(request_id="0", prompt="", prompt_token_ids=p_ids, prompt_logprobs=None, outputs=comps, finished=True)]
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    (pr,) = rollouts_from_vllm(outputs, PROBLEMS[:1], eos_ids={eos}, decode=decode)
    assert pr.problem_id == "t/0" and pr.prompt_ids.tolist() == p_ids
    assert [r.tolist() for r in pr.response_ids] == [right, wrong, right]
    assert pr.rewards.tolist() == [1.0, 0.0, 1.0] and pr.texts == ["\\boxed{3}", "\\boxed{4}", "\\boxed{3}"]
    assert torch.allclose(pr.behavior_logprobs[0], torch.tensor([-0.1 * (i + 1) for i in range(len(right))]))
    assert pr.behavior_logprobs[2].shape == pr.response_ids[2].shape
    # with a teacher-forcing function, log β comes from it (the HF model), not from vLLM's numbers
    calls = []

    def fn(pairs):
        calls.append(len(pairs))
        return [torch.full((r.numel(),), -1.0) for _, r in pairs]

    (pr2,) = rollouts_from_vllm(outputs, PROBLEMS[:1], eos_ids={eos}, decode=decode, logprob_fn=fn)
    assert calls == [3] and all((lp == -1.0).all() for lp in pr2.behavior_logprobs)
    with pytest.raises(ValueError, match="1 vLLM outputs for 2 problems"):
        rollouts_from_vllm(outputs, PROBLEMS[:2], eos_ids={eos})
    no_lp = [SimpleNamespace(prompt_token_ids=p_ids, outputs=[SimpleNamespace(text="x", token_ids=(5,), logprobs=None)])]
    with pytest.raises(ModelError, match="no per-token logprobs"):
        rollouts_from_vllm(no_lp, PROBLEMS[:1], eos_ids={eos})


def test_seeded_sampling_and_a_concurrent_rng_user_do_not_disturb_each_other(model, tok):
    """torch's default generator is one per process. A thread that seeds it and draws from it while other threads
    sample seeded rollouts (GRPO training next to online rollouts and evaluations, all Prefect threads of one
    process) must see exactly the stream it would see alone, and so must the samplers (cropi_core.rng)."""
    import threading

    from cropi_core.rng import global_rng

    prompts = ["1+1=", "2+3=", "7+1="]

    def sample(seed: int) -> list[list[int]]:
        g = generate(model, tok, prompts, 4, do_sample=True, temperature=1.0, max_new_tokens=8, seed=seed)
        return [[t.tolist() for t in rs] for rs in g.responses]

    def draws() -> list[float]:
        with global_rng():
            torch.manual_seed(123)
            out = []
            for _ in range(200):
                out += torch.rand(3).tolist()
                torch.randn(64, 64)  # some work between draws, so the samplers get scheduled in between
            return out

    alone = {"draws": draws(), **{s: sample(s) for s in (1, 2)}}
    got: dict = {}
    threads = [threading.Thread(target=lambda: got.__setitem__("draws", draws()))]
    threads += [threading.Thread(target=lambda s=s: got.__setitem__(s, [sample(s) for _ in range(3)][-1])) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == alone
