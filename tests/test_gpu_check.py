"""scripts/gpu_check.sh's curriculum half, on the CPU: `benchmarks/gpu_curriculum.py --small --device cpu` runs the
reduced bf16 curriculum through the flows, checks every model task's `ran_on` record, writes its measured rates,
and `cropi plan` applies them and says so. The same script runs unchanged on a GPU (`--device cuda`, the default);
that side is checked by `cropi_core.plan.apply_measurements` on a result shaped like a GPU's."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cropi_core import plan as P
from flows.cli import app

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_curriculum.py"
RATES = P.load_rates(json.loads((REPO / "benchmarks" / "rates.json").read_text()))
OPS = ("fwdbwd", "forward", "generate_hf")


def script(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, prefect_api):
    """One `--small --device cpu` run (bf16 on the CPU, one torch thread), reporting to the session's Prefect server."""
    root = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(root / "prefect-home")}
    out = root / "gpu_rates.json"
    res = script("--small", "--device", "cpu", "--storage", str(root / "store"), "--work", str(root / "work"),
                 "--out", str(out), env=env, cwd=root)
    return {"root": root, "env": env, "res": res, "out": out}


def test_the_small_run_passes_its_ran_on_check(small_run):
    res = small_run["res"]
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "violation" not in res.stdout
    assert "curriculum check: ok, every model task ran as configured" in res.stdout
    result = json.loads(small_run["out"].read_text())
    c = result["curriculum"]
    assert c["ok"] and c["violations"] == []
    kinds = {k["kind"]: k for k in c["kinds"]}
    # every model task kind ran (2 stages: calibration, grads, health, training each stage; 4 rollout sets; 6 evaluations)
    assert {k: v["artifacts"] for k, v in kinds.items()} == {
        "rollouts": 4, "calibration": 2, "grads": 4, "health": 2, "evaluation": 6, "checkpoint (trained)": 2}
    assert kinds["grads"]["ran_on"] == '{"device": "cpu", "dtype": "bfloat16"}'
    assert kinds["checkpoint (trained)"]["ran_on"] == '{"device": "cpu", "dtype": "bfloat16", "weights": "float32"}'


def test_the_rates_json_is_measured_and_names_its_command(small_run):
    result = json.loads(small_run["out"].read_text())
    meta, ops = result["meta"], result["ops"]
    assert meta["device"] == "cpu" and meta["gpu"] is None and meta["small"] and meta["threads"] == 1
    assert meta["n_params"] == P.tiny_shape(P.RunConfig(model={"tiny": meta["shape"]})).params
    for op in OPS:
        r = ops[op]
        assert r["status"] == "measured" and r["tokens_per_s"] > 0 and r["flops_per_s"] > 0
        assert "benchmarks/gpu_curriculum.py --small --device cpu" in r["source"] and "CPU" in r["source"]
        assert math.isclose(r["tokens_per_s"], r["tokens"] / r["seconds"])
        assert r["mfu"] is None  # no bf16 peak for a CPU
    # the table the script prints carries the same numbers
    assert "| fwdbwd |" in small_run["res"].stdout and "| generate_hf |" in small_run["res"].stdout


def test_cropi_plan_uses_the_measured_rates_and_says_so(small_run):
    result = json.loads(small_run["out"].read_text())
    rates, notes = P.apply_measurements(RATES, "cpu", [("gpu_rates.json", result)])
    assert any("measured rates from gpu_rates.json" in n for n in notes), notes
    model = next(m for m in rates.devices["cpu"].measured if m.name == "gpu_curriculum small")
    assert model.params == result["meta"]["n_params"]
    assert {op: r.value for op, r in model.tok_s.items()} == {op: result["ops"][op]["tokens_per_s"] for op in OPS}
    # the CLI on the run's own config: its model is the measured one, so the rates are "measured", from this run
    config = small_run["root"] / "work" / "gpu-curriculum-small.yaml"
    res = CliRunner().invoke(app, ["plan", "--config", str(config), "--gpu", "cpu", "--measured", str(small_run["out"]),
                                   "--storage", str(small_run["root"] / "plan-store")])
    assert res.exit_code == 0, res.output
    assert "measured rates from" in res.stdout and "tokens/s of a" in res.stdout
    for op in OPS:
        line = next(x for x in res.stdout.splitlines() if x.strip().startswith("measured") and f"{op} FLOP/s on cpu" in x)
        assert "gpu_curriculum small" in line and "benchmarks/gpu_curriculum.py" in line, line
    # a plan for a GPU does not take a CPU measurement, and says why
    _, notes = P.apply_measurements(RATES, "h100", [("gpu_rates.json", result)])
    assert notes == ["gpu_rates.json: measured on a CPU (--small), not applied to h100"]


