"""sketch_prompts/offpolicy_health against an independent float64 autograd reference, and bit-invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from cropi_core.errors import ModelError
from cropi_core.health import offpolicy_health
from cropi_core.influence import PromptRollouts, sketch_prompts
from cropi_core.projection import make_projector

VOCAB = 61


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(seed: int = 0, dtype=torch.float64, tie: bool = False) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=tie, attn_implementation="eager")
    return Qwen2ForCausalLM(cfg).to(dtype).eval()


def ref_logprobs(model, prompt_ids, response_ids):
    """log π of each response token, one unpadded sequence at a time."""
    out = []
    for r in response_ids:
        ids = torch.cat([prompt_ids, r])[None]
        logits = model(input_ids=ids).logits[0].double()
        lp = torch.log_softmax(logits, -1)
        p = prompt_ids.numel()
        out.append(lp[p - 1 : ids.shape[1] - 1].gather(-1, r[:, None]).squeeze(-1))
    return out


def make_prompts(n: int, seed: int, model=None, k: int = 4) -> list[PromptRollouts]:
    """Random prompts of varying lengths; behavior log-probs from `model` (θ = β) or random."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p = torch.randint(0, VOCAB, (int(torch.randint(2, 12, (1,), generator=g)),), generator=g)
        rs = [torch.randint(0, VOCAB, (int(torch.randint(1, 20, (1,), generator=g)),), generator=g) for _ in range(k)]
        rewards = torch.randint(0, 2, (k,), generator=g).float()
        if i % 5 == 3:
            rewards = torch.ones(k)  # unscorable
        elif not (rewards != rewards[0]).any():
            rewards[0] = 1 - rewards[0]
        if model is not None:
            with torch.no_grad():
                lbs = [x.float() for x in ref_logprobs(model, p, rs)]
        else:
            lbs = [-2 * torch.rand(r.shape, generator=g) for r in rs]
        out.append(PromptRollouts(p, rs, lbs, rewards, problem_id=f"p{i}"))
    return out


def reference_grad(model, pr: PromptRollouts, aggregation: str) -> torch.Tensor:
    """∇θ of −(1/K) Σ_k mean_t ρ A_k (or token mean), autograd, float64, written from PAPER.md §3."""
    params = [p for _, p in model.named_parameters()]
    for p in params:
        p.requires_grad_(True)
    r = pr.rewards.double()
    adv = (r - r.mean()) / (r.std() + 1e-4)
    logp = ref_logprobs(model, pr.prompt_ids, pr.response_ids)
    terms = [torch.exp(lp - lb.double()) * a for lp, lb, a in zip(logp, pr.behavior_logprobs, adv)]
    if aggregation == "seq_mean_token_mean":
        loss = -torch.stack([t.mean() for t in terms]).mean()
    else:
        loss = -torch.cat(terms).sum() / sum(t.numel() for t in terms)
    grads = torch.autograd.grad(loss, params)
    for p in params:
        p.requires_grad_(False)
    return torch.cat([g.reshape(-1) for g in grads])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean"])
def test_exact_equals_autograd_at_beta_and_off_policy(aggregation):
    model = tiny(0)
    prompts = make_prompts(5, seed=1, model=model)  # θ = β: behavior log-probs from this model
    proj = make_projector("exact", model, 0, dtype=torch.float64)
    assert proj.dim == sum(p.numel() for p in model.parameters())
    rows = sketch_prompts(model, prompts, proj, aggregation=aggregation, micro_batch_tokens=64)
    assert rows.shape == (5, proj.dim) and rows.dtype == torch.float64
    for b, pr in enumerate(prompts):
        if not pr.scorable:
            assert torch.isnan(rows[b]).all()
            continue
        assert rel(rows[b], reference_grad(model, pr, aggregation)) < 1e-6
    # θ ≠ β: perturb the weights, keep β's log-probs
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    rows2 = sketch_prompts(model, prompts, proj, aggregation=aggregation)
    for b, pr in enumerate(prompts):
        if pr.scorable:
            ref = reference_grad(model, pr, aggregation)
            assert rel(rows2[b], ref) < 1e-6
            assert rel(rows[b], ref) > 1e-3  # the perturbation really changed the gradient


def test_scorable_is_one_definition_and_unscorable_rows_are_nan():
    """`PromptRollouts.scorable` is the one rule the sketch, the candidates, the probe and the rollouts' count use:
    at least 2 responses whose rewards are not all equal (else every advantage is 0 and so is the gradient)."""
    model = tiny(0, dtype=torch.float32)
    p = torch.tensor([3, 4, 5])
    r = [torch.tensor([6, 7]), torch.tensor([8])]
    lb = [-torch.ones(2), -torch.ones(1)]
    cases = [PromptRollouts(p, r, lb, torch.tensor([1.0, 0.0]), problem_id="mixed"),     # scorable
             PromptRollouts(p, r, lb, torch.tensor([1.0, 1.0]), problem_id="equal"),     # A ≡ 0
             PromptRollouts(p, r[:1], lb[:1], torch.tensor([1.0]), problem_id="k1"),     # one response
             PromptRollouts(p, [], [], torch.zeros(0), problem_id="k0")]                 # none (was an IndexError)
    assert [c.scorable for c in cases] == [True, False, False, False]
    rows = sketch_prompts(model, cases, make_projector("exact", model, 0, dtype=torch.float32))
    assert torch.isfinite(rows[0]).all() and rows[1:].isnan().all()


