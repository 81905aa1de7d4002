"""The store on s3:// against a real S3 server (SeaweedFS `weed mini` on loopback, tests/seaweed.py) via s3fs."""

import json
import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

from storage import StorageError, artifact_key, gc, lineage, open_store, render_lineage_text

REPO = Path(__file__).resolve().parents[1]
from seaweed import CREDS


@pytest.fixture(scope="module")
def s3_endpoint(seaweed):
    """The session's SeaweedFS server (tests/seaweed.py), its credentials in the environment for this module."""
    import s3fs

    old = {k: os.environ.get(k) for k in seaweed.creds}
    os.environ.update(seaweed.creds)
    s3fs.S3FileSystem.clear_instance_cache()
    yield seaweed.endpoint
    s3fs.S3FileSystem.clear_instance_cache()
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture
def store(s3_endpoint):
    return open_store(f"s3://cropi-test/run-{uuid.uuid4().hex[:8]}", storage_options={"endpoint_url": s3_endpoint},
                      verify="full")


def test_s3_round_trip_files_arrays_ragged(store, tmp_path, monkeypatch):
    ds = artifact_key("dataset", parents=[], config={"n": 2})
    with store.writer("dataset", ds, parents=[], config={"n": 2}, meta={"run": "s3"}) as w:
        w.put_json("records.json", [{"id": "a"}, {"id": "b"}])
        (tmp_path / "f.txt").write_text("from a local file")
        w.put_file("f.txt", tmp_path / "f.txt")
        w.put_ragged("tokens", [np.arange(3), np.arange(5)])
    assert store.uri(ds).startswith("s3://cropi-test/") and store.exists(ds)
    assert store.read_json(ds, "records.json") == [{"id": "a"}, {"id": "b"}]
    assert [t.tolist() for t in store.read_ragged(ds, "tokens")] == [[0, 1, 2], [0, 1, 2, 3, 4]]
    monkeypatch.setenv("CROPI_CACHE", str(tmp_path / "cache"))
    local = store.local_path(ds)
    assert (local / "f.txt").read_text() == "from a local file" and str(local).startswith(str(tmp_path / "cache"))

    g = artifact_key("grads", parents=[ds], config={"k": 8})
    a = store.array(g, "grads", kind="grads", shape=(25, 8), chunk_rows=10, parents=[ds], config={"k": 8})
    data = np.random.default_rng(0).standard_normal((25, 8)).astype(np.float16)
    # chunks written by independent writers: each opens the staging array itself
    for i in (2, 0, 1):
        w_i = store.array(g, "grads", kind="grads", shape=(25, 8), chunk_rows=10, parents=[ds], config={"k": 8})
        lo, hi = w_i.chunk_rows(i)
        w_i.write_chunk(i, data[lo:hi])
    assert a.missing_chunks() == []
    a.finalize()
    assert store.read_array(g, "grads").tobytes() == data.tobytes()
    assert [m.kind for m in store.find()] == ["dataset", "grads"]
    assert "dataset" in render_lineage_text(lineage(store, g))