def test_a_violation_is_one_line_and_a_nonzero_exit(small_run):
    # the CPU run's store checked as if the run had asked for CUDA: every model artifact is a violation
    res = script("--check-only", "--small", "--device", "cuda", "--storage", str(small_run["root"] / "store"),
                 env=small_run["env"], cwd=small_run["root"])
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [x for x in res.stdout.splitlines() if x.startswith("violation: ")]
    assert len(lines) == 4 + 2 + 4 + 2 + 6 + 2, res.stdout
    assert all('"device": "cpu"' in x and 'expected {"device": "cuda"' in x for x in lines)
    assert "curriculum check: 20 violation(s)" in res.stdout


def gpu_result(**ops_flops: float) -> dict:
    shape = P.tiny_shape(P.RunConfig(model={"tiny": {"hidden_size": 1536, "num_hidden_layers": 28,
                                                     "num_attention_heads": 12, "num_key_value_heads": 2,
                                                     "intermediate_size": 8960}}))
    return {"meta": {"small": False, "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "shape_name": "qwen2.5-1.5b-body",
                     "n_params": shape.params, "time": "t"},
            "ops": {op: {"tokens_per_s": fl / 6e9, "flops_per_s": fl, "status": "measured",
                         "source": f"python benchmarks/gpu_curriculum.py: {op} on NVIDIA H100 80GB HBM3"}
                    for op, fl in ops_flops.items()}}


def test_a_gpu_result_replaces_the_assumed_mfu_and_gpu_sketch_wins_fwdbwd():
    rates, notes = P.apply_measurements(RATES, "h100", [("gpu_rates.json", gpu_result(
        forward=494.5e12, fwdbwd=296.7e12, generate_hf=19.78e12))])
    mfu = rates.devices["h100"].mfu
    assert (round(mfu["forward"].value, 3), round(mfu["fwdbwd"].value, 3), round(mfu["generate_hf"].value, 3)) == \
        (0.5, 0.3, 0.02)
    assert all(mfu[op].status == "measured" and "gpu_curriculum.py" in mfu[op].source for op in OPS)
    assert mfu["generate_vllm"].status == "assumed"  # not measured: left alone
    assert rates.devices["h200"].mfu["forward"].status == "assumed"  # another GPU: left alone
    assert notes == ["measured rates from gpu_rates.json (NVIDIA H100 80GB HBM3, t) replace the assumed forward, "
                     "fwdbwd, generate_hf MFU"]
    shape = P.known_shape("qwen2.5-1.5b-instruct")
    sketch = {"meta": {"gpu": "NVIDIA H100 80GB HBM3", "n_params": shape.params, "prompt_len": 128, "resp_len": 512,
                       "time": "t"},
              "rows": [{"method": "(a) plain fwd+bwd", "tokens_per_s": 40_000.0, "vs_plain": 1.0}]}
    # given in either order, gpu_sketch.json goes last: its fwd+bwd is the base of its sketch ratios
    rates, notes = P.apply_measurements(RATES, "h100", [("gpu_sketch.json", sketch), ("gpu_rates.json", gpu_result(
        fwdbwd=296.7e12))])
    assert "plain fwd+bwd 40000 tokens/s" in rates.devices["h100"].mfu["fwdbwd"].source
    assert len(notes) == 2 and "gpu_sketch.json" in notes[1]
    # a --small GPU run and a file that is no result are notes, never errors
    small = gpu_result(fwdbwd=1e12)
    small["meta"]["small"] = True
    rates2, notes = P.apply_measurements(RATES, "h100", [("a.json", small), ("b.json", {"what": 1})])
    assert rates2 == RATES
    assert notes == ["a.json: measured on NVIDIA H100 80GB HBM3 (--small), not applied to h100",
                     "b.json is not a gpu_check.sh result: ignored"]
