"""Projectors: unbiased inner products, concentration with dim, exactness of the sparse JL map and of the GraSS
block, determinism in (seed, name, shape), bf16 models, the energy probe and allocation. (Bit-identity of rows in
any batch: test_influence.py.)"""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from cropi_core.influence import sketch_prompts
from cropi_core.projection import make_projector
from test_influence import make_prompts, tiny


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small() -> Qwen2ForCausalLM:
    torch.manual_seed(3)
    cfg = Qwen2Config(vocab_size=61, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=False,
                      attn_implementation="eager")
    return Qwen2ForCausalLM(cfg).double().eval()


@pytest.fixture(scope="module")
def setup():
    model = small()
    prompts = [p for p in make_prompts(8, seed=4) if p.scorable][:4]
    exact = sketch_prompts(model, prompts, make_projector("exact", model, 0, dtype=torch.float64))
    return model, prompts, exact


def gram(x: torch.Tensor) -> torch.Tensor:
    return x.double() @ x.double().T


@pytest.mark.parametrize("kind,ratio,transform,s", [
    ("dense", 1.0, "gaussian", 2), ("dense", 1.0, "sjl", 1), ("sparse", 0.3, "gaussian", 2), ("sparse", 0.3, "sjl", 2),
    ("sparse", 0.3, "sjl", 4), ("grass", 0.25, "sjl", 2), ("grass", 0.25, "rademacher", 2), ("grass", 1.0, "sjl", 1)])
def test_inner_products_unbiased_and_concentrating(setup, kind, ratio, transform, s):
    model, prompts, exact = setup
    g_exact = gram(exact)
    scale = g_exact.abs().max()
    errs = {}
    for dim in (24, 384):
        grams = torch.stack([gram(sketch_prompts(model, prompts, make_projector(
            kind, model, dim, sparse_ratio=ratio, transform=transform, sjl_s=s, seed=seed, dtype=torch.float64)))
            for seed in range(40)])
        mean, se = grams.mean(0), grams.std(0) / 40**0.5
        # unbiased: the seed-average matches the exact Gram matrix within 4.5 standard errors (+ tiny slack)
        assert ((mean - g_exact).abs() <= 4.5 * se + 1e-3 * scale).all(), (kind, dim, (mean - g_exact) / se)
        errs[dim] = float(((grams - g_exact).norm(dim=(1, 2)) / g_exact.norm()).mean())
    # concentration improves with dim (with ratio < 1 the subset's own variance, independent of dim, remains; a
    # block of √ρ rows × √ρ columns varies more than ρ of single coordinates)
    assert errs[384] < (0.5 if ratio == 1.0 else 0.9 if kind == "grass" else 0.8) * errs[24], errs


@pytest.mark.parametrize("kind,s", [("dense", 1), ("dense", 4), ("grass", 2)])
def test_sjl_is_exact_when_buckets_cover_the_kept_coordinates(setup, kind, s):
    """dim // s ≥ kept coordinates: the buckets are an injection, so the sparse JL map is an exact isometry."""
    model, prompts, exact = setup
    n = exact.shape[1]
    proj = make_projector(kind, model, s * n + 5, transform="sjl", sjl_s=s, dtype=torch.float64)
    rows = sketch_prompts(model, prompts, proj)
    torch.testing.assert_close(gram(rows), gram(exact), rtol=1e-10, atol=1e-12 * gram(exact).abs().max())
    assert (rows != 0).sum(1).max() <= s * n  # really a scatter into buckets, not a dense map


def test_grass_block_equals_the_exact_gradient_on_the_kept_rows_and_columns(setup):
    """The masked block formed from δ[rows] and x[cols] is the exact per-prompt gradient's sub-block (× √(n/m))."""
    from cropi_core.projection.jl import JLProjector

    model, prompts, exact = setup
    proj = JLProjector(model, 0, kind="grass", mask="block", sparse_ratio=0.25, transform="identity", seed=5,
                       dtype=torch.float64)
    rows = sketch_prompts(model, prompts, proj)
    assert rows.shape == (len(prompts), proj.kept) and proj.kept < exact.shape[1] / 2
    off, want = 0, []
    for name, p in model.named_parameters():
        g = exact[:, off : off + p.numel()].reshape(len(prompts), *p.shape)
        off += p.numel()
        k = proj.kept_params[name]
        if k.is_block:
            r = torch.arange(p.shape[0]) if k.rows is None else k.rows
            c = torch.arange(p.shape[1]) if k.cols is None else k.cols
            g = g[:, r][:, :, c]
        elif k.flat is not None:
            g = g.reshape(len(prompts), -1)[:, k.flat]
        want.append(g.reshape(len(prompts), -1))
    torch.testing.assert_close(rows, torch.cat(want, 1), rtol=1e-9, atol=1e-13)
    assert any(k.is_block for k in proj.kept_params.values())


