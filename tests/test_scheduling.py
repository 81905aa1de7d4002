"""Scheduled runs for real: a `prefect server` on a free 127.0.0.1 port, a `process` work pool, deployments made
with `cropi deploy`, a real `prefect worker` that picks them up, `prefect deployment run`, and the Prefect REST
API to check what happened (flow runs, task runs, artifacts, logs). Everything started here is stopped at the end.

The curriculum is the reduced coin setup of `flows_helpers` (1 stage × 2 GRPO steps), so a run takes ~30 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import flows_helpers as H

REPO = Path(__file__).resolve().parents[1]
POOL = "cropi-e2e"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def stop(proc: subprocess.Popen, timeout: float = 40) -> None:
    """SIGTERM the process group `proc` leads, SIGKILL it if it does not exit in time."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # children left in the group (e.g. a flow-run process) go too
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Stack:
    """A Prefect server + (lazily) one process worker, and helpers to drive them from the outside."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api"
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "PREFECT_API_URL": self.api, "PREFECT_HOME": str(tmp / "prefect-home"),
                    "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                    "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_UI_API_URL": self.api}
        self.env.pop("CROPI_FAULT", None)
        self.env.pop("CROPI_STORAGE", None)
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.run_pids: set[int] = set()

    # ---------------------------------------------------------------- processes
    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        return subprocess.Popen(args, env=self.env, stdout=open(self.tmp / log, "ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_server(self) -> None:
        env = dict(self.env)
        env.pop("PREFECT_API_URL")
        self.server = subprocess.Popen([self.exe("prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                        str(self.port)], env=env, stdout=open(self.tmp / "server.log", "ab"),
                                       stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 180
        while time.monotonic() < end:
            assert self.server.poll() is None, self.log("server.log")
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("prefect server did not become healthy:\n" + self.log("server.log"))

    def ensure_worker(self) -> None:
        if self.worker is None:
            self.worker = self._spawn([self.exe("prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
                                      "worker.log")

    def stop_all(self) -> None:
        for proc in (self.worker, self.server):
            if proc is not None:
                stop(proc)

    @staticmethod
    def exe(name: str) -> str:
        p = Path(sys.executable).with_name(name)
        return str(p) if p.exists() else name

    def log(self, name: str) -> str:
        p = self.tmp / name
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def cropi(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """`cropi ARGS` importing this checkout's code (the CLI module run by this interpreter)."""
        return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=REPO)

    def prefect(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.exe("prefect"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    # ---------------------------------------------------------------- REST API
    def _call(self, method: str, path: str, body: dict | None = None):
        """One REST call; retried on 5xx / connection errors (SQLite under a loaded 2-core machine answers 503
        now and then). POSTs that create something carry an idempotency key, so a retry cannot duplicate them."""
        last = None
        for i in range(6):
            try:
                r = httpx.request(method, f"{self.api}{path}", json=body, timeout=30)
                if r.status_code < 500:
                    r.raise_for_status()
                    return r.json()
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.TransportError as err:
                last = repr(err)
            time.sleep(1 + i)
        raise AssertionError(f"{method} {path}: {last}")

    def get(self, path: str):
        return self._call("GET", path)

    def post(self, path: str, body: dict):
        return self._call("POST", path, body)

    def run_deployment(self, name: str) -> str:
        """`prefect deployment run NAME`; returns the flow run id it prints."""
        res = self.prefect("deployment", "run", name)
        assert res.returncode == 0, res.stdout + res.stderr
        m = re.search(r"UUID: ([0-9a-f-]{36})", res.stdout)
        assert m, res.stdout
        return m.group(1)

    def wait(self, run_id: str, timeout: float = 300, states: set[str] = FINAL) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            fr = self.get(f"/flow_runs/{run_id}")
            if fr["infrastructure_pid"]:
                self.run_pids.add(int(str(fr["infrastructure_pid"]).rsplit(":", 1)[-1]))
            if fr["state_type"] in states:
                return fr
            time.sleep(1)
        raise AssertionError(f"flow run {run_id} still {fr['state_type']} after {timeout}s\n" + self.log("worker.log"))

    def tree(self, run_id: str) -> list[dict]:
        """The flow run and all its subflow runs."""
        out, todo = [self.get(f"/flow_runs/{run_id}")], [run_id]
        while todo:
            kids = self.post("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": todo}}, "limit": 200})
            out += kids
            todo = [k["id"] for k in kids]
        return out

    def task_runs(self, run_ids: list[str]) -> list[dict]:
        return self.post("/task_runs/filter", {"flow_runs": {"id": {"any_": run_ids}}, "limit": 200})

    def artifacts(self, run_ids: list[str]) -> list[dict]:
        return self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": run_ids}}, "limit": 200})

    def logs(self, run_ids: list[str]) -> list[str]:
        rows = self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": run_ids}}, "limit": 200, "sort": "TIMESTAMP_DESC"})
        return [r["message"] for r in reversed(rows)]  # the last 200, oldest first

    def wait_logs(self, run_ids: list[str], pred, timeout: float = 30) -> list[str]:
        """The runs' log messages once `pred(messages)` holds (the flow-run process ships its last log batch
        after the final state is set, so logs can trail the state by a few seconds)."""
        end = time.monotonic() + timeout
        while True:
            msgs = self.logs(run_ids)
            if pred(msgs) or time.monotonic() > end:
                return msgs
            time.sleep(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Server + `process` pool + coin data/model; the worker starts with the first deployment. Stopped at the end,
    and nothing it started (server, worker, flow-run processes) is left running."""
    import torch

    tmp = tmp_path_factory.mktemp("sched")
    s = Stack(tmp)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s.start_server()
        res = s.prefect("work-pool", "create", POOL, "--type", "process")
        assert res.returncode == 0, res.stdout + res.stderr
        data = H.write_coin_data(tmp / "data")
        model = H.train_coin_model(tmp / "model", data)
        s.config = H.write_config(tmp / "coin.yaml", H.coin_config(
            data, model, **{"train.stages": 1, "train.steps_per_stage": 2, "train.save_steps": 1}))
        yield s
    finally:
        torch.set_num_threads(threads)
        s.stop_all()
        for name in ("worker.log", "server.log"):
            print(f"--- {name} (tail)\n{s.log(name)[-1500:]}")
    for pid in s.run_pids:
        assert not alive(pid), f"flow-run process {pid} still running"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{s.api}/health", timeout=2)


def summary(store: Path, name: str = "coin") -> dict:
    return json.loads((store / "runs" / name / "summary.json").read_text())


def run_table(stack: Stack, run_id: str) -> dict:
    """The `cropi-<name>-run` table artifact of a scheduled run, as {field: value}."""
    arts = [a for a in stack.artifacts([run_id]) if a["key"] == "cropi-coin-run"]
    assert len(arts) == 1, [a["key"] for a in stack.artifacts([run_id])]
    rows = json.loads(arts[0]["data"]) if isinstance(arts[0]["data"], str) else arts[0]["data"]
    return {r["field"]: r["value"] for r in rows}


def test_deployment_runs_end_to_end_then_computes_nothing(stack, tmp_path):
    """cropi deploy → worker picks up `prefect deployment run` → Completed with checkpoint + report in storage
    and flow run / task runs / artifacts in the API; the second run computes nothing."""
    store = tmp_path / "store"
    res = stack.cropi("deploy", "--config", str(stack.config), "--name", "e2e", "--pool", POOL, "--storage", str(store),
                      "--cron", "0 2 * * *")
    assert res.returncode == 0, res.stderr
    assert f"prefect worker start --pool {POOL}" in res.stdout and "cropi-scheduled/e2e" in res.stdout
    dep = stack.get("/deployments/name/cropi-scheduled/e2e")
    assert dep["work_pool_name"] == POOL and dep["parameters"]["config"] == str(stack.config)
    assert [x["schedule"]["cron"] for x in dep["schedules"]] == ["0 2 * * *"]
    stack.ensure_worker()

    t0 = time.monotonic()
    run_id = stack.run_deployment("cropi-scheduled/e2e")
    fr = stack.wait(run_id)
    first_s = time.monotonic() - t0
    assert fr["state_type"] == "COMPLETED", stack.log("worker.log")
    assert fr["deployment_id"] == dep["id"]

    # storage: the stage's checkpoint (registered, verifiable) and the report
    from storage import open_store

    s = summary(store)
    st = open_store(str(store))
    final = s["final_checkpoint"]
    assert st.manifest(final).kind == "checkpoint" and st.verify(final, "full") == []
    assert final != s["base_checkpoint"] and len(s["stages"]) == 1
    report = Path(s["report"])
    assert report.exists() and "Accuracy vs step" in report.read_text()

    # API: the run's subflows, task runs and artifacts
    flows = stack.tree(run_id)
    names = {f["name"] for f in flows}
    assert {"curriculum-coin", "stage-0"} <= names and all(f["state_type"] == "COMPLETED" for f in flows)
    trs = stack.task_runs([f["id"] for f in flows])
    by_name = {t["name"]: t for t in trs}
    assert {"train-s0", "selection-s0", "scores-s0", "eval-test/target-s1"} <= set(by_name)
    assert all(t["state_type"] == "COMPLETED" for t in trs)
    assert "gpu" in by_name["train-s0"]["tags"] and "gpu" not in by_name["selection-s0"]["tags"]
    keys = {a["key"] for a in stack.artifacts([f["id"] for f in flows])}
    assert {"cropi-coin-report", "cropi-coin-accuracy", "cropi-coin-run"} <= keys
    table = run_table(stack, run_id)
    assert table["computed"] > 0 and table["final checkpoint"] == final

    # the second run: Completed, nothing computed
    t0 = time.monotonic()
    run2 = stack.run_deployment("cropi-scheduled/e2e")
    assert stack.wait(run2)["state_type"] == "COMPLETED", stack.log("worker.log")
    second_s = time.monotonic() - t0
    s2 = summary(store)
    assert s2["computed"] == [] and s2["final_checkpoint"] == final
    assert run_table(stack, run2)["computed"] == 0
    assert any(" 0 computed" in m for m in stack.wait_logs([run2], lambda ms: any(" 0 computed" in m for m in ms)))
    print(f"first run {first_s:.1f}s, second run {second_s:.1f}s (trigger to Completed)")


def test_missing_config_fails_the_run_with_one_line(stack, tmp_path):
    """A deployment whose config disappeared: the run is Failed and its log says why in one line."""
    cfg = tmp_path / "gone.yaml"
    cfg.write_text(stack.config.read_text())
    res = stack.cropi("deploy", "--config", str(cfg), "--name", "gone", "--pool", POOL, "--storage", str(tmp_path / "s"))
    assert res.returncode == 0, res.stderr
    cfg.unlink()
    stack.ensure_worker()
    run_id = stack.run_deployment("cropi-scheduled/gone")
    fr = stack.wait(run_id)
    assert fr["state_type"] == "FAILED"
    assert fr["state"]["message"] == f"error: {cfg}: config file not found"
    msgs = stack.wait_logs([run_id], lambda ms: any(m.startswith("error:") for m in ms))
    errors = [m for m in msgs if m.startswith("error:")]
    assert errors == [f"error: {cfg}: config file not found"]
    assert not (tmp_path / "s").exists()  # nothing computed or registered


def test_prefect_deploy_all_from_prefect_yaml(stack):
    """`prefect deploy --all` still works from prefect.yaml: `paper` names the paper config, `tiny-nightly` the tiny
    one on a nightly cron, both through the scheduled flow (not run here: `paper` needs Qwen2.5-1.5B and GPUs)."""
    for pool in ("cropi", "cropi-gpu"):
        res = stack.prefect("work-pool", "create", pool, "--type", "process")
        assert res.returncode == 0, res.stdout + res.stderr
    stack.env["CROPI_CHECKOUT"] = str(REPO)
    res = stack.prefect("--no-prompt", "deploy", "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    paper = stack.get("/deployments/name/cropi-scheduled/paper")
    nightly = stack.get("/deployments/name/cropi-scheduled/tiny-nightly")
    assert paper["parameters"]["config"] == "configs/qwen2.5-1.5b-paper.yaml" and paper["work_pool_name"] == "cropi-gpu"
    assert nightly["parameters"]["config"] == "configs/tiny.yaml"
    assert [x["schedule"]["cron"] for x in nightly["schedules"]] == ["0 2 * * *"]
    assert paper["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)


def test_cancel_mid_stage_leaves_nothing_half_registered_and_next_run_resumes(stack, tmp_path):
    """Cancel (as the UI's button does: state Cancelling via the API) while GRPO training is mid-stage; every
    artifact left in storage is complete and verifies, and the next run of the deployment completes computing only
    what was missing."""
    from storage import open_store

    store = tmp_path / "store"
    steps = 300  # long enough (≈ 15 s at 20 steps/s on a fast CPU) that the cancel lands inside training
    res = stack.cropi("deploy", "--config", str(stack.config), "--name", "cancel", "--pool", POOL, "--storage",
                      str(store), "--set", f"train.steps_per_stage={steps}", "--set", "train.save_steps=2")
    assert res.returncode == 0, res.stderr
    stack.ensure_worker()
    run_id = stack.run_deployment("cropi-scheduled/cancel")
    end = time.monotonic() + 240
    # mid-stage: any intermediate checkpoint (older ones are rotated away, so not one fixed step number)
    while not list((store / "work" / "train").glob("*/checkpoints/checkpoint-*")):
        assert time.monotonic() < end, stack.log("worker.log")
        assert stack.get(f"/flow_runs/{run_id}")["state_type"] not in FINAL, stack.log("worker.log")
        time.sleep(0.2)
    stack.post(f"/flow_runs/{run_id}/set_state", {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True})
    fr = stack.wait(run_id)
    assert fr["state_type"] == "CANCELLED", stack.log("worker.log")
    pid = int(str(fr["infrastructure_pid"]).rsplit(":", 1)[-1])
    assert not alive(pid)

    st = open_store(str(store))
    before = {k for k in st.keys() if st.exists(k)}  # registered = manifest written (written last)
    assert len(st.find("checkpoint")) >= 1  # datasets, base checkpoint, rollouts, grads, ... were registered
    for key in before:
        assert st.verify(key, "full") == [], key  # each registered artifact is complete
    assert not (store / "runs" / "coin" / "summary.json").exists()  # the run did not finish

    run2 = stack.run_deployment("cropi-scheduled/cancel")
    assert stack.wait(run2)["state_type"] == "COMPLETED", stack.log("worker.log")
    s = summary(store)
    computed = {k for _, k in s["computed"]}
    assert computed and not computed & before  # only what was missing
    logs = "\n".join(stack.wait_logs([f["id"] for f in stack.tree(run2)], lambda ms: any("done in" in m for m in ms)))
    if "train" in {t for t, _ in s["computed"]}:  # killed inside training: resumed from its mid-stage checkpoint
        assert f"train stage 0: step {steps}/{steps}" in logs and f"train stage 0: step 1/{steps}" not in logs
    else:  # training finished during the grace period: its checkpoint was complete and is reused
        assert s["final_checkpoint"] in before
    assert st.verify(s["final_checkpoint"], "full") == []


def test_gpu_tag_concurrency_limit_serialises_model_tasks(stack, tmp_path):
    """`prefect concurrency-limit create gpu 1`, two runs at once on one worker: their model (`gpu`-tagged) task
    runs never overlap in time (start/end from the API), while the two flow runs do."""
    res = stack.cropi("deploy", "--config", str(stack.config), "--name", "gpu", "--pool", POOL)
    assert res.returncode == 0, res.stderr
    res = stack.prefect("concurrency-limit", "create", "gpu", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    stack.ensure_worker()
    try:
        dep = stack.get("/deployments/name/cropi-scheduled/gpu")
        runs = [stack.post(f"/deployments/{dep['id']}/create_flow_run",
                           {"parameters": {**dep["parameters"], "storage": str(tmp_path / f"store-{i}")},
                            "idempotency_key": f"gpu-{tmp_path.name}-{i}"})["id"]
                for i in range(2)]
        for r in runs:
            assert stack.wait(r)["state_type"] == "COMPLETED", stack.log("worker.log")
    finally:
        stack.prefect("concurrency-limit", "delete", "gpu")

    from datetime import datetime

    def ts(x: str) -> float:
        return datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp()

    spans, windows = [], []
    for r in runs:
        flows = stack.tree(r)
        windows.append((ts(flows[0]["start_time"]), ts(flows[0]["end_time"])))
        gpu = [t for t in stack.task_runs([f["id"] for f in flows]) if "gpu" in t["tags"]]
        assert len(gpu) >= 6 and all(t["state_type"] == "COMPLETED" for t in gpu)
        spans += [(ts(t["start_time"]), ts(t["end_time"]), r, t["name"]) for t in gpu]
    assert windows[0][0] < windows[1][1] and windows[1][0] < windows[0][1]  # the runs were concurrent
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        assert a[1] <= b[0], f"{a[3]} ({a[2][:8]}) overlaps {b[3]} ({b[2][:8]})"
    assert {s[2] for s in spans} == set(runs)
    overlap = min(windows[0][1], windows[1][1]) - max(windows[0][0], windows[1][0])
    print(f"{len(spans)} gpu task runs from 2 runs overlapping {overlap:.1f}s: none overlapped, "
          f"min gap {min(b[0] - a[1] for a, b in zip(spans, spans[1:])):.3f}s")


# ---------------------------------------------------------------- fast checks (no server)
def test_prefect_yaml_deployments_name_their_config_files():
    """`paper` runs configs/qwen2.5-1.5b-paper.yaml and `tiny-nightly` configs/tiny.yaml (not tiny defaults
    under another name): each curriculum deployment's config parameter resolves to a file that validates."""
    import yaml

    from cropi_core.config import load_config
    from flows.scheduled import resolve_config_path

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    want = {"paper": "qwen2.5-1.5b-paper", "tiny-nightly": "tiny"}
    for name, run_name in want.items():
        d = deps[name]
        assert d["entrypoint"] == "flows/scheduled.py:scheduled_curriculum"
        path = resolve_config_path(d["parameters"]["config"])
        assert path == REPO / "configs" / f"{'qwen2.5-1.5b-paper' if name == 'paper' else 'tiny'}.yaml"
        assert load_config(path, check_files=False).name == run_name
    assert deps["tiny-nightly"]["schedules"][0]["cron"] == "0 2 * * *"


def test_model_tasks_carry_the_gpu_tag():
    """The tag is what the `gpu` concurrency limit and Ray's GPU request (flows.runtime.Tracker) both read."""
    from tasks import bootstrap, byot, dataset, evaluate, grads, rollouts, selection, train
    from tasks.common import GPU_TAG

    tasks = [bootstrap.base_model, dataset.dataset, evaluate.evaluate, grads.calibration, grads.grads_chunk, grads.grads_finalize,
             rollouts.rollouts, selection.scores, selection.selection, selection.health, train.train,
             byot.import_rollouts]
    tagged = {t.name for t in tasks if GPU_TAG in t.tags}
    assert tagged == {"bootstrap", "rollouts", "calibration", "grads-chunk", "train", "evaluate", "health"}


@pytest.mark.parametrize("args, message", [
    (["--cron", "61 * * * *"], "error: --cron '61 * * * *': not a valid cron expression"),
    (["--cron", "0 2 * * *", "--timezone", "Mars/Olympus"], "error: --timezone 'Mars/Olympus': not an IANA timezone"),
    (["--pool-type", "kubernetes"], "error: --pool-type 'kubernetes': unsupported work pool type"),
    (["--pool-type", "warp-drive"], "error: --pool-type 'warp-drive': unknown work pool type"),
    (["--set", "selection.ratio=1.5"], "selection.ratio: must be in (0, 1] (got 1.5)"),
    (["--name", "a/b"], "error: --name 'a/b'"),
])
def test_deploy_refuses_bad_input_with_one_line(args, message, monkeypatch):
    """Checked before the server is contacted (nothing registered): one `error:` line on stderr, exit code 2."""
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.chdir(REPO)
    base = ["--config", "configs/tiny.yaml"] + ([] if "--name" in args else ["--name", "x"])
    res = CliRunner().invoke(app, ["deploy", *base, *args])
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr


def test_deploy_missing_config_and_missing_server(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("PREFECT_API_URL", None)
    res = subprocess.run([sys.executable, "-m", "flows.cli", "deploy", "--config", "configs/nope.yaml", "--name", "x"],
                         env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == "error: configs/nope.yaml: config file not found"
    res = subprocess.run([sys.executable, "-m", "flows.cli", "deploy", "--config", "configs/tiny.yaml", "--name", "x"],
                         env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip().startswith("error: PREFECT_API_URL is not set")