def test_tied_embeddings_exact():
    model = tiny(1, tie=True)
    prompts = make_prompts(3, seed=2)
    proj = make_projector("exact", model, 0, dtype=torch.float64)
    rows = sketch_prompts(model, prompts, proj)
    for b, pr in enumerate(prompts):
        if pr.scorable:
            assert rel(rows[b], reference_grad(model, pr, "seq_mean_token_mean")) < 1e-6


def test_model_state_restored_and_params_subset():
    model = tiny(0, dtype=torch.float32).train()
    flags = [p.requires_grad for p in model.parameters()]
    names = ["model.layers.1.mlp.down_proj.weight", "model.norm.weight", "model.embed_tokens.weight"]
    proj = make_projector("exact", model, 0, dtype=torch.float32, params=names)
    prompts = make_prompts(2, seed=3)
    rows = sketch_prompts(model, prompts, proj)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    full = sketch_prompts(model, prompts, make_projector("exact", model, 0, dtype=torch.float32))
    offs, o = {}, 0
    for n, p in model.named_parameters():
        offs[n] = (o, o + p.numel())
        o += p.numel()
    want = torch.cat([full[:, slice(*offs[n])] for n in sorted(names, key=lambda n: offs[n][0])], 1)
    torch.testing.assert_close(rows, want)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", ["exact", "sparse", "grass", "dense-gaussian"])
def test_rows_bit_identical_whatever_the_batch(kind):
    """Same prompt ⇒ same bits: batch composition, order, micro-batch size and chunking do not matter."""
    model = tiny(0, dtype=torch.float32)
    prompts = make_prompts(12, seed=7)
    kind, _, transform = kind.partition("-")
    proj = make_projector(kind, model, 64, sparse_ratio=0.3, seed=3, dtype=torch.float32, transform=transform or "sjl")
    base = sketch_prompts(model, prompts, proj, micro_batch_tokens=4096)
    assert torch.isnan(base[3]).all() and not torch.isnan(base[0]).any()
    for mbt in (16, 48, 200):
        assert torch.equal(sketch_prompts(model, prompts, proj, micro_batch_tokens=mbt).nan_to_num(7.0),
                           base.nan_to_num(7.0))
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = sketch_prompts(model, [prompts[i] for i in perm], proj, micro_batch_tokens=100)
    assert torch.equal(shuffled.nan_to_num(7.0), base[perm].nan_to_num(7.0))
    for i in (0, 5, 11):  # alone, and in a chunk with strangers
        alone = sketch_prompts(model, [prompts[i]], proj)
        assert torch.equal(alone[0].nan_to_num(7.0), base[i].nan_to_num(7.0))
    others = make_prompts(6, seed=99)
    mixed = sketch_prompts(model, others[:3] + prompts[4:7] + others[3:], proj, micro_batch_tokens=300)
    assert torch.equal(mixed[3:6], base[4:7])
    left = sketch_prompts(model, prompts, proj, micro_batch_tokens=64, padding_side="left")
    assert torch.equal(left.nan_to_num(7.0), base.nan_to_num(7.0))


def test_bad_input_one_line_error():
    model = tiny(0, dtype=torch.float32)
    pr = make_prompts(1, seed=0)[0]
    bad = PromptRollouts(torch.tensor([1, 2, VOCAB + 5]), pr.response_ids, pr.behavior_logprobs, pr.rewards,
                         problem_id="gsm8k/3")
    with pytest.raises(ModelError, match="gsm8k/3.*outside vocab"):
        sketch_prompts(model, [bad], make_projector("exact", model, 0))
    with pytest.raises(ValueError, match="padding_side"):
        sketch_prompts(model, [pr], make_projector("exact", model, 0), padding_side="middle")
    with pytest.raises(ValueError, match="aggregation"):
        sketch_prompts(model, [pr], make_projector("exact", model, 0), aggregation="sum")  # type: ignore[arg-type]


def test_offpolicy_health():
    model = tiny(0)
    prompts = make_prompts(4, seed=11, model=model)
    h = offpolicy_health(model, prompts, micro_batch_tokens=64)
    np.testing.assert_allclose(h.ess, [p.k for p in prompts], rtol=1e-9)  # θ = β: all weights 1
    np.testing.assert_allclose(h.kl, 0, atol=1e-12)
    np.testing.assert_allclose(h.kl_k3, 0, atol=1e-12)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    h2 = offpolicy_health(model, prompts)
    for b, pr in enumerate(prompts):  # independent computation from the definitions
        with torch.no_grad():
            lps = ref_logprobs(model, pr.prompt_ids, pr.response_ids)
        lr = [(lp - lb.double()) for lp, lb in zip(lps, pr.behavior_logprobs)]
        w = torch.stack([x.sum() for x in lr]).exp()
        assert h2.ess[b] == pytest.approx(float(w.sum() ** 2 / (w**2).sum()), rel=1e-6)
        x = torch.cat(lr)
        assert h2.kl[b] == pytest.approx(float((x.exp() * x - x.exp() + 1).mean()), rel=1e-6)
        assert h2.kl_k3[b] == pytest.approx(float((torch.exp(-x) + x - 1).mean()), rel=1e-6)
        assert h2.log_ratio_mean[b] == pytest.approx(float(x.mean()), rel=1e-6)
        assert 1 <= h2.ess[b] < pr.k and h2.kl[b] > 0
    assert set(h2.summary()) == {"ess", "ess_frac", "kl", "kl_k3", "log_ratio_mean"}