@pytest.mark.parametrize("kind,s", [("grass", 2), ("sparse", 4), ("dense", 1)])
def test_sjl_finish_in_column_chunks_has_the_bits_of_whole_parameter_passes(monkeypatch, kind, s):
    """finish() scatters SJL_CHUNK columns at a time; a bucket's additions keep their order, so chunks of 3 columns,
    of 100 and one pass per parameter give the same bits (float32, where a reordered sum would show)."""
    from cropi_core.projection import jl

    model = tiny(0, dtype=torch.float32)
    prompts = make_prompts(5, seed=2)
    rows = {}
    for chunk in (3, 100, 1 << 40):
        monkeypatch.setattr(jl, "SJL_CHUNK", chunk)
        proj = make_projector(kind, model, 40, sparse_ratio=0.3, transform="sjl", sjl_s=s, seed=2, dtype=torch.float32)
        rows[chunk] = sketch_prompts(model, prompts, proj)
    assert max(k.m for k in proj.kept_params.values()) > 100  # the chunks really cut parameters
    for chunk in (3, 100):
        assert torch.equal(rows[chunk].nan_to_num(7.0), rows[1 << 40].nan_to_num(7.0)), chunk
    assert rows[3].nan_to_num(0).abs().sum() > 0


@pytest.mark.parametrize("kind", ["dense", "sparse", "grass"])
def test_deterministic_in_seed_name_shape(kind):
    model = tiny(0, dtype=torch.float32)
    prompts = make_prompts(4, seed=5)
    a = sketch_prompts(model, prompts, make_projector(kind, model, 48, sparse_ratio=0.5, seed=7, dtype=torch.float32))
    b = sketch_prompts(model, prompts, make_projector(kind, model, 48, sparse_ratio=0.5, seed=7, dtype=torch.float32))
    c = sketch_prompts(model, prompts, make_projector(kind, model, 48, sparse_ratio=0.5, seed=8, dtype=torch.float32))
    assert torch.equal(a.nan_to_num(3.0), b.nan_to_num(3.0))
    ok = ~a.isnan().any(1)
    assert not torch.allclose(a[ok], c[ok])
    half = a.to(torch.float16)
    assert torch.equal(sketch_prompts(model, prompts, make_projector(kind, model, 48, sparse_ratio=0.5, seed=7))[ok],
                       half[ok])  # default fp16 = float32 compute, cast once at the end
    # per-parameter blocks depend on (seed, name, shape) only: the sketch is additive over parameter groups
    names = [n for n, _ in model.named_parameters()]
    parts = [sketch_prompts(model, prompts, make_projector(kind, model, 48, sparse_ratio=0.5, seed=7,
                                                            dtype=torch.float64, params=names[i::2]))
             for i in (0, 1)]
    torch.testing.assert_close((parts[0] + parts[1])[ok].float(), a[ok], rtol=1e-4, atol=1e-6)


def test_bad_arguments():
    model = tiny(0, dtype=torch.float32)
    with pytest.raises(ValueError, match="unknown projector kind"):
        make_projector("trak", model, 8)
    with pytest.raises(ValueError, match="unknown projector kind"):
        make_projector("factored", model, 8)  # removed (its top 10% disagreed with exact POPI)
    with pytest.raises(ValueError, match="sparse_ratio"):
        make_projector("sparse", model, 8, sparse_ratio=0.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        make_projector("dense", model, 8, params=["nope.weight"])
    with pytest.raises(ValueError, match="unknown transform"):
        make_projector("grass", model, 8, transform="fft")
    with pytest.raises(ValueError, match="sjl_s"):
        make_projector("grass", model, 8, sjl_s=3)


@pytest.mark.parametrize("kind", ["exact", "sparse", "grass"])
def test_bf16_model_computes_in_float32(kind):
    """A bf16 model sketches (hooks hand bf16 pieces; projectors compute in float32) close to its float32 twin."""
    m32 = tiny(0, dtype=torch.float32)
    m16 = tiny(0, dtype=torch.bfloat16)
    prompts = [p for p in make_prompts(4, seed=6) if p.scorable]
    a = sketch_prompts(m32, prompts, make_projector(kind, m32, 128, sparse_ratio=0.5, dtype=torch.float32))
    b = sketch_prompts(m16, prompts, make_projector(kind, m16, 128, sparse_ratio=0.5, dtype=torch.float32))
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert (torch.nn.functional.cosine_similarity(a, b) > 0.99).all()


def test_energy_probe_is_the_per_sequence_gradient_energy():
    """EnergyProbe row = Σ over the prompt's sequences of ‖∇_p (c_k Σ_t ρ_t)‖² per parameter (float64 autograd)."""
    from cropi_core.objective import group_advantages, sequence_coefficients
    from cropi_core.projection.jl import EnergyProbe
    from test_influence import ref_logprobs

    model = tiny(1)
    pr = [p for p in make_prompts(6, seed=11, model=model) if p.scorable][0]
    probe = EnergyProbe(model, dtype=torch.float64)
    got = sketch_prompts(model, [pr], probe)[0]
    names, params = zip(*model.named_parameters())
    coefs = sequence_coefficients(group_advantages(pr.rewards.double()),
                                  torch.tensor([r.numel() for r in pr.response_ids]), "seq_mean_token_mean")
    want = torch.zeros(len(names), dtype=torch.float64)
    for k, (lp, lb) in enumerate(zip(ref_logprobs(model, pr.prompt_ids, pr.response_ids), pr.behavior_logprobs)):
        for p in params:
            p.requires_grad_(True)
        loss = coefs[k] * torch.exp(lp - lb.double()).sum()
        grads = torch.autograd.grad(loss, params)
        want += torch.stack([g.pow(2).sum() for g in grads])
    for p in params:
        p.requires_grad_(False)
    assert list(probe.params) == list(names)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-12)


