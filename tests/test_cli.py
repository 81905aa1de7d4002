"""The `cropi` CLI on bad input: one line `error: ...` on stderr, exit code 2, nothing registered in storage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows_helpers as H
from flows.cli import app
from flows.inputs import parse_sets


def run_cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def assert_user_error(res, *needles: str) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def nothing_registered(storage: Path) -> bool:
    return not (storage / "artifacts").exists() or not any((storage / "artifacts").iterdir())


@pytest.fixture
def coin_cfg(tmp_path) -> dict:
    data = H.write_coin_data(tmp_path / "data")
    return H.coin_config(data, tmp_path / "model-not-needed")


CASES = {
    "bad_yaml": ("selection: {ratio: [0.1\n", [], ["invalid YAML", "line"]),
    "unknown_key": ("selection:\n  ratioo: 0.2\n", [], ["selection.ratioo", "unknown key"]),
    "k_zero": ("", ["rollout.num_generations=0"], ["rollout.num_generations", "0"]),
    "k_negative": ("", ["rollout.num_generations_val=-3"], ["rollout.num_generations_val", "-3"]),
    "stages_zero": ("", ["train.stages=0"], ["train.stages", "0"]),
    "bad_set": ("", ["selection.ratio"], ["--set", "key=value"]),
    "ratio_out_of_range": ("", ["selection.ratio=1.5"], ["selection.ratio", "1.5"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_one_line_exit_2(case, tmp_path):
    text, sets, needles = CASES[case]
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text or "name: t\n")
    storage = tmp_path / "store"
    args = ["run", "--config", str(cfg), "--storage", str(storage)]
    for s in sets:
        args += ["--set", s]
    t0 = time.perf_counter()
    assert_user_error(run_cli(*args), *needles)
    assert time.perf_counter() - t0 < 30  # rejected before any flow (or model) starts
    assert nothing_registered(storage)


def test_missing_config_file(tmp_path):
    assert_user_error(run_cli("run", "--config", str(tmp_path / "nope.yaml"), "--storage", str(tmp_path / "s")),
                      "nope.yaml", "not found")


def test_missing_dataset_file(tmp_path, coin_cfg):
    coin_cfg["data"]["pool"][0]["path"] = str(tmp_path / "missing.jsonl")
    coin_cfg["model"]["name_or_path"] = "tiny"
    cfg = H.write_config(tmp_path / "run.yaml", coin_cfg)
    storage = tmp_path / "store"
    assert_user_error(run_cli("run", "--config", str(cfg), "--storage", str(storage)), "data.pool[0].path", "missing.jsonl")
    assert nothing_registered(storage)


def test_malformed_dataset_row(tmp_path, coin_cfg):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Pick 1.", "answer": "1"}\n{"question": "Pick 2."\n')
    coin_cfg["data"]["pool"][0]["path"] = str(bad)
    coin_cfg["model"]["name_or_path"] = "tiny"
    cfg = H.write_config(tmp_path / "run.yaml", coin_cfg)
    storage = tmp_path / "store"
    assert_user_error(run_cli("run", "--config", str(cfg), "--storage", str(storage)), "bad.jsonl")
    assert nothing_registered(storage)


def test_unreachable_storage(tmp_path):
    """An S3 endpoint nobody listens on: the probe fails fast with one line naming the URL."""
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard", "AWS_DEFAULT_REGION": "us-east-1"}
    t0 = time.perf_counter()
    assert_user_error(run_cli("run", "--storage", "s3://cropi-nowhere/root", env=env), "s3://cropi-nowhere/root",
                      "not reachable")
    assert time.perf_counter() - t0 < 60


def test_unwritable_storage():
    assert_user_error(run_cli("run", "--storage", "/proc/cropi-store"), "/proc/cropi-store")


def test_lineage_and_inspect_unknown_key(tmp_path):
    storage = str(tmp_path / "store")
    assert_user_error(run_cli("lineage", "ab" * 32, "--storage", storage), "no artifact")
    assert_user_error(run_cli("inspect", "abcdef", "--storage", storage), "abcdef")


def test_parse_sets_values_are_yaml():
    assert parse_sets(["selection.ratio=0.2", "name=x", "data.synthetic.domains=[add, mul]", "train.dynamic_sampling=true"]) == {
        "selection.ratio": 0.2, "name": "x", "data.synthetic.domains": ["add", "mul"], "train.dynamic_sampling": True}


@pytest.mark.parametrize("env_value, expected", [(None, 120.0), ("7", 7.0)])
def test_prefect_server_startup_timeout_reaches_prefect(env_value, expected):
    """The CLI's 120 s startup timeout must be in the environment before Prefect is first imported (Prefect reads
    its settings once, at import): set later, Prefect kept its 20 s and a loaded 2-core machine failed to start
    its temporary server. A value the user exported still wins."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    if env_value is not None:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = env_value
    code = ("import flows.cli\n"  # what `cropi` imports first
            "from prefect.settings import get_current_settings\n"
            "print(get_current_settings().server.ephemeral.startup_timeout_seconds)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) == expected


def test_prefect_server_not_starting_is_one_line(tmp_path):
    """A real temporary server given no time to start (a limit of 0 s): `cropi run` says so in one line and what to
    set (exit 2), instead of Prefect's traceback."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the test harness's server: not used
    env.update(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0", PREFECT_HOME=str(tmp_path / "prefect"))
    out = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--config", "configs/tiny.yaml",
                          "--storage", str(tmp_path / "store")], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "did not start within 0 s" in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_help_lists_commands():
    res = run_cli("--help")
    assert res.exit_code == 0
    for c in ("run", "lineage", "inspect", "ui"):
        assert c in res.output


def test_prefect_yaml_deployments_point_at_flows():
    """Every deployment's entrypoint loads as a Prefect flow and its parameters validate."""
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    repo = Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((repo / "prefect.yaml").read_text())
    assert {d["name"] for d in spec["deployments"]} >= {"tiny-nightly", "evaluate"}
    for d in spec["deployments"]:
        path, func = d["entrypoint"].split(":")
        fl = load_flow_from_entrypoint(f"{repo / path}:{func}")
        params = dict(d.get("parameters", {}))
        if "checkpoint" in fl.parameters.properties:
            params["checkpoint"] = "0" * 64
        fl.validate_parameters(params)  # raises on a bad config / unknown parameter


def test_config_explain_documents_every_field_and_names_a_bad_section():
    from cropi_core.config import explain

    res = run_cli("config", "--explain")
    assert res.exit_code == 0, res.output
    # every leaf field, with its description's first words
    for d in explain():
        assert f"  {d.path}: " in res.stdout, d.path
        assert d.description.split()[0] in res.stdout
    one = run_cli("config", "--explain", "influence.sketch_dim", "--set", "influence.sketch_dim=256")
    assert one.exit_code == 0 and "influence.sketch_dim: " in one.stdout and "selection.ratio" not in one.stdout
    assert "= 256" in one.stdout and "*" in one.stdout  # this config's value, marked as not the default
    assert_user_error(run_cli("config", "--explain", "nope"), "'nope'", "sections: model")
