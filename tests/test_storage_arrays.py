"""Chunked Zarr arrays: chunk-by-chunk writing by independent processes, kill -9 and resume, corruption
detection and repair, concurrent writers, fp16/fp32. Real Zarr on real disk; the kill is a real SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from storage import StorageError, artifact_key, open_store

REPO = Path(__file__).resolve().parents[1]
N, K, C = 230, 48, 10  # 23 chunks, the last one partial
CFG = {"projector": "grass", "k": K}
KEY = artifact_key("grads", parents=[], config=CFG)


def rows(i: int, lo: int, hi: int, dtype=np.float16) -> np.ndarray:
    """Deterministic content of chunk i (what a gradient task would compute)."""
    return (np.random.default_rng(i).standard_normal((hi - lo, K)) * 3).astype(dtype)


def open_array(store, dtype="float16", codec="none"):
    return store.array(KEY, "grads", kind="grads", shape=(N, K), chunk_rows=C, dtype=dtype, parents=[], config=CFG,
                       meta={"split": "train"}, codec=codec)


WRITER = r"""
import sys, time, numpy as np
from storage import open_store, artifact_key
root, sleep, order = sys.argv[1], float(sys.argv[2]), sys.argv[3]
N, K, C = 230, 48, 10
CFG = {"projector": "grass", "k": K}
key = artifact_key("grads", parents=[], config=CFG)
s = open_store(root)
a = s.array(key, "grads", kind="grads", shape=(N, K), chunk_rows=C, parents=[], config=CFG, meta={"split": "train"})
todo = a.missing_chunks()
print("todo", len(todo), flush=True)
for i in (todo if order == "fwd" else todo[::-1]):
    lo, hi = a.chunk_rows(i)
    a.write_chunk(i, (np.random.default_rng(i).standard_normal((hi - lo, K)) * 3).astype(np.float16))
    print("wrote", i, flush=True)
    time.sleep(sleep)
