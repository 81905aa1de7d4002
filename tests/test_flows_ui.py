"""The Prefect UI shows a cropi run: a real `prefect server`, a small `cropi run` against it, and headless
Chromium (Debian `chromium`, installed here when missing) driven over the DevTools protocol.

Slow (~2-3 min on 2 cores): run with `scripts/test.sh -m slow tests/test_flows_ui.py`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

import flows_helpers as H

pytestmark = pytest.mark.slow


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ensure_chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:  # test setup: the Debian package (needs root, as in CI containers)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=False, capture_output=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, capture_output=True, env=env)
        exe = shutil.which("chromium")
    assert exe, "chromium could not be installed"
    return exe


class Browser:
    """Minimal Chrome DevTools Protocol client over one page (websockets, synchronous)."""

    def __init__(self, exe: str, profile: Path) -> None:
        from websockets.sync.client import connect

        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--remote-debugging-port={self.port}", f"--user-data-dir={profile}", "--window-size=1600,1100",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        page = None
        for _ in range(200):
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json", timeout=2))
                page = next(t for t in targets if t["type"] == "page")
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        assert page, "chromium DevTools endpoint did not come up"
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                return msg.get("result", {})

    def eval(self, js: str):
        return self.call("Runtime.evaluate", expression=js, returnByValue=True).get("result", {}).get("value")

    def open(self, url: str, ready_js: str, timeout: float = 90) -> bool:
        self.call("Page.navigate", url=url)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.eval(ready_js):
                return True
            time.sleep(0.5)
        return False

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        self.ws.close()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(tmp_path):
    """`cropi ui --port P` (prefect server on 127.0.0.1 with its own PREFECT_HOME); yields the URL it prints."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    cropi = Path(sys.executable).with_name("cropi")
    proc = subprocess.Popen([str(cropi), "ui", "--port", str(port), "--timeout", "240"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url, lines = None, []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Prefect UI: "):
                url = line.split("Prefect UI: ", 1)[1].strip()
                break
        assert url == f"http://127.0.0.1:{port}", "".join(lines)[-3000:]
        yield url
    finally:
        os.kill(proc.pid, 15)  # `cropi ui` stops its server on SIGTERM
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert httpx_down(url)


def httpx_down(url: str | None) -> bool:
    """True once nothing answers at `url` (the server went away with `cropi ui`)."""
    if url is None:
        return True
    for _ in range(30):
        try:
            httpx.get(f"{url}/api/health", timeout=1)
        except httpx.HTTPError:
            return True
        time.sleep(1)
    return False


def test_ui_shows_task_graph_artifacts_and_asset_events(server, tmp_path):
    exe = ensure_chromium()
    data = H.write_coin_data(tmp_path / "data")
    model = H.train_coin_model(tmp_path / "model", data)
    cfg = H.write_config(tmp_path / "coin.yaml", H.coin_config(data, model, **{"train.stages": 1}))
    storage = tmp_path / "store"
    env = {**os.environ, "PREFECT_API_URL": f"{server}/api", "OMP_NUM_THREADS": "1"}
    cropi = Path(sys.executable).with_name("cropi")
    res = subprocess.run([str(cropi), "run", "--config", str(cfg), "--storage", str(storage)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]

    runs = httpx.post(f"{server}/api/flow_runs/filter", json={"limit": 20}, timeout=30).json()
    run = next(r for r in runs if r["name"] == "curriculum-coin")
    assert run["state_type"] == "COMPLETED"

    browser = Browser(exe, tmp_path / "chrome-profile")
    try:
        assert browser.open(f"{server}/runs/flow-run/{run['id']}",
                            "document.querySelector('.flow-run-graph canvas') !== null "
                            "&& document.body.innerText.includes('curriculum-coin')"), "flow-run page did not render"
        time.sleep(3)  # let the graph lay out its nodes before the screenshot
        shot = browser.screenshot(tmp_path / "flow-run.png")
        text = browser.eval("document.body.innerText")
        assert "Completed" in text and "Task Runs" in text and "Artifacts" in text
        assert browser.open(f"{server}/artifacts", "document.body.innerText.includes('cropi-coin-report')"), \
            "keyed artifacts not listed"
        browser.screenshot(tmp_path / "artifacts.png")
        ids = {}
        for key in ("cropi-coin-accuracy", "cropi-coin-report"):
            found = httpx.post(f"{server}/api/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}, "limit": 1},
                               timeout=30).json()
            ids[key] = found[0]["id"]
        assert browser.open(f"{server}/artifacts/artifact/{ids['cropi-coin-accuracy']}",
                            "document.body.innerText.includes('test/target') "
                            "&& document.body.innerText.includes('test_untargeted')"), "accuracy table did not render"
        browser.screenshot(tmp_path / "artifact-accuracy.png")
        assert browser.open(f"{server}/artifacts/artifact/{ids['cropi-coin-report']}",
                            "Array.from(document.images).filter(i => i.src.startsWith('data:image/png') "
                            "&& i.naturalWidth > 100).length >= 6"), "report plots did not render"
        browser.screenshot(tmp_path / "artifact-report.png")
    finally:
        browser.close()
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"UI screenshots: {tmp_path}")

    # REST: asset materialisations with upstream relations (final checkpoint ← previous checkpoint + selection)
    from storage import open_store
    from tasks.common import asset_key

    store = open_store(str(storage))
    final = json.loads((storage / "runs" / "coin" / "summary.json").read_text())["final_checkpoint"]
    want = asset_key(store.uri(final))
    body = {"filter": {"event": {"name": ["prefect.asset.materialization.succeeded"]}, "any_resource": {"id": [want]}},
            "limit": 50}
    events = []
    for _ in range(60):
        events = [e for e in httpx.post(f"{server}/api/events/filter", json=body, timeout=30).json()["events"]
                  if e["resource"]["prefect.resource.id"] == want]
        if events:
            break
        time.sleep(1)
    assert events
    upstream = {x["prefect.resource.id"] for x in events[0]["related"] if x.get("prefect.resource.role") == "asset"}
    assert upstream == {asset_key(store.uri(p)) for p in store.manifest(final).parents}
