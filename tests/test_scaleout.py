"""Scale-out by config alone: a reduced curriculum (the flows tests' setup) on a local 2-CPU Ray cluster (prefect-ray's
RayTaskRunner) against a real S3 server on loopback (SeaweedFS, tests/seaweed.py) gives the same artifact keys and the same
gradient bytes as the local runner on a local folder; and SIGKILLing a Ray worker while it computes a gradient
chunk still completes (Ray re-runs the task, storage-first chunks) with identical results."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import numpy as np
import psutil
import pytest

from cropi_core.config import load_config
from flows.curriculum import run_curriculum
from storage import open_store

import flows_helpers as H

BUCKET = "cropi-scaleout"
RAY = {"runner.kind": "ray", "runner.num_cpus": 2}


@pytest.fixture(scope="module")
def coin(tmp_path_factory):
    """The flows tests' reduced setup (tests/flows_helpers.py): a tiny Qwen2 warmed up in seconds on a task where
    most prompts have 0 < pass rate < 1, 48 pool prompts (3 gradient chunks of 16), 2 stages x 4 GRPO steps.
    (The embedded default's own bootstrap needs minutes before any validation prompt becomes scorable.)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("coin")
    data = H.write_coin_data(root / "data")
    model = H.train_coin_model(root / "model", data)
    yield H.write_config(root / "coin.yaml", H.coin_config(data, model, name="scaleout"))
    torch.set_num_threads(threads)


def config(path, root: str, **extra):
    return load_config(path, {"storage.root": root, **extra})


@pytest.fixture(scope="module")
def s3(prefect_api, seaweed):
    """The session's SeaweedFS server on 127.0.0.1 (tests/seaweed.py); credentials and endpoint in the
    environment, as a user would set them (Ray workers inherit the driver's environment)."""
    import s3fs

    env = seaweed.env()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    yield seaweed.endpoint
    s3fs.S3FileSystem.clear_instance_cache()
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def local_run(coin, tmp_path_factory, prefect_api):
    """The reference: local runner (thread pool, one torch thread), local folder."""
    root = str(tmp_path_factory.mktemp("local-store"))
    t = time.perf_counter()
    summary = run_curriculum(config(coin, root))
    return {"root": root, "summary": summary, "seconds": time.perf_counter() - t}


def artifacts(root: str) -> dict[str, str]:
    """key -> kind of every complete artifact in a store."""
    return {m.key: m.kind for m in open_store(root).find()}


def grads_bytes(root: str) -> dict[str, bytes]:
    store = open_store(root)
    return {m.key: store.read_array(m.key, "grads").tobytes() for m in store.find("grads")}


def assert_same_results(run: dict, ref: dict) -> None:
    a, b = artifacts(run["root"]), artifacts(ref["root"])
    assert a == b  # same keys, same kinds: every artifact content-hashed the same
    assert sorted(set(a.values())) == ["checkpoint", "dataset", "evaluation", "grads", "health", "rollouts",
                                       "scores", "selection"]
    g, h = grads_bytes(run["root"]), grads_bytes(ref["root"])
    assert len(g) == 2 * 2 and g.keys() == h.keys()  # 2 stages × (pool + the targeted validation set)
    for k in g:
        assert g[k] == h[k], f"gradient bytes differ for {k[:12]}"
        assert np.isfinite(np.frombuffer(g[k], np.float16)).any()
    s, r = run["summary"], ref["summary"]
    assert s["final_checkpoint"] == r["final_checkpoint"]
    assert [st["selected_ids"] for st in s["stages"]] == [st["selected_ids"] for st in r["stages"]]


def test_ray_on_s3_equals_local(coin, local_run, s3):
    # a fresh prefix: the bucket is shared by the module's tests, and this run must compute everything itself
    root = f"s3://{BUCKET}/equal-{uuid.uuid4().hex[:8]}"
    t = time.perf_counter()
    summary = run_curriculum(config(coin, root, **RAY))
    run = {"root": root, "summary": summary, "seconds": time.perf_counter() - t}
    print(f"\nlocal runner {local_run['seconds']:.0f}s, ray+s3 {run['seconds']:.0f}s")
    assert summary["counts"]["failed"] == 0
    assert_same_results(run, local_run)
    # refs travel, not arrays: gradient chunks and training ran in Ray worker processes, which opened the s3 store
    # themselves; what they computed comes back as their task runs' final states (the run's tally), and what it
    # cost is in the manifests they wrote
    computed = {t for t, _ in summary["computed"]}
    assert {"grads-chunk", "train", "grads"} <= computed and summary["counts"]["reused"] == 0
    store = open_store(root)
    assert store.fs.ls(root.removeprefix("s3://"))
    for m in store.find("grads"):
        assert all(c["seconds"] > 0 for c in m.meta["compute"]["chunks"]) and not m.meta["compute"].get("partial")


def ray_workers() -> list[psutil.Process]:
    """Ray worker processes (descendants of this driver) currently running a grads-chunk task."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any("ray::grads-chunk" in part for part in p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_killed_ray_worker_during_grads_chunks(coin, local_run, tmp_path):
    """SIGKILL the worker computing a gradient chunk (stage 0, pool, first time a chunk task shows up)."""
    root = str(tmp_path / "store")
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            for p in ray_workers():
                time.sleep(0.5)  # let it get into the chunk (model load / sketch)
                try:
                    p.send_signal(signal.SIGKILL)
                    killed.append(p.pid)
                except psutil.Error:
                    continue
                break
            stop.wait(0.05)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        summary = run_curriculum(config(coin, root, **RAY))
    finally:
        stop.set()
        th.join()
    assert killed, "no Ray worker was seen running a grads-chunk task"
    assert summary["counts"]["failed"] == 0
    assert_same_results({"root": root, "summary": summary}, local_run)


def test_gpu_tasks_request_gpus_through_remote_options(tmp_path, prefect_api):
    """`runner.gpus_per_task > 0` on Ray: model tasks (tagged `gpu`) are scheduled with num_gpus (a local Ray cluster told it has
    one logical GPU; no real GPU needed), other tasks are not."""
    import ray
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect_ray import RayTaskRunner

    from flows.runtime import Tracker
    from tasks.common import GPU_TAG

    def assigned() -> dict:
        return dict(ray.get_runtime_context().get_assigned_resources())

    model_task = task(name="grads-chunk", tags=[GPU_TAG], cache_policy=NO_CACHE)(assigned)  # as every model task
    light_task = task(name="scores", cache_policy=NO_CACHE)(assigned)
    cfg = load_config(None, {"storage.root": str(tmp_path / "store"), "runner.kind": "ray", "runner.gpus_per_task": 0.5})

    @flow(task_runner=RayTaskRunner(init_kwargs={"num_cpus": 2, "num_gpus": 1, "include_dashboard": False}))
    def probe() -> tuple[dict, dict]:
        tr = Tracker(cfg)
        return tr.submit(model_task).result(), tr.submit(light_task).result()

    heavy, light = probe()
    assert heavy.get("GPU") == 0.5
    assert "GPU" not in light


def test_train_use_vllm_option():
    """`train.use_vllm` reaches TRL's GRPOConfig; without vLLM installed it is a one-line ConfigError."""
    import importlib.util

    from cropi_core.config import TrainConfig
    from cropi_core.errors import ConfigError
    from cropi_core.training import _vllm_args

    assert _vllm_args(TrainConfig()) == {}
    cfg = TrainConfig(use_vllm=True, vllm_gpu_memory_utilization=0.5)
    assert TrainConfig().hashable() == cfg.hashable()  # a backend choice (like model.device): same keys
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match=r"train.use_vllm.*cropi\[vllm\]"):
            _vllm_args(cfg)
    else:
        assert _vllm_args(cfg) == {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.5}


def test_train_mixed_precision_option(tmp_path):
    """`train.mixed_precision: bf16` reaches TRL as bf16=True and changes the checkpoint key; the default "no"
    leaves the key exactly as it was before the option existed."""
    from cropi_core.config import Section, TrainConfig
    from cropi_core.training import _grpo_args

    plain = TrainConfig()
    assert "mixed_precision" not in plain.hashable()  # keys from before the option stay valid
    bf16 = TrainConfig(mixed_precision="bf16")
    assert bf16.hashable() == {**plain.hashable(), "mixed_precision": "bf16"}
    assert _grpo_args(plain, tmp_path, False).bf16 is False
    assert _grpo_args(bf16, tmp_path, False).bf16 is True
