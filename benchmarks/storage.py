"""Write/read throughput of an N×k fp16 gradient array through `storage` (chunked Zarr + checksums + manifest)
on local disk, against numpy.save/np.load of the same array as the physical reference.

    .venv/bin/python benchmarks/storage.py                 # N=50k, k=8192 (819 MB), chunk_rows 256/1024/4096
    .venv/bin/python benchmarks/storage.py --n 5000        # scaled down

Write time = all chunk writes (rows + completion record with sha256 of the stored chunk) + finalize (manifest
with the chunk map). Read = `read_array` with full checksum verification (every chunk hashed), "sampled" (the
default: sizes of all chunks, hashes of 2 random ones) and manifest-only verification. Files are not fsync'ed by either side and reads hit a warm page cache; the numbers
compare software overhead against numpy on the same disk, not the disk itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from storage import artifact_key, open_store  # noqa: E402


def gradient_like(n: int, k: int, seed: int = 0) -> np.ndarray:
    """fp16 N×k, heavy-tailed like projected gradients (normal × per-row log-normal scale)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, k), dtype=np.float16)
    for lo in range(0, n, 4096):
        hi = min(lo + 4096, n)
        block = rng.standard_normal((hi - lo, k), dtype=np.float32) * np.exp(rng.normal(-3, 1, (hi - lo, 1))).astype(np.float32)
        out[lo:hi] = block
    return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(store, key: str, c: int, codec: str) -> tuple[float, float, float, float]:
    """Seconds for: chunked write + finalize, then reads with full / sampled (default) / manifest-only checks."""

    def write():
        arr = store.array(key, "grads", kind="grads", shape=DATA.shape, chunk_rows=c, dtype="float16",
                          parents=[], config={"bench": c}, codec=codec)
        for i in range(arr.num_chunks):
            lo, hi = arr.chunk_rows(i)
            arr.write_chunk(i, DATA[lo:hi])
        return arr.finalize()

    tw, _ = timed(write)
    tr, back = timed(lambda: store.read_array(key, "grads", verify="full"))
    assert back.tobytes() == DATA.tobytes()
    del back
    ts, back = timed(lambda: store.read_array(key, "grads", verify="sampled"))
    del back
    tn, back = timed(lambda: store.read_array(key, "grads", verify="manifest"))
    del back
    return tw, tr, ts, tn


DATA: np.ndarray


def main() -> None:
    global DATA
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--k", type=int, default=8192)
    ap.add_argument("--chunk-rows", default="256,1024,4096")
    ap.add_argument("--codecs", default="none,zstd")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration; the best is reported")
    ap.add_argument("--dir", default=None, help="scratch folder on the disk to measure (default: system temp)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "storage.json"))
    args = ap.parse_args()

    data = DATA = gradient_like(args.n, args.k)
    mb = data.nbytes / 1e6
    scratch = Path(tempfile.mkdtemp(prefix="cropi-bench-", dir=args.dir))
    rows = []
    try:
        # physical reference: numpy
        path = scratch / "ref.npy"
        tw = tr = float("inf")
        for _ in range(args.repeat):
            path.unlink(missing_ok=True)
            tw = min(tw, timed(lambda: np.save(path, data))[0])
            t, back = timed(lambda: np.load(path))
            tr = min(tr, t)
            assert back.tobytes() == data.tobytes()
            del back
        rows.append({"method": "numpy.save / np.load", "chunk_rows": None, "codec": None, "write_MBps": mb / tw,
                     "read_MBps": mb / tr, "read_sampled_MBps": None, "read_nocheck_MBps": None, "stored_MB": path.stat().st_size / 1e6})
        path.unlink()
        for codec in args.codecs.split(","):
            for c in (int(x) for x in args.chunk_rows.split(",")):
                tw = tr = ts = tn = float("inf")
                for rep in range(args.repeat):
                    shutil.rmtree(scratch / f"root-{codec}-{c}", ignore_errors=True)
                    store = open_store(str(scratch / f"root-{codec}-{c}"))
                    key = artifact_key("grads", parents=[], config={"bench": c, "codec": codec})
                    t = measure(store, key, c, codec)
                    tw, tr, ts, tn = min(tw, t[0]), min(tr, t[1]), min(ts, t[2]), min(tn, t[3])
                rows.append({"method": "storage (Zarr)", "chunk_rows": c, "codec": codec, "write_MBps": mb / tw,
                             "read_MBps": mb / tr, "read_sampled_MBps": mb / ts, "read_nocheck_MBps": mb / tn,
                             "stored_MB": store.manifest(key).size / 1e6})
                shutil.rmtree(scratch / f"root-{codec}-{c}")
                print(f"  done codec={codec} chunk_rows={c}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    header = f"N={args.n} k={args.k} fp16 = {mb:.0f} MB, local disk ({scratch.parent}), {os.cpu_count()} CPUs"
    print(header)
    print(f"{'method':<22} {'chunk_rows':>10} {'codec':>6} {'write MB/s':>11} {'read MB/s':>10} "
          f"{'read sampled':>13} {'read no-check':>14} {'stored MB':>10}")
    for r in rows:
        sm = f"{r['read_sampled_MBps']:.0f}" if r["read_sampled_MBps"] else "-"
        nc = f"{r['read_nocheck_MBps']:.0f}" if r["read_nocheck_MBps"] else "-"
        print(f"{r['method']:<22} {r['chunk_rows'] or '-':>10} {r['codec'] or '-':>6} {r['write_MBps']:>11.0f} "
              f"{r['read_MBps']:>10.0f} {sm:>13} {nc:>14} {r['stored_MB']:>10.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "k": args.k, "dtype": "float16", "MB": mb, "rows": rows,
                               "machine": platform.platform(), "cpus": os.cpu_count(),
                               "date": datetime.now(timezone.utc).isoformat()}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
