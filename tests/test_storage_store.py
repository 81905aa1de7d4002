"""Artifact store: round trips (local, file://, memory://), manifests, integrity, security, concurrency, gc,
checkpoint registry and lineage. Real fsspec filesystems and real Zarr; no mocks."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from storage import (Manifest, StorageError, artifact_key, gc, lineage, open_store, render_lineage_png,
                     render_lineage_text)
from storage.registry import checkpoint_dir, find_checkpoints, register_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["path", "file", "memory"])
def store(request, tmp_path):
    url = {"path": str(tmp_path / "root"), "file": f"file://{tmp_path}/root",
           "memory": f"memory://cropi-{uuid.uuid4().hex[:8]}"}[request.param]
    return open_store(url, verify="full")


def _write_sample(store, kind="dataset", config=None, parents=()):
    config = config or {"n": 3}
    key = artifact_key(kind, parents=list(parents), config=config)
    with store.writer(kind, key, parents=list(parents), config=config, meta={"run": "t"}) as w:
        w.put_json("records.json", [{"id": i} for i in range(3)])
        w.put_bytes("blob/raw.bin", bytes(range(256)) * 10)
        w.put_array("lengths", np.arange(10, dtype=np.int32))
        w.put_ragged("tokens", [np.array([1, 2, 3]), np.array([], dtype=np.int64), np.arange(7)])
        w.put_ragged("logprobs", [np.array([-0.5, -1.0], dtype=np.float32), np.array([-2.0], dtype=np.float32)])
    return key, w


def test_round_trip(store):
    key, w = _write_sample(store)
    assert w.ref.key == key and not w.reused and store.exists(key)
    assert store.read_json(key, "records.json") == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert store.read_bytes(key, "blob/raw.bin") == bytes(range(256)) * 10
    np.testing.assert_array_equal(store.read_array(key, "lengths"), np.arange(10))
    toks = store.read_ragged(key, "tokens")
    assert [t.tolist() for t in toks] == [[1, 2, 3], [], list(range(7))]
    lp = store.read_ragged(key, "logprobs")
    assert lp[0].dtype == np.float32 and lp[1].tolist() == [-2.0]
    m = store.manifest(key)
    assert m.kind == "dataset" and m.parents == [] and m.config == {"n": 3} and m.meta == {"run": "t"}
    assert m.size > 2560 and m.format_version == 1
    assert store.ref(key).uri == store.uri(key) and store.uri(key).endswith(key)
    assert (store.local_path(key) / "blob" / "raw.bin").read_bytes() == bytes(range(256)) * 10
    assert [x.key for x in store.find("dataset", meta={"run": "t"})] == [key]
    assert store.find("grads") == [] and store.find(meta={"run": "other"}) == []
    # a second open of the same root (another process would do this) sees the same artifact
    assert open_store(store.url).exists(key)


def test_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CROPI_STORAGE", str(tmp_path / "env-root"))
    assert open_store().root == str(tmp_path / "env-root")
    monkeypatch.delenv("CROPI_STORAGE")
    monkeypatch.chdir(tmp_path)
    assert open_store().root == str(tmp_path / ".cropi")
    from cropi_core.config import StorageConfig
    s = open_store(StorageConfig(root=str(tmp_path / "cfg"), verify="manifest"))
    assert s.root == str(tmp_path / "cfg") and s.verify_mode == "manifest"


def test_bad_roots_are_one_line_errors(tmp_path):
    with pytest.raises(StorageError, match="Protocol not known"):
        open_store("nosuchproto://x")
    with pytest.raises(StorageError, match="verify mode 'bogus'"):
        open_store(str(tmp_path), verify="bogus")


def test_missing_artifact_and_bad_names(store):
    key = artifact_key("dataset", parents=[], config={"x": 1})
    assert not store.exists(key)
    with pytest.raises(StorageError, match="does not exist"):
        store.manifest(key)
    with pytest.raises(StorageError, match="invalid artifact key"):
        store.exists("../../etc")
    for bad in ("../x", "/etc/passwd", "a/../../b", "a//b", "c:/x"):
        with pytest.raises(StorageError, match="unsafe"):
            with store.writer("dataset", key, parents=[], config={"x": 1}) as w:
                w.put_bytes(bad, b"x")
    assert not store.exists(key) and store.keys() in ([], [key])


def test_writer_failure_leaves_nothing(store):
    key = artifact_key("dataset", parents=[], config={"x": 2})
    with pytest.raises(RuntimeError):
        with store.writer("dataset", key, parents=[], config={"x": 2}) as w:
            w.put_bytes("a.bin", b"123")
            raise RuntimeError("task died")
    assert not store.exists(key)
    assert not store.fs.exists(w.dir)


def test_truncated_manifest_means_absent_with_warning(store):
    key, _ = _write_sample(store)
    path = f"{store.artifact_dir(key)}/manifest.json"
    raw = store.fs.cat_file(path)
    store.fs.pipe_file(path, raw[: len(raw) // 2])
    with pytest.warns(UserWarning, match=f"corrupt manifest .*{key}"):
        assert not store.exists(key)
    # an edited (valid JSON, wrong checksum) manifest is corrupt too
    data = json.loads(raw)
    data["config"] = {"n": 4}
    store.fs.pipe_file(path, json.dumps(data).encode())
    with pytest.warns(UserWarning, match="checksum"):
        assert not store.exists(key)
    # rewriting the artifact repairs it (the writer sees, and reports, the corrupt manifest it replaces)
    with pytest.warns(UserWarning, match="corrupt manifest"):
        key2, w = _write_sample(store)
    assert key2 == key and not w.reused and store.exists(key)


def test_corrupt_payload_detected(store):
    key, _ = _write_sample(store)
    m = store.manifest(key)
    path = f"{store.artifact_dir(key)}/{m.payload}/blob/raw.bin"
    raw = bytearray(store.fs.cat_file(path))
    raw[100] ^= 0xFF
    store.fs.pipe_file(path, bytes(raw))
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert not store.exists(key)
    with pytest.raises(StorageError, match="corrupt"):
        store.read_bytes(key, "blob/raw.bin")


def test_unknown_manifest_version_refused(store):
    key, _ = _write_sample(store)
    path = f"{store.artifact_dir(key)}/manifest.json"
    data = json.loads(store.fs.cat_file(path))
    data["manifest_version"] = 99
    store.fs.pipe_file(path, json.dumps(data).encode())
    with pytest.raises(StorageError, match="unknown manifest_version 99") as e:
        store.exists(key)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field,value", [("payload", "../elsewhere"), ("payload", "/abs"),
                                         ("files", {"../../escape": {"size": 1, "sha256": "0" * 64}})])
def test_manifest_paths_must_stay_inside_root(store, field, value):
    key = artifact_key("dataset", parents=[], config={"evil": 1})
    base = Manifest(kind="dataset", key=key, parents=[], config={}, payload="w-x")
    evil = base.model_copy(update={field: value} if field == "payload" else {"files": {
        k: __import__("storage.manifest", fromlist=["FileInfo"]).FileInfo(**v) for k, v in value.items()}}).sealed()
    store.io.write(f"{store.artifact_dir(key)}/manifest.json", evil.to_bytes())
    with pytest.raises(StorageError, match="unsafe"):
        store.manifest(key)


def test_second_writer_reuses_first(store):
    key, w1 = _write_sample(store)
    key2, w2 = _write_sample(store)
    assert key2 == key and w2.reused and not w1.reused
    assert w2.manifest.payload == w1.manifest.payload
    assert not store.fs.exists(w2.dir)  # the loser removed its own payload
    assert store.verify(key) == []


CONCURRENT = r"""
import json, sys, time, os
from storage import open_store, artifact_key
root, go = sys.argv[1], sys.argv[2]
s = open_store(root, verify="full")
key = artifact_key("selection", parents=[], config={"ratio": 0.3})
while not os.path.exists(go):
    time.sleep(0.005)