def test_s3_corruption_first_writer_wins_and_gc(store):
    key = artifact_key("selection", parents=[], config={"ratio": 0.5})
    with store.writer("selection", key, parents=[], config={"ratio": 0.5}) as w1:
        w1.put_bytes("ids.json", b'["a"]')
    with store.writer("selection", key, parents=[], config={"ratio": 0.5}) as w2:
        w2.put_bytes("ids.json", b'["a"]')
    assert not w1.reused and w2.reused and not store.fs.exists(w2.dir)
    mpath = f"{store.artifact_dir(key)}/manifest.json"
    raw = store.fs.cat_file(mpath)
    store.fs.pipe_file(mpath, raw[:40])
    with pytest.warns(UserWarning, match=f"corrupt manifest s3://.*{key}"):
        assert not store.exists(key)
    store.fs.pipe_file(mpath, raw)
    assert store.exists(key)
    payload = f"{store.artifact_dir(key)}/{store.manifest(key).payload}/ids.json"
    store.fs.pipe_file(payload, b'["b"]')
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert not store.exists(key)
    store.fs.pipe_file(payload, b'["a"]')
    incomplete = artifact_key("selection", parents=[], config={"ratio": 0.9})
    store.fs.pipe_file(f"{store.artifact_dir(incomplete)}/w-dead/ids.json", b"[]")
    assert gc(store, older_than_hours=1) == []  # too recent
    assert gc(store, older_than_hours=0) == [incomplete]
    assert store.exists(key) and store.keys() == [key]
    # a reader meeting corrupt bytes refuses them and moves the manifest aside: the next run recomputes
    store.fs.pipe_file(payload, b'["b"]')
    with pytest.raises(StorageError, match="corrupt.*moved aside"):
        store.read_bytes(key, "ids.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert store.state(key) == "damaged"


CHUNK_WRITER = r"""
import sys, numpy as np
from storage import open_store, artifact_key
root, i = sys.argv[1], int(sys.argv[2])
key = artifact_key("grads", parents=[], config={"proc": True})
s = open_store(root)  # endpoint from AWS_ENDPOINT_URL, credentials from AWS_* env
a = s.array(key, "grads", kind="grads", shape=(20, 4), chunk_rows=10, parents=[], config={"proc": True})
a.write_chunk(i, np.full((10, 4), i, dtype=np.float16))
print("ok")
"""


def test_s3_chunks_from_separate_processes(s3_endpoint):
    root = f"s3://cropi-test/procs-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **CREDS, "AWS_ENDPOINT_URL": s3_endpoint}
    procs = [subprocess.Popen([sys.executable, "-c", CHUNK_WRITER, root, str(i)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and "ok" in out, err[-2000:]
    store = open_store(root, storage_options={"endpoint_url": s3_endpoint}, verify="full")
    key = artifact_key("grads", parents=[], config={"proc": True})
    a = store.array(key, "grads", kind="grads", shape=(20, 4), chunk_rows=10, parents=[], config={"proc": True})
    assert a.missing_chunks() == []
    a.finalize()
    out = store.read_array(key, "grads")
    assert out[:10].tolist() == [[0.0] * 4] * 10 and out[10:].tolist() == [[1.0] * 4] * 10


FETCHER = """
import json, sys, time
from pathlib import Path
from storage import open_store
url, endpoint, key, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
store = open_store(url, storage_options={"endpoint_url": endpoint}, verify="full")
time.sleep(max(0.0, start - time.time()))
for _ in range(20):
    p = store.local_path(key)
    assert (p / "f.bin").read_bytes() == bytes(range(256)) * 4000, "payload differs"
    assert len(json.loads((p / "records.json").read_text())) == 50
    for marker in p.parent.glob(".verified*"):  # make the next round race to reinstall the copy
        marker.unlink(missing_ok=True)
"""


def test_concurrent_local_copies_of_a_remote_artifact(store, s3_endpoint, tmp_path):
    """Ray workers on one node fetch the same remote checkpoint at once. Every process must always see a complete
    folder: an installed copy is never deleted under a reader (CI once failed with HF reading a vanished folder)."""
    key = artifact_key("checkpoint", parents=[], config={"race": 1})
    with store.writer("checkpoint", key, parents=[], config={"race": 1}) as w:
        w.put_bytes("f.bin", bytes(range(256)) * 4000)
        w.put_json("records.json", [{"i": i} for i in range(50)])
    env = {**os.environ, "CROPI_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    import time
    start = time.time() + 4.0
    procs = [subprocess.Popen([sys.executable, "-c", FETCHER, store.url, s3_endpoint, key, str(start)], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errs = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in errs), [e.strip().splitlines()[-1] for rc, e in errs if rc]
    left = [p.name for p in (tmp_path / "cache" / key).iterdir() if p.name.startswith((".tmp-", ".stale-"))]
    assert left == []


def test_seaweed_is_loopback_only_authenticated_and_honours_if_none_match(seaweed, s3_endpoint):
    """What the manifest commit relies on, checked on the server itself: a PUT with `If-None-Match: *` of an
    existing key is refused (412), so the first complete manifest wins without a check-then-act window."""
    import botocore.exceptions

    from seaweed import s3_client

    assert seaweed.listening() and all(a.startswith("127.0.0.1:") for a in seaweed.listening())
    c = s3_client(s3_endpoint)
    bad = s3_client(s3_endpoint, "nobody", "wrong")
    with pytest.raises(botocore.exceptions.ClientError):
        bad.put_object(Bucket="cropi-test", Key="intruder", Body=b"x")
    key = f"inm-{uuid.uuid4().hex[:8]}"
    c.put_object(Bucket="cropi-test", Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError, match="PreconditionFailed"):
        c.put_object(Bucket="cropi-test", Key=key, Body=b"second", IfNoneMatch="*")
    assert c.get_object(Bucket="cropi-test", Key=key)["Body"].read() == b"first"


COMMITTER = r"""
import json, sys, time
from storage import open_store, artifact_key
root, i, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = open_store(root, verify="full")
key = artifact_key("selection", parents=[], config={"race": True})
w = s.writer("selection", key, parents=[], config={"race": True})
with w:
    w.put_json("ids.json", {"writer": i})
    time.sleep(max(0.0, start - time.time()))   # every writer commits its manifest at the same moment
print(json.dumps({"writer": i, "reused": w.reused, "payload": w.payload, "in_force": w.manifest.payload}))
"""


def test_concurrent_writer_processes_first_manifest_wins(s3_endpoint):
    """6 processes write the same artifact (each its own payload) and commit at the same instant: exactly one
    manifest is created, the other 5 see it (If-None-Match refused their PUT), verify it, reuse it and delete
    their own payload; readers get the winner's bytes."""
    import time

    root = f"s3://cropi-test/commit-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **CREDS, "AWS_ENDPOINT_URL": s3_endpoint, "PYTHONPATH": str(REPO)}
    start = time.time() + 6.0
    procs = [subprocess.Popen([sys.executable, "-c", COMMITTER, root, str(i), str(start)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    winners = [o for o in outs if not o["reused"]]
    assert len(winners) == 1, outs
    assert {o["in_force"] for o in outs} == {winners[0]["payload"]}
    store = open_store(root, storage_options={"endpoint_url": s3_endpoint}, verify="full")
    key = artifact_key("selection", parents=[], config={"race": True})
    assert store.read_json(key, "ids.json") == {"writer": winners[0]["writer"]}
    left = [p.rsplit("/", 1)[-1] for p in store.fs.ls(store.artifact_dir(key))]
    assert sorted(left) == sorted(["manifest.json", winners[0]["payload"]])


def test_s3_corrupt_chunk_refused_on_read_and_manifest_moved_aside(store):
    """On SeaweedFS as on disk: a whole-array read hashes every chunk, refuses a flipped one, moves the manifest
    aside (the next run recomputes), and state() then says damaged."""
    key = artifact_key("rollouts", parents=[], config={"s3-quarantine": 1})
    with store.writer("rollouts", key, parents=[], config={"s3-quarantine": 1}) as w:
        w.put_array("rewards", np.arange(40, dtype=np.float32).reshape(20, 2), chunk_rows=2, codec="none")
    info = store.manifest(key).arrays["rewards"]
    chunk = f"{store.artifact_dir(key)}/{store.manifest(key).payload}/rewards/{info.chunk_key(7)}"
    raw = bytearray(store.fs.cat_file(chunk))
    raw[0] ^= 0xFF
    store.fs.pipe_file(chunk, bytes(raw))
    with pytest.raises(StorageError, match="corrupt.*moved aside"):
        store.read_array(key, "rewards")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert store.state(key) == "damaged" and not store.exists(key)
