"""Lineage from manifests alone: the ancestor DAG of an artifact, as text (a tree) and as a PNG graph."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from storage.manifest import Manifest
from storage.store import Store


@dataclass
class LineageGraph:
    """nodes: key → manifest of every reachable ancestor (and the root); edges: (parent, child) pairs.

    missing: parent keys named by some manifest but not present as complete artifacts.
    """

    nodes: dict[str, Manifest] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    root: str = ""
    missing: set[str] = field(default_factory=set)

    def sinks(self) -> list[str]:
        """The root if set, else every node that is nobody's parent."""
        if self.root:
            return [self.root]
        parents = {p for p, _ in self.edges}
        return sorted(k for k in self.nodes if k not in parents)

    def parents(self, key: str) -> list[str]:
        return [p for p, c in self.edges if c == key]

    def depths(self) -> dict[str, int]:
        """Layer of each node: 0 for sources, else 1 + the deepest parent (longest path from a source)."""
        memo: dict[str, int] = {}

        def depth(k: str) -> int:
            if k not in memo:
                memo[k] = 0  # cycle guard (manifests cannot form cycles, keys hash their parents)
                memo[k] = 1 + max((depth(p) for p in self.parents(k)), default=-1)
            return memo[k]

        for k in list(self.nodes) + sorted(self.missing):
            depth(k)
        return memo


def lineage(store: Store, key: str) -> LineageGraph:
    """Ancestor DAG of `key`, read from manifests (breadth first, each node once)."""
    g = LineageGraph(root=key)
    todo = [key]
    while todo:
        k = todo.pop(0)
        if k in g.nodes or k in g.missing:
            continue
        m = store._read_manifest(k)
        if m is None:
            g.missing.add(k)
            continue
        g.nodes[k] = m
        for p in m.parents:
            g.edges.append((p, k))
            todo.append(p)
    return g


def _config_summary(config: dict, width: int = 60) -> str:
    flat: list[str] = []

    def walk(prefix: str, v) -> None:
        if isinstance(v, dict):
            for k in sorted(v):
                walk(f"{prefix}.{k}" if prefix else k, v[k])
        else:
            s = repr(v) if not isinstance(v, str) else v
            flat.append(f"{prefix}={s[:16] + '…' if len(s) > 17 else s}")

    walk("", config)
    text = " ".join(flat)
    return text if len(text) <= width else text[: width - 1] + "…"


def _label(g: LineageGraph, k: str) -> str:
    m = g.nodes.get(k)
    if m is None:
        return f"? {k[:8]} (missing)"
    extra = " ".join(f"{a}={m.meta[a]}" for a in ("run", "stage") if a in m.meta)
    return " ".join(x for x in (m.kind, m.short, extra, _config_summary(m.config)) if x)


def render_lineage_text(graph: LineageGraph) -> str:
    """Tree from the artifact down to its sources; an ancestor reached twice is expanded once."""
    lines: list[str] = []
    seen: set[str] = set()

    def walk(k: str, prefix: str) -> None:
        ps = graph.parents(k)
        for i, p in enumerate(ps):
            last = i == len(ps) - 1
            again = p in seen
            lines.append(prefix + ("└── " if last else "├── ") + _label(graph, p) + ("  (see above)" if again else ""))
            if not again:
                seen.add(p)
                walk(p, prefix + ("    " if last else "│   "))

    for sink in graph.sinks():
        lines.append(_label(graph, sink) + ("  (see above)" if sink in seen else ""))
        if sink not in seen:
            seen.add(sink)
            walk(sink, "")
    return "\n".join(lines)


def render_lineage_png(graph: LineageGraph, path: str | os.PathLike) -> Path:
    """Layered drawing (sources on top, the artifact at the bottom), arrows parent → child; returns `path`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    depths = graph.depths()
    layers: dict[int, list[str]] = {}
    for k in sorted(depths, key=lambda k: (depths[k], getattr(graph.nodes.get(k), "kind", "~"), k)):
        layers.setdefault(depths[k], []).append(k)
    if not layers:
        layers = {0: []}
    width = max(1, max(len(v) for v in layers.values()))
    height = len(layers)
    pos = {}
    for d, ks in layers.items():
        for i, k in enumerate(ks):
            pos[k] = ((i + 0.5) * width / len(ks), height - 1 - d)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.6 * width), max(2.5, 1.2 * height)))
    for p, c in graph.edges:
        ax.annotate("", xy=pos[c], xytext=pos[p],
                    arrowprops=dict(arrowstyle="-|>", color="0.4", shrinkA=18, shrinkB=18, lw=1.2))
    colors = {}
    palette = plt.get_cmap("tab10")
    for k, (x, y) in pos.items():
        m = graph.nodes.get(k)
        kind = m.kind if m else "missing"
        color = colors.setdefault(kind, palette(len(colors) % 10))
        text = f"{kind}\n{k[:8]}" + (f"\nstage {m.meta['stage']}" if m and "stage" in m.meta else "")
        ax.text(x, y, text, ha="center", va="center", fontsize=8, family="monospace",
                bbox=dict(boxstyle="round,pad=0.4", fc=color, alpha=0.35 if m else 0.1, ec="0.3",
                          ls="-" if m else "--"))
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-0.7, height - 0.3)
    ax.axis("off")
    ax.set_title("lineage of " + ", ".join(_label(graph, k)[:60] for k in graph.sinks()[:2]), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
