"""Two runs on one storage root: the work folders of model tasks (bootstrap, mid-stage training checkpoints) are
taken in turn, never shared; a killed holder releases its lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cropi_core.config import load_config
from tasks.common import work_lock

REPO = Path(__file__).resolve().parents[1]
HOLDER = r"""
import sys, time
from cropi_core.config import load_config
from tasks.common import work_lock
cfg = load_config(None, {"storage.root": sys.argv[1]}, check_files=False)
with work_lock(cfg, "train", "abc"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_work_lock_waits_for_another_process_and_survives_its_kill(tmp_path):
    cfg = load_config(None, {"storage.root": str(tmp_path / "store")}, check_files=False)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "store")], env=env, cwd=REPO,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        got = []

        def kill_later() -> None:
            time.sleep(1.0)
            p.send_signal(signal.SIGKILL)  # a pre-empted run: its lock goes with it

        import threading

        threading.Thread(target=kill_later, daemon=True).start()
        t0 = time.monotonic()
        with work_lock(cfg, "train", "abc"):
            got.append(time.monotonic() - t0)
        assert 0.8 < got[0] < 30
        with work_lock(cfg, "train", "other"):  # other keys never wait
            pass
    finally:
        p.kill()
        p.wait()