with s.writer("selection", key, parents=[], config={"ratio": 0.3}) as w:
    for i in range(8):
        w.put_bytes(f"part{i}.bin", bytes([i]) * 200_000)
        time.sleep(0.01)
print(json.dumps({"reused": w.reused, "payload": w.manifest.payload, "mine": w.payload}))
"""


def test_two_concurrent_writer_processes_end_with_one_intact_artifact(tmp_path):
    root, go = tmp_path / "root", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(root), str(go)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO) for _ in range(2)]
    time.sleep(1.5)  # both imported and waiting
    go.touch()
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o["reused"] for o in outs) == [False, True]
    assert outs[0]["payload"] == outs[1]["payload"]
    store = open_store(str(root), verify="full")
    key = artifact_key("selection", parents=[], config={"ratio": 0.3})
    assert store.exists(key) and store.verify(key) == []
    adir = Path(store.artifact_dir(key))
    assert sorted(p.name for p in adir.iterdir()) == sorted(["manifest.json", outs[0]["payload"]])
    assert store.read_bytes(key, "part7.bin") == bytes([7]) * 200_000


def test_gc_removes_only_old_incomplete(tmp_path):
    store = open_store(str(tmp_path / "root"), verify="full")
    done, _ = _write_sample(store)
    # an incomplete writer folder (killed before its manifest) and an unreferenced writer folder of `done`
    stale = artifact_key("grads", parents=[done], config={"k": 1})
    Path(store.artifact_dir(stale), "w-dead").mkdir(parents=True)
    Path(store.artifact_dir(stale), "w-dead", "x.bin").write_bytes(b"x")
    orphan = Path(store.artifact_dir(done), "w-orphan")
    orphan.mkdir()
    (orphan / "y.bin").write_bytes(b"y")
    fresh = artifact_key("grads", parents=[done], config={"k": 2})
    arr = store.array(fresh, "grads", kind="grads", shape=(4, 2), chunk_rows=2, parents=[done], config={"k": 2})
    arr.write_chunk(0, np.ones((2, 2)))
    old = time.time() - 3 * 3600
    for p in list(Path(store.artifact_dir(stale)).rglob("*")) + list(orphan.rglob("*")) + list(
            Path(store.artifact_dir(done)).rglob("*")):
        os.utime(p, (old, old))
    removed = gc(store, older_than_hours=2)
    assert sorted(removed) == sorted([stale, f"{done}/w-orphan"])
    assert store.exists(done) and store.verify(done) == [] and arr.missing_chunks() == [1]
    assert gc(store, older_than_hours=0) == [fresh]
    assert store.exists(done) and store.keys() == [done]


def _fake_hf_folder(path: Path, seed: int) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    (path / "model.safetensors").write_bytes(rng.bytes(4096))
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 8}))
    (path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0}}}))
    (path / "tokenizer_config.json").write_text("{}")
    (path / "special_tokens_map.json").write_text("{}")
    return path


def test_checkpoint_registry(store, tmp_path):
    data = artifact_key("dataset", parents=[], config={"d": 1})
    base = register_checkpoint(store, _fake_hf_folder(tmp_path / "base", 0), parents=[], config={"name": "tiny"},
                               meta={"run": "r1", "stage": 0})
    src = _fake_hf_folder(tmp_path / "s1", 1)
    ck = register_checkpoint(store, src, parents=[base.key, data], config={"lr": 1e-5}, meta={"run": "r1", "stage": 1})
    assert ck.kind == "checkpoint" and store.exists(ck.key)
    again = register_checkpoint(store, src, parents=[base.key, data], config={"lr": 1e-5}, meta={"run": "r1", "stage": 1})
    assert again == ck
    assert [m.key for m in find_checkpoints(store, run="r1", stage=1)] == [ck.key]
    assert [m.key for m in find_checkpoints(store, run="r1")] == sorted([base.key, ck.key],
                                                                        key=lambda k: store.manifest(k).created_at)
    assert [m.key for m in find_checkpoints(store, parent=base.key)] == [ck.key]
    assert find_checkpoints(store, run="r2") == []
    folder = checkpoint_dir(store, ck.key)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).read_bytes() == (src / name).read_bytes()
    moved = register_checkpoint(store, _fake_hf_folder(tmp_path / "s2", 2), parents=[ck.key], config={},
                                meta={"run": "r1", "stage": 2}, move=True)
    assert not (tmp_path / "s2").exists() and store.exists(moved.key)
    assert store.manifest(moved.key).meta["content_hash"]


def test_lineage_text_and_png(store, tmp_path):
    def put(kind, parents, **cfg):
        key = artifact_key(kind, parents=parents, config=cfg)
        with store.writer(kind, key, parents=parents, config=cfg, meta={"stage": 1} if kind == "checkpoint" else {}) as w:
            w.put_json("x.json", cfg)
        return key

    ds = put("dataset", [], n=100)
    base = put("checkpoint", [], name="tiny")
    ro = put("rollouts", [base, ds], temperature=0.5)
    gt = put("grads", [base, ro], projector="grass", split="train")
    gv = put("grads", [base, ro], projector="grass", split="val")
    sc = put("scores", [gt, gv], k_rrf=0)
    sel = put("selection", [sc], method="popi", ratio=0.3)
    ck = put("checkpoint", [base, sel], lr=1e-5)
    ghost = "f" * 64
    ev = put("evaluation", [ck, ghost], greedy=True)
    g = lineage(store, ev)
    assert set(g.nodes) == {ds, base, ro, gt, gv, sc, sel, ck, ev} and g.missing == {ghost}
    assert (sc, sel) in g.edges and (ro, gt) in g.edges and len(g.edges) == 13
    d = g.depths()
    assert d[ds] == 0 and d[ro] == 1 and d[sc] == 3 and d[ev] == 6
    text = render_lineage_text(g)
    lines = text.splitlines()
    assert lines[0].startswith(f"evaluation {ev[:8]}") and "greedy=True" in lines[0]
    assert any(f"selection {sel[:8]}" in ln and "method=popi" in ln and "ratio=0.3" in ln for ln in lines)
    assert sum(f"rollouts {ro[:8]}" in ln and "(see above)" not in ln for ln in lines) == 1  # expanded once
    assert any("(see above)" in ln for ln in lines) and f"{ghost[:8]} (missing)" in text
    # a graph built by hand (no root): every sink is drawn; a missing artifact renders as missing
    from storage import LineageGraph
    hand = LineageGraph(nodes={k: g.nodes[k] for k in (ds, base, ro)}, edges=[(ds, ro), (base, ro)])
    assert render_lineage_text(hand).splitlines()[0].startswith(f"rollouts {ro[:8]}")
    assert "(missing)" in render_lineage_text(lineage(store, "e" * 64))
    png = render_lineage_png(g, tmp_path / "lineage.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    img = matplotlib.image.imread(png)
    assert img.shape[0] > 200 and img.shape[1] > 400


def test_sampled_verification_and_key_prefixes(tmp_path):
    store = open_store(str(tmp_path / "root"))  # default mode: sampled
    assert store.verify_mode == "sampled"
    key, _ = _write_sample(store)
    assert store.exists(key) and store.resolve(key[:8]) == key and store.resolve(key) == key
    with pytest.raises(StorageError, match="matches 0 artifacts"):
        store.resolve("zz")
    m = store.manifest(key)
    base = Path(store.artifact_dir(key)) / m.payload
    big = base / "big.bin"
    assert not big.exists()
    # a missing array chunk and a truncated file are found without hashing every chunk
    chunk = base / "lengths" / "c" / "0"
    saved = chunk.read_bytes()
    chunk.unlink()
    with pytest.warns(UserWarning, match="lengths/c/0 missing"):
        assert not store.exists(key)
    chunk.write_bytes(saved)
    raw = base / "blob" / "raw.bin"
    raw.write_bytes(raw.read_bytes()[:-1])
    with pytest.warns(UserWarning, match="blob/raw.bin has 2559 bytes"):
        assert not store.exists(key)
    assert open_store(str(tmp_path / "root"), verify="manifest").exists(key)  # manifest-only trusts the payload


def test_identity_is_stable_and_renewed_when_the_root_is_wiped(tmp_path):
    """Caches keyed on the store identity (Prefect's task cache) must not survive a wiped root."""
    import shutil

    from storage import open_store

    root = tmp_path / "root"
    first = open_store(str(root)).identity()
    assert open_store(str(root)).identity() == first  # same root, another handle: same id
    shutil.rmtree(root)
    assert open_store(str(root)).identity() != first


def test_remote_local_copy_replaces_a_damaged_leftover(tmp_path, monkeypatch):
    monkeypatch.setenv("CROPI_CACHE", str(tmp_path / "cache"))
    store = open_store(f"memory://cropi-{uuid.uuid4().hex[:8]}", verify="full")
    key, _ = _write_sample(store)
    p = store.local_path(key)
    (p / "blob" / "raw.bin").write_bytes(b"flipped")  # a killed copy / tampering, then the marker is lost
    for marker in p.parent.glob(".verified-*"):
        marker.unlink()
    assert (store.local_path(key) / "blob" / "raw.bin").read_bytes() == bytes(range(256)) * 10


def test_run_config_storage_verify_reaches_the_store(tmp_path, monkeypatch):
    from cropi_core.config import load_config
    from tasks.common import get_store

    monkeypatch.delenv("CROPI_STORAGE_VERIFY", raising=False)
    root = str(tmp_path / "r")
    assert get_store(load_config(None, {"storage.root": root})).verify_mode == "sampled"  # the default
    assert get_store(load_config(None, {"storage.root": root, "storage.verify": "full"})).verify_mode == "full"
    # the environment applies where the config leaves the field at its default, never over an explicit value
    monkeypatch.setenv("CROPI_STORAGE_VERIFY", "manifest")
    assert get_store(load_config(None, {"storage.root": root + "2"})).verify_mode == "manifest"
    assert get_store(load_config(None, {"storage.root": root + "2", "storage.verify": "full"})).verify_mode == "full"
