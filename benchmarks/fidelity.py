"""Fidelity of the sketches: precision@10% of each projector's POPI ranking vs the exact-gradient ranking.

Our version of the paper's Figure 4 (PAPER.md §4). One run, on the embedded setting:

1. θ = β = the embedded tiny Qwen2 after its supervised warm-up (as the `bootstrap` task builds it: seeded
   synthetic mixture disjoint from every pool/val/test prompt), cached under <out>/.cache.
2. Real offline rollouts of β: K responses per pool prompt (rollout.num_generations) and per targeted-validation prompt (rollout.num_generations_val),
   at the configured temperature; only scorable prompts (0 < pass rate < 1) are kept, the first `--pool` of them.
3. Exact POPI: the full flat per-prompt gradients (ExactProjector, float32) and the cosine of each pool row to
   the plain mean of all targeted-validation rows, in float64.
4. For every projector × sparse ratio × dim × seed: sketches, POPI, precision@10% against the exact ranking.
   `dense`/`sparse` are linear maps of the exact gradients, so their sketches are produced by the projector's
   own `finish()` fed with the already computed exact gradients (identical to `sketch_prompts` — checked on a
   few prompts at start-up — but without repeating the backward passes).

Writes <out>/fidelity.md (table), fidelity.png (plot) and fidelity.json (raw rows). CPU cost of dense/sparse
grows with kept-coordinates × dim; configurations above `--max-cost` (kept × dim) are skipped and shown as "—".

    .venv/bin/python benchmarks/fidelity.py --pool 600 --seeds 0 1 2
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import typer

from cropi_core.config import RunConfig, load_config
from cropi_core.scoring import popi, precision_at

app = typer.Typer(add_completion=False)
RATIOS = [1.0, 0.5, 0.2, 0.15, 0.1, 0.05, 0.01]


def _cache_dir(out: Path, cfg: RunConfig) -> Path:
    conf = {"model": cfg.model.hashable(), "bootstrap": cfg.bootstrap.hashable(), "data": cfg.data.hashable(),
            "rollout": cfg.rollout.hashable()}
    h = hashlib.sha256(json.dumps(conf, sort_keys=True).encode()).hexdigest()[:12]
    return out / ".cache" / f"fidelity-{h}"


def _base_model(cfg: RunConfig, splits, folder: Path):
    """The warm-started tiny model (cached as an HF folder)."""
    from cropi_core.data import DOMAINS, generate_mixture
    from cropi_core.models import bootstrap, build_char_tokenizer, build_tiny, load_model, save_model

    if (folder / "config.json").exists():
        return load_model(str(folder))
    torch.manual_seed(cfg.model.tiny.seed)
    tok = build_char_tokenizer()
    model = build_tiny(cfg.model.tiny, tok)
    held = [p.prompt for p in splits.all_problems()]
    domains = cfg.data.synthetic.domains if cfg.data.synthetic is not None else list(DOMAINS)
    problems = generate_mixture(domains, cfg.bootstrap.num_problems, seed=10_000 + cfg.bootstrap.seed, exclude=held)
    stats = bootstrap(model, tok, problems, cfg.bootstrap, template=cfg.data.template, instruction=cfg.data.instruction)
    typer.echo(f"bootstrap: {stats['steps']} steps, loss {stats['loss_first']:.3f} -> {stats['loss_last']:.3f}, {stats['wall_s']:.0f}s")
    save_model(model, tok, folder)
    return load_model(str(folder))


def _rollouts(cfg: RunConfig, model, tok, problems, k: int, path: Path):
    from cropi_core.rollout import get_backend

    if path.exists():
        return torch.load(path, weights_only=False)
    r = cfg.rollout
    out = get_backend("hf", model, tok).sample(problems, k, temperature=r.temperature, top_p=r.top_p,
                                               max_new_tokens=r.max_new_tokens, seed=r.seed, template=cfg.data.template,
                                               instruction=cfg.data.instruction, batch_size=r.batch_size)
    torch.save(out, path)
    return out


def _jl_from_exact(proj, exact: torch.Tensor) -> torch.Tensor:
    """Run a JL-family projector's own `finish()` on precomputed flat gradients exact [N, d] (float32): its kept
    coordinates (coordinate subset, or block of rows × columns) are gathered from them, then transformed."""
    n = exact.shape[0]
    proj.start(n, torch.float32, "cpu")
    off = 0
    for name in proj.params:
        k = proj.kept_params[name]
        g = exact[:, off : off + k.numel].reshape(n, *k.shape)
        off += k.numel
        if k.is_block:
            g = g[:, k.rows] if k.rows is not None else g
            g = g[:, :, k.cols] if k.cols is not None else g
            g = g.reshape(n, -1)
        else:
            g = g.reshape(n, -1) if k.flat is None else g.reshape(n, -1)[:, k.flat]
        proj.block(name)[:] = g
    assert off == exact.shape[1]
    return proj.finish()


def _spec(spec: str) -> tuple[str, str, bool]:
    """"kind[:transform][+energy]" (e.g. "sparse:gaussian", the paper's dense matrix; "grass+energy", the coordinate
    budget allocated by gradient energy) -> (kind, transform, energy allocation?)."""
    spec, plus, alloc = spec.partition("+")
    if plus and alloc != "energy":
        raise typer.BadParameter(f"projector spec {spec}+{alloc}: only '+energy' is known")
    kind, _, transform = spec.partition(":")
    return kind, transform or "sjl", bool(plus)


def _scores(sk: torch.Tensor, n_pool: int, chunk: int = 128) -> np.ndarray:
    """POPI of the first n_pool rows against the rest (in row chunks: popi works in float64)."""
    a = sk.float().numpy()
    return np.concatenate([popi(a[i : min(i + chunk, n_pool)], a[n_pool:]) for i in range(0, n_pool, chunk)])


@app.command()
def main(
    config: Path = typer.Option(None, help="run config YAML (default: the embedded tiny run)"),
    pool: int = typer.Option(600, help="scorable pool prompts to rank (≥ 500 for the issue's benchmark)"),
    seeds: list[int] = typer.Option([0, 1, 2], help="projector seeds"),
    dims: list[int] = typer.Option([512, 2048, 8192], help="sketch dims (fp16: 2·dim bytes per prompt)"),
    ratios: list[float] = typer.Option(RATIOS, help="sparse ratios"),
    projectors: list[str] = typer.Option(["grass", "sparse", "sparse:gaussian", "grass+energy", "sparse+energy"],
                                         help="kind[:transform][+energy]: grass, sparse (ratio 1.0 = dense); transform "
                                              "sjl (default), gaussian or rademacher"),
    sjl_s: int = typer.Option(2, help="sparse JL hashes per coordinate"),
    max_cost: float = typer.Option(2.2e9, help="skip dense/sparse configs with kept coordinates × dim above this"),
    out: Path = typer.Option(Path(__file__).parent / "out", help="output folder"),
    extra_pool: int = typer.Option(0, help="extra pool candidates per domain (except mul, whose space is small)"),
    bootstrap_problems: int = typer.Option(2400, help="warm-up problems (mul has only 720 distinct problems in all)"),
    bootstrap_steps: int = typer.Option(None, help="warm-up steps (default: the config's)"),
    threads: int = typer.Option(0, help="torch threads (0 = torch's default)"),
    val_source: str = typer.Option("targeted", help="'targeted' (the run's validation sets) or 'tests' (the first "
                                   "--val-per-domain test prompts of every domain; for weak warm-ups)"),
    val_per_domain: int = typer.Option(16, help="with --val-source tests"),
    k_val: int = typer.Option(None, help="responses per validation prompt (default: the config's rollout.num_generations_val)"),
) -> None:
    from cropi_core.data import generate_suite
    from cropi_core.influence import sketch_prompts
    from cropi_core.projection import make_projector

    torch.set_grad_enabled(True)
    cfg = load_config(config) if config else RunConfig()
    if cfg.data.synthetic is None:
        raise typer.BadParameter("fidelity runs on the synthetic suite (data.synthetic)")
    syn = cfg.data.synthetic
    cfg.bootstrap.num_problems = bootstrap_problems
    if bootstrap_steps is not None:
        cfg.bootstrap.steps = bootstrap_steps
    if threads:
        torch.set_num_threads(threads)
    if extra_pool:  # more candidates for domains with a large problem space (the default suite has 200 per domain)
        syn.pool_per_domain = {d: syn.pool_size + extra_pool for d in syn.domains if d not in ("mul",)}
    out.mkdir(parents=True, exist_ok=True)
    cache = _cache_dir(out, cfg)
    cache.mkdir(parents=True, exist_ok=True)
    splits = generate_suite(cfg.data.synthetic)
    model, tok = _base_model(cfg, splits, cache / "model")
    model.eval()

    t0 = time.time()
    pool_r = _rollouts(cfg, model, tok, splits.pool, cfg.rollout.num_generations, cache / "pool_rollouts.pt")
    if k_val:
        cfg.rollout.num_generations_val = k_val
    if val_source == "targeted":
        val_problems = [p for v in splits.val.values() for p in v]
    else:
        tests = {**splits.test_targeted, **splits.test_untargeted}
        val_problems = [p for v in tests.values() for p in v[:val_per_domain]]
    val_r = _rollouts(cfg, model, tok, val_problems, cfg.rollout.num_generations_val,
                      cache / f"val_rollouts-{val_source}-{len(val_problems)}-{cfg.rollout.num_generations_val}.pt")
    pool_sc = [r for r in pool_r if r.scorable][:pool]
    val_sc = [r for r in val_r if r.scorable]
    typer.echo(f"rollouts: {len(pool_sc)}/{len(pool_r)} scorable pool prompts used, {len(val_sc)}/{len(val_r)} "
               f"scorable val prompts ({time.time() - t0:.0f}s)")
    prompts = pool_sc + val_sc
    n_pool = len(pool_sc)
    temp = cfg.rollout.temperature
    agg = cfg.influence.aggregation
    sketch = lambda proj: sketch_prompts(model, prompts, proj, aggregation=agg, temperature=temp)  # noqa: E731

    t0 = time.time()
    ex_proj = make_projector("exact", model, 0, dtype=torch.float32)
    exact = sketch(ex_proj)
    exact_s = time.time() - t0
    exact_scores = _scores(exact, n_pool)
    n_params = exact.shape[1]
    typer.echo(f"exact gradients: {exact.shape[0]} × {n_params} in {exact_s:.0f}s")

    # the shortcut for the JL family equals the real path (sketch_prompts) on a few prompts
    # energy allocation (influence.allocation=energy): per-sequence gradient energy of the first
    # influence.calibration_prompts pool prompts, as the calibration task measures it
    from cropi_core.influence import gradient_energy
    from cropi_core.projection.jl import energy_ratios

    energy = gradient_energy(model, prompts[: cfg.influence.calibration_prompts], aggregation=agg, temperature=temp)
    numel = {n: p.numel() for n, p in model.named_parameters()}
    ratios_for = lambda use, r: energy_ratios(energy, numel, r) if use else None  # noqa: E731
    for spec in projectors:
        kind, tr, use_e = _spec(spec)
        mk = lambda: make_projector(kind, model, 256, sparse_ratio=0.1, transform=tr, sjl_s=sjl_s, seed=0,  # noqa: E731
                                    param_ratios=ratios_for(use_e, 0.1))
        direct = sketch_prompts(model, prompts[:8], mk(), aggregation=agg, temperature=temp).float()
        via = _jl_from_exact(mk(), exact[:8]).float()
        assert torch.allclose(direct, via, rtol=1e-2, atol=1e-3 * float(direct.abs().max())), f"JL shortcut mismatch: {spec}"

    meta = {"val_source": val_source, "n_pool": n_pool, "n_val": len(val_sc), "n_params": n_params, "seeds": seeds,
            "exact_seconds": exact_s, "k_train": cfg.rollout.num_generations, "k_val": cfg.rollout.num_generations_val, "aggregation": agg,
            "bootstrap_steps": cfg.bootstrap.steps}

    def write(rows) -> None:  # after every configuration, so a cut-short run still leaves its table
        (out / "fidelity.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        (out / "fidelity.md").write_text(_markdown(rows, meta, dims, ratios, projectors))
        _plot(rows, out / "fidelity.png", meta)

    rows = []
    for spec in projectors:
        kind, tr, use_e = _spec(spec)
        for ratio in ratios:
            for dim in dims:
                kept = ratio * n_params
                if tr != "sjl" and kept * dim > max_cost:
                    rows.append({"projector": spec, "ratio": ratio, "dim": dim, "skipped": True})
                    continue
                precs, secs = [], []
                for seed in seeds:
                    t0 = time.time()
                    proj = make_projector(kind, model, dim, sparse_ratio=ratio, transform=tr, sjl_s=sjl_s, seed=seed,
                                          dtype=torch.float16, param_ratios=ratios_for(use_e, ratio))
                    sk = _jl_from_exact(proj, exact)
                    secs.append(time.time() - t0)
                    precs.append(precision_at(_scores(sk, n_pool), exact_scores, 0.1))
                label = spec.replace("sparse", "dense", 1) if (kind == "sparse" and ratio == 1.0) else spec
                row = {"projector": label, "ratio": ratio, "dim": dim,
                       "bytes": proj.bytes_per_prompt(), "precision": float(np.mean(precs)), "std": float(np.std(precs)),
                       "per_seed": precs, "seconds": float(np.mean(secs)), "skipped": False}
                rows.append(row)
                write(rows)
                typer.echo(f"{row['projector']:9s} ratio {ratio:<5} dim {dim:<6} P@10% {row['precision']:.3f} "
                           f"± {row['std']:.3f}  ({row['seconds']:.1f}s/seed)")

    write(rows)
    typer.echo((out / "fidelity.md").read_text())


def _label_kind(label: str) -> str:
    """A row's projector label back to its --projectors spec (ratio-1.0 sparse rows are labelled dense)."""
    return label.replace("dense", "sparse", 1) if label.startswith("dense") else label


