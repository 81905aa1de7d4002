"""Split-half reliability of every stored influence ranking on one or more storage roots.

For each `scores` artifact that ranked (nearly) the whole pool — not a conflict-gate probe — read the sketches it
was computed from (its parents: the pool's grads, then one grads artifact per validation set) and compute
`cropi_core.scoring.split_half_reliability`: the Spearman correlation of the pool's scores against two random
halves of each validation set. It needs no model and no gradient pass, only the stored arrays.

    python -m benchmarks.rescore_reliability /path/to/root [/another/root ...] [--out benchmarks/out/reliability.json]

Prints one row per ranking (root, run, stage, scorable rows, reliability) and, per stage, the range; this is the
table behind `selection.rescore_reliability` (docs/targeting.md § "Stage-1 re-scores are noise").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cropi_core.scoring import split_half_reliability
from storage import open_store


def rankings(root: str, min_share: float = 0.4) -> list[dict]:
    """One record per whole-pool `scores` artifact on `root` (scorable ≥ min_share of the pool's scorable maximum on
    that root, so the gate's probes are left out)."""
    store = open_store(root)
    metas = [(m.key, m.meta) for m in store.find("scores")]
    if not metas:
        return []
    most = max(int(me.get("scorable", 0)) for _, me in metas)
    out = []
    for key, me in metas:
        if int(me.get("scorable", 0)) < min_share * most:
            continue
        grads = [p for p in store.manifest(key).parents if store.manifest(p).kind == "grads"]
        pool, vals = grads[0], grads[1:]  # a dict parameter's refs come sorted by name after the pool's
        g = store.read_array(pool, "grads").astype(np.float64)
        v = [store.read_array(k, "grads").astype(np.float64) for k in vals]
        rel = split_half_reliability(g, v, me.get("score", "cosine"))
        out.append({"root": root, "run": me.get("run"), "stage": int(me.get("stage", 0)),
                    "scorable": int(me.get("scorable", 0)), "reliability": rel, "key": key[:12]})
    return sorted(out, key=lambda r: (r["stage"], str(r["run"])))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", help="storage roots (local paths or fsspec URLs)")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    a = ap.parse_args(argv)
    rows = [r for root in a.roots for r in rankings(root)]
    seen: set[tuple] = set()
    print("| root | run | stage | scorable | split-half reliability |\n|---|---|---|---|---|")
    for r in rows:
        if (r["root"], r["key"]) in seen:
            continue
        seen.add((r["root"], r["key"]))
        print(f"| {r['root']} | {r['run']} | {r['stage']} | {r['scorable']} | {r['reliability']:.3f} |")
    for stage in sorted({r["stage"] for r in rows}):
        x = np.array([r["reliability"] for r in rows if r["stage"] == stage])
        x = x[np.isfinite(x)]
        if x.size:
            print(f"stage {stage}: {x.size} rankings, reliability {x.min():.3f} .. {x.max():.3f} (median {np.median(x):.3f})")
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