def test_gradient_energy_sums_the_scorable_prompts_rows_by_parameter_name():
    """gradient_energy (the calibration artifact's payload) = Σ of EnergyProbe rows over the scorable prompts only:
    an unscorable prompt (NaN row) is skipped, not turned into NaN energies; keys are the parameter names in order."""
    from cropi_core.influence import gradient_energy
    from cropi_core.projection.jl import EnergyProbe

    model = tiny(1)
    prompts = make_prompts(8, seed=11, model=model)
    scorable = [p for p in prompts if p.scorable]
    assert 0 < len(scorable) < len(prompts)  # the batch must hold both kinds for the test to mean anything
    got = gradient_energy(model, prompts)
    rows = sketch_prompts(model, scorable, EnergyProbe(model, dtype=torch.float64))  # [S, n_params]
    want = rows.sum(0)
    assert list(got) == [n for n, _ in model.named_parameters()]
    torch.testing.assert_close(torch.tensor(list(got.values()), dtype=torch.float64), want, rtol=1e-12, atol=0)
    assert all(v > 0 for v in got.values())


def test_energy_ratios_spend_the_budget_where_the_energy_is():
    from cropi_core.projection.jl import energy_ratios

    numel = {"a": 100, "b": 1000, "c": 10_000}
    r = energy_ratios({"a": 50.0, "b": 40.0, "c": 10.0}, numel, 0.1)  # budget 1110 coordinates
    kept = {n: r[n] * numel[n] for n in numel}
    assert r["a"] == 1.0  # capped: its share (555) exceeds its size; the rest is shared again
    assert sum(kept.values()) == pytest.approx(1110, rel=1e-9)
    assert kept["b"] / kept["c"] == pytest.approx(4.0)  # ∝ energy once uncapped
    flat = energy_ratios({"a": 0.0, "b": 0.0, "c": 0.0}, numel, 0.1)
    assert all(v == pytest.approx(0.1) for v in flat.values())  # no energy measured: uniform
    model = tiny(0, dtype=torch.float32)
    names = [n for n, _ in model.named_parameters()]
    pr = energy_ratios({n: float(i + 1) for i, n in enumerate(names)}, {n: p.numel() for n, p in model.named_parameters()}, 0.2)
    proj = make_projector("grass", model, 64, sparse_ratio=0.2, param_ratios=pr)
    assert proj.kept <= 0.2 * sum(p.numel() for p in model.parameters()) * 1.05


_RATIOS_IN_A_PROCESS = r"""
import hashlib, sys, torch
sys.path.insert(0, sys.argv[1])
from test_influence import make_prompts, tiny
from cropi_core.influence import sketch_prompts
from cropi_core.projection import make_projector
from cropi_core.projection.jl import energy_ratios
torch.set_num_threads(1)
model = tiny(0, dtype=torch.float32)
numel = {n: p.numel() for n, p in model.named_parameters()}
g = torch.Generator().manual_seed(1)
energy = {n: float(torch.rand((), generator=g, dtype=torch.float64)) * 10 ** int(torch.randint(-3, 4, (), generator=g))
          for n in numel}  # irregular magnitudes, as measured energies are: float sums whose order shows in the bits
ratios = energy_ratios(energy, numel, 0.1)
proj = make_projector("grass", model, 256, sparse_ratio=0.1, param_ratios=ratios, transform="sjl", sjl_s=2)
rows = sketch_prompts(model, make_prompts(4, seed=2), proj)
print(hashlib.sha256(repr(sorted(ratios.items())).encode()).hexdigest(), hashlib.sha256(rows.numpy().tobytes()).hexdigest())
"""


def test_energy_ratios_and_the_masks_they_seed_are_the_same_in_every_process(tmp_path):
    # The ratios' repr seeds each parameter's coordinate mask, so two processes must compute the same bits; summing
    # over a set of names (PYTHONHASHSEED order) did not, and the flow's pool and validation sketches (or a resumed
    # run's chunks) were then made with different masks. One process per hash seed; all must print the same hashes.
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ratios.py"
    script.write_text(_RATIOS_IN_A_PROCESS)
    here = str(Path(__file__).parent)
    root = str(Path(__file__).parent.parent)
    outs = set()
    for seed in ("0", "1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
        res = subprocess.run([sys.executable, str(script), here], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        outs.add(res.stdout.strip())
    assert len(outs) == 1, outs