def _markdown(rows, meta, dims, ratios, projectors) -> str:
    lines = [
        f"# Sketch fidelity: precision@10% of POPI rankings vs exact gradients",
        "",
        f"Pool: {meta['n_pool']} scorable synthetic prompts (K={meta['k_train']}), validation: {meta['n_val']} "
        f"scorable prompts from the {meta['val_source']} sets (K={meta['k_val']}); model: embedded tiny Qwen2 after "
        f"{meta['bootstrap_steps']} warm-up steps, {meta['n_params']:,} "
        f"parameters; θ = β; aggregation {meta['aggregation']}; mean ± std over seeds {meta['seeds']}. "
        f"Random selection = 0.10. Exact gradients: {meta['exact_seconds']:.0f}s for all prompts.",
        "",
    ]
    for kind in projectors:
        lines += [f"## {kind}" + (" (ratio 1.0 = dense)" if kind.startswith("sparse") else " (ratio = fraction of each matrix's rows×cols kept: √ratio each)"), ""]
        lines.append("| sparse ratio | " + " | ".join(f"dim {d} ({2 * d // 1024 if d >= 512 else 2 * d} {'KiB' if d >= 512 else 'B'})" for d in dims) + " |")
        lines.append("|---|" + "---|" * len(dims))
        for r in ratios:
            cells = []
            for d in dims:
                m = [x for x in rows if x["ratio"] == r and x["dim"] == d and _label_kind(x["projector"]) == kind]
                if not m or m[0]["skipped"]:
                    cells.append("—")
                else:
                    cells.append(f"{m[0]['precision']:.3f} ± {m[0]['std']:.3f} ({m[0]['seconds']:.0f}s)")
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
        lines.append("")
    ok = [x for x in rows if not x["skipped"] and x["bytes"] <= 16 * 1024]
    if ok:
        best = max(ok, key=lambda x: x["precision"])
        lines.append(f"**Best at ≤ 16 KiB per prompt:** {best['projector']} ratio {best['ratio']} dim {best['dim']} "
                     f"({best['bytes']} B): precision@10% = {best['precision']:.3f} ± {best['std']:.3f} "
                     f"(goal ≥ 0.85: {'met' if best['precision'] >= 0.85 else 'NOT met'}).")
    lines.append("")
    return "\n".join(lines)


def _plot(rows, path: Path, meta) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    series = sorted({(_label_kind(x["projector"]), x["dim"]) for x in rows if not x["skipped"]})
    for kind, dim in series:
        pts = sorted((x["ratio"], x["precision"], x["std"]) for x in rows if not x["skipped"] and x["dim"] == dim
                     and _label_kind(x["projector"]) == kind)
        xs, ys, es = zip(*pts)
        ax.errorbar(xs, ys, yerr=es, marker="o" if kind.startswith("sparse") else "s",
                    linestyle="-" if kind.startswith("grass") else "--",
                    capsize=2, label=f"{kind} dim {dim} ({2 * dim} B)")
    ax.axhline(0.1, color="grey", linestyle=":", label="random (0.10)")
    ax.axhline(0.85, color="green", linestyle=":", linewidth=0.8, label="goal 0.85")
    ax.set_xscale("log")
    ax.set_xlabel("sparse ratio (fraction of gradient coordinates kept)")
    ax.set_ylabel("precision@10% vs exact")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"POPI sketch fidelity, tiny Qwen2 ({meta['n_params'] / 1e6:.2f}M params), {meta['n_pool']} prompts")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    app()
