"""How often does the conflict gate fire on a pool? Its decision, replayed on the pool's whole stage-0 scores.

The gate (`selection.gate_probe`, `cropi_core.selection.conflict_gate`) decides from a random probe of the pool, so
its decision is a draw: this benchmark measures the draw's odds. For every storage root given it reads
  - the stage-0 influence scores of the WHOLE scorable pool (written by any run that ranked the pool at θ_0: the
    paper's CROPI, the default with `gate_probe: null`, or a default whose gate fired);
  - the pool's domain of each prompt (the pool dataset artifact), when it has one;
  - every gate decision stored on the root (run, stage, conflicting of probed, fired or quiet);
and reports, with the gate's own function on the whole pool and on `--draws` random probes of each size:
  - the share of the scorable pool that conflicts (`conflict_gate` on all of it) and in which domains it lies;
  - P(fire) for probes of 32, 64, 96 and 128 prompts (seeded draws without replacement among the scorable rows).
Nothing is recomputed; it costs seconds.

    .venv/bin/python -m benchmarks.gate_power /tmp/store-a /tmp/store-b [--gate-score 3 --gate-share 0.015]
Prints a markdown table (and writes it to --out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from cropi_core.config import SelectionConfig
from cropi_core.data.loaders import problems_from_jsonl
from cropi_core.selection import conflict_gate
from storage import open_store
from tasks.artifacts import FILE

app = typer.Typer(add_completion=False)
PROBES = (32, 64, 96, 128)


def pool_scores(st) -> tuple[str, np.ndarray] | None:
    """(run, [n_lists, N] scores) of the stage-0 score artifact with the most finite rows, or None."""
    best = None
    for m in st.find("scores"):
        if m.meta.get("stage") != 0:
            continue
        a = st.read_array(m.key, "popi").astype(np.float64)
        n = int(np.isfinite(a).all(axis=0).sum())
        if best is None or n > best[0]:
            best = (n, m.meta.get("run", "?"), a)
    return None if best is None else (best[1], best[2])


def pool_domains(st, n: int) -> np.ndarray | None:
    """Domain of each pool prompt, from the pool dataset artifact (None when the root has none or no domains)."""
    for m in st.find("dataset"):
        if m.meta.get("role") != "pool":
            continue
        doms = [p.domain for p in problems_from_jsonl(st.read_bytes(m.key, FILE), source=f"dataset {m.key[:12]}")]
        return np.array(doms) if len(doms) == n and all(doms) else None
    return None


def stored_decisions(st) -> list[str]:
    """'run s<stage>: k/n fired|quiet' for every gate artifact on the root, in creation order."""
    out = []
    for m in sorted(st.find("gate"), key=lambda m: m.created_at):
        d = st.read_json(m.key, "gate.json")
        out.append(f"{m.meta.get('run', '?')} s{m.meta.get('stage', '?')}: {len(d['conflicting'])}/{d['probed']} "
                   + ("fired" if d["fires"] else "quiet"))
    return out


def fire_rate(s: np.ndarray, probe: int, draws: int, gate_score: float, gate_share: float, seed: int) -> float:
    """P(fire) of a `probe`-prompt random probe of the scorable columns of s [n_lists, N_scorable]."""
    if probe > s.shape[1]:
        return float("nan")
    rng = np.random.default_rng(seed)
    fires = 0
    for _ in range(draws):
        sub = np.full_like(s, np.nan)
        idx = rng.choice(s.shape[1], probe, replace=False)
        sub[:, idx] = s[:, idx]
        fires += conflict_gate(sub, gate_score, gate_share).fires
    return fires / draws


@app.command()
def main(roots: list[str] = typer.Argument(..., help="storage roots (paths or URLs) holding a stage-0 pool ranking"),
         gate_score: float = typer.Option(SelectionConfig().gate_score,
                                          help="selection.gate_score: robust SDs below the probe's median"),
         gate_share: float = typer.Option(SelectionConfig().gate_share,
                                          help="selection.gate_share: share of the probe that must conflict"),
         draws: int = typer.Option(2000, help="random probes per size"),
         seed: int = typer.Option(0, help="seed of the probe draws"),
         out: Path | None = typer.Option(None, help="also write the markdown here")) -> None:
    lines = [f"Conflict gate replayed on whole stage-0 pools (gate_score {gate_score:g}, gate_share {gate_share:g}, "
             f"{draws} random probes per size)", "",
             "| root | run that ranked the pool | scorable | conflicting in the whole pool (by domain) | "
             + " | ".join(f"P(fire), {p} probed" for p in PROBES) + " | gate decisions stored on the root |",
             "|---|---|---|---|" + "---|" * len(PROBES) + "---|"]
    for root in roots:
        st = open_store(root)
        found = pool_scores(st)
        if found is None:
            raise typer.BadParameter(f"{root}: no stage-0 scores artifact (run a method that ranks the pool first)")
        run, a = found
        ok = np.isfinite(a).all(axis=0)  # [N] scorable rows
        whole = conflict_gate(a, gate_score, gate_share)
        doms = pool_domains(st, a.shape[1])
        by = ""
        if doms is not None and whole.conflicting:
            names, counts = np.unique(doms[whole.conflicting], return_counts=True)
            by = " (" + ", ".join(f"{d} {c}" for d, c in zip(names, counts)) + ")"
        rates = [fire_rate(a[:, ok], p, draws, gate_score, gate_share, seed) for p in PROBES]
        lines.append(f"| {root} | {run} | {int(ok.sum())} | {whole.share:.1%}{by} | "
                     + " | ".join("–" if np.isnan(r) else f"{r:.3f}" for r in rates)
                     + f" | {'; '.join(stored_decisions(st)) or '–'} |")
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.write_text(text + "\n")


if __name__ == "__main__":
    app()