ref = a.finalize()
print("done", ref.key, flush=True)
"""


def _run_writer(root, sleep=0.0, order="fwd", **kw):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(sleep), order], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, **kw)


def test_chunk_layout_and_round_trip(tmp_path):
    store = open_store(str(tmp_path), verify="full")
    a = open_array(store)
    assert a.num_chunks == 23 and a.chunk_rows(0) == (0, 10) and a.chunk_rows(22) == (220, 230)
    with pytest.raises(StorageError, match="out of range"):
        a.chunk_rows(23)
    with pytest.raises(StorageError, match="expected shape"):
        a.write_chunk(0, np.zeros((9, K)))
    assert a.missing_chunks() == list(range(23))
    with pytest.raises(StorageError, match="23 of 23 chunks missing"):
        a.finalize()
    assert not store.exists(KEY)
    for i in range(22):
        a.write_chunk(i, rows(i, *a.chunk_rows(i)))
    # an all-zero chunk (= Zarr's fill value) written through a reopened array must still be stored
    open_array(store).write_chunk(22, np.zeros((10, K), dtype=np.float16))
    ref = a.finalize()
    assert ref.key == KEY and store.exists(KEY)
    m = store.manifest(KEY)
    assert m.arrays["grads"].shape == [N, K] and len(m.arrays["grads"].chunks) == 23 and m.meta == {"split": "train"}
    out = store.read_array(KEY, "grads")
    assert out.dtype == np.float16 and out.shape == (N, K)
    np.testing.assert_array_equal(out, np.concatenate([rows(i, *a.chunk_rows(i)) for i in range(22)] + [np.zeros((10, K))]))
    assert store.open_array(KEY, "grads")[5:7].shape == (2, K)
    # chunk_rows is hash-excluded: a writer asking for another chunk size adopts the existing layout
    other = store.array(KEY, "grads", kind="grads", shape=(N, K), chunk_rows=20, parents=[], config=CFG)
    assert other.num_chunks == 23 and other.chunk_rows(1) == (10, 20) and other.missing_chunks() == []
    # a different shape under the same key is a caller bug
    with pytest.raises(StorageError, match="different layout: shape"):
        store.array(KEY, "grads", kind="grads", shape=(N + 1, K), chunk_rows=10, parents=[], config=CFG)


@pytest.mark.parametrize("dtype,codec", [("float32", "none"), ("float16", "zstd")])
def test_dtypes_and_codecs(tmp_path, dtype, codec):
    store = open_store(str(tmp_path), verify="full")
    a = open_array(store, dtype=dtype, codec=codec)
    for i in range(a.num_chunks):
        a.write_chunk(i, rows(i, *a.chunk_rows(i), dtype=np.float32))
    a.finalize()
    out = store.read_array(KEY, "grads")
    assert out.dtype == np.dtype(dtype)
    ref = np.concatenate([rows(i, *a.chunk_rows(i), dtype=np.float32) for i in range(a.num_chunks)]).astype(dtype)
    np.testing.assert_array_equal(out, ref)


def _chunk_file(store, i):
    return Path(store.artifact_dir(KEY)) / "chunked" / "grads" / "c" / str(i) / "0"


def test_corrupt_chunk_detected_reported_missing_and_rewritten(tmp_path):
    store = open_store(str(tmp_path), verify="full")
    a = open_array(store)
    for i in range(a.num_chunks):
        a.write_chunk(i, rows(i, *a.chunk_rows(i)))
    expected = store.read_array(KEY, "grads") if a.finalize() else None
    # flip bytes in a chunk file on disk after finalize
    f = _chunk_file(store, 7)
    raw = bytearray(f.read_bytes())
    raw[50:54] = bytes(b ^ 0xFF for b in raw[50:54])
    f.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="damaged"):
        assert not store.exists(KEY)
    with pytest.raises(StorageError, match="corrupt"):
        store.read_array(KEY, "grads")
    with pytest.warns(UserWarning, match="chunk 7 .* corrupt"):
        assert open_array(store).missing_chunks() == [7]
    with pytest.warns(UserWarning, match="chunk 7 .* corrupt"):
        assert not open_array(store).chunk_complete(7)
    assert open_array(store).chunk_complete(6) and open_array(store).chunk_complete(7, verify=False)
    # rows written without a completion record (writer died in between) count as missing too
    a2 = open_array(store)
    a2.zarr[30:40] = rows(3, 30, 40)
    Path(store.artifact_dir(KEY), "records", "3.json").unlink()
    with pytest.warns(UserWarning):
        missing = a2.missing_chunks()
    assert missing == [3, 7]
    for i in missing:
        a2.write_chunk(i, rows(i, *a2.chunk_rows(i)))
    assert a2.missing_chunks() == []
    a2.finalize()
    assert store.exists(KEY)
    np.testing.assert_array_equal(store.read_array(KEY, "grads").view(np.uint16), expected.view(np.uint16))


def test_truncated_manifest_of_array_detected_and_refinalized(tmp_path):
    store = open_store(str(tmp_path), verify="full")
    a = open_array(store)
    for i in range(a.num_chunks):
        a.write_chunk(i, rows(i, *a.chunk_rows(i)))
    a.finalize()
    mf = Path(store.artifact_dir(KEY)) / "manifest.json"
    mf.write_bytes(mf.read_bytes()[:100])
    with pytest.warns(UserWarning, match=f"corrupt manifest .*{KEY}/manifest.json"):
        assert not store.exists(KEY)
    with pytest.warns(UserWarning, match="corrupt manifest"):
        assert open_array(store).finalize().key == KEY  # nothing missing: only the manifest is rewritten
    assert store.exists(KEY) and store.verify(KEY) == []


def test_kill9_mid_array_then_resume_writes_only_missing_chunks(tmp_path):
    # reference: one uninterrupted writer
    ref_root = tmp_path / "ref"
    p = _run_writer(ref_root)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.count("wrote") == 23
    reference = open_store(str(ref_root), verify="full").read_array(KEY, "grads")

    # a writer killed with SIGKILL after a few chunks
    root = tmp_path / "crash"
    p = _run_writer(root, sleep=0.25)
    records = root / "artifacts" / KEY / "records"
    deadline = time.time() + 60
    while len(list(records.glob("[0-9]*.json")) if records.exists() else []) < 4 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=10)
    assert p.returncode == -signal.SIGKILL
    store = open_store(str(root), verify="full")
    assert not store.exists(KEY)
    missing = open_array(store).missing_chunks()
    done_before = sorted(set(range(23)) - set(missing))
    assert 4 <= len(done_before) < 23 and done_before == list(range(len(done_before)))

    # resume in a fresh process: it writes exactly the missing chunks
    p = _run_writer(root)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    written = [int(line.split()[1]) for line in out.splitlines() if line.startswith("wrote")]
    assert f"todo {len(missing)}" in out and sorted(written) == missing
    assert store.exists(KEY) and store.verify(KEY) == []
    resumed = store.read_array(KEY, "grads")
    assert resumed.tobytes() == reference.tobytes()  # bit-identical
    assert (store.manifest(KEY).arrays["grads"].chunks
            == open_store(str(ref_root)).manifest(KEY).arrays["grads"].chunks)


def test_two_concurrent_array_writers_end_with_one_intact_artifact(tmp_path):
    root = tmp_path / "root"
    procs = [_run_writer(root, sleep=0.01, order=o) for o in ("fwd", "rev")]
    outs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert all(f"done {KEY}" in o for o, _ in outs)
    store = open_store(str(root), verify="full")
    assert store.exists(KEY) and store.verify(KEY) == []
    expected = np.concatenate([rows(i, i * C, min((i + 1) * C, N)) for i in range(23)])
    assert store.read_array(KEY, "grads").tobytes() == expected.tobytes()
    assert sorted(p.name for p in Path(store.artifact_dir(KEY)).iterdir()) == ["chunked", "manifest.json", "records"]


def test_ragged_csr_layout(tmp_path):
    store = open_store(str(tmp_path))
    seqs = [np.arange(n, dtype=np.int32) * 7 for n in (5, 0, 3, 11)]
    key = artifact_key("rollouts", parents=[], config={"k": 4})
    with store.writer("rollouts", key, parents=[], config={"k": 4}) as w:
        store.write_ragged(w, "response_ids", seqs)
    flat = store.read_array(key, "response_ids/flat")
    offsets = store.read_array(key, "response_ids/offsets")
    assert flat.dtype == np.int32 and offsets.tolist() == [0, 5, 5, 8, 19]
    assert [s.tolist() for s in store.read_ragged(key, "response_ids")] == [s.tolist() for s in seqs]


def test_chunk_records_keep_their_writers_meta_across_writers(tmp_path):
    """A chunk's completion record keeps its writer's `meta` (e.g. the seconds it took): another writer — a resumed
    run — reads it back, and finalize's `meta` callback adds what they sum to into the manifest; a chunk rewritten
    after corruption carries its new writer's meta."""
    store = open_store(str(tmp_path), verify="full")
    a = open_array(store)
    for i in range(a.num_chunks - 1):  # the last chunk is left for a later writer
        a.write_chunk(i, rows(i, *a.chunk_rows(i)), meta={"compute": {"seconds": 1.0 + i}})
    b = open_array(store)  # another process / a resumed run
    assert b.chunk_meta(3) == {"compute": {"seconds": 4.0}} and b.chunk_meta(b.num_chunks - 1) == {}
    last = b.num_chunks - 1
    b.write_chunk(last, rows(last, *b.chunk_rows(last)))  # no meta: an older writer
    total = lambda: {"total": sum(b.chunk_meta(i).get("compute", {}).get("seconds", 0.0)  # noqa: E731
                                  for i in range(b.num_chunks))}
    ref = b.finalize(meta=total)
    m = store.manifest(ref.key)
    assert m.meta == {"split": "train", "total": sum(1.0 + i for i in range(last))}
    assert store.read_array(KEY, "grads").shape == (N, K)
