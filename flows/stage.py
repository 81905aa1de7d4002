"""One curriculum stage as a subflow: θ_m → projected grads (pool + val sets, chunked) → POPI scores →
selection → GRPO train E steps → checkpoint θ_{m+1} → evaluation, plus the stage's report inputs
(online pass rates of the selected prompts under θ_m, off-policy health)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from cropi_core.config import RunConfig
from storage import ArtifactRef, StorageError
from flows.outputs import StageOutputs
from flows.runtime import Tracker
from tasks import artifacts as A
from tasks import evaluate as T_eval
from tasks import grads as T_grads
from tasks import rollouts as T_roll
from tasks import selection as T_sel
from tasks import train as T_train
from tasks.common import get_store, log, show_progress

SCORED = ("popi", "influence_once")


def result_or_upstream_error(fut, upstream: list):
    """`fut.result()`, but when an upstream task failed (fut never ran) raise that task's own exception."""
    fut.wait()
    if fut.state.is_pending():
        for u in upstream:
            u.result()  # raises the failed chunk's exception
    return fut.result()


def stage_sketches(tr: Tracker, cfg: RunConfig, stage: int, ckpt: ArtifactRef, pool_rollouts: ArtifactRef,
                   val_rollouts: dict[str, ArtifactRef], previous_selection: ArtifactRef | None = None,
                   ) -> tuple[ArtifactRef, dict[str, ArtifactRef], dict[str, ArtifactRef]]:
    """The stage's pool and validation sketches at θ_m (after the calibration they share, with
    influence.allocation = energy), and the artifacts that shaped them ("calibration", "candidates"; part of
    the stage's scoring cost). With influence.candidates, the pool sketch covers only the stage's candidate
    rows (a random draw ∪ `previous_selection`)."""
    calib = cand = None
    if cfg.influence.uses_energy:
        calib = tr.submit(T_grads.calibration, cfg=cfg, ckpt=ckpt, pool_rollouts=pool_rollouts, stage=stage).result()
    if cfg.influence.candidates is not None:
        cand = tr.submit(T_sel.candidates, cfg=cfg, pool_rollouts=pool_rollouts, previous=previous_selection,
                         stage=stage).result()
    g_pool = grads_ref(tr, cfg, stage, ckpt, pool_rollouts, "pool", calib, cand)
    g_val = {n: grads_ref(tr, cfg, stage, ckpt, r, n.replace("/", "-"), calib) for n, r in val_rollouts.items()}
    shaping = {n: r for n, r in (("calibration", calib), ("candidates", cand)) if r is not None}
    return g_pool, g_val, shaping


def probe_gate(tr: Tracker, cfg: RunConfig, stage: int, ckpt: ArtifactRef, pool_rollouts: ArtifactRef,
               val_rollouts: dict[str, ArtifactRef], previous_selection: ArtifactRef | None = None,
               ) -> tuple[str, dict[str, ArtifactRef], dict[str, ArtifactRef], float | None]:
    """The conflict gate (selection.gate_probe): sketch and score a random probe of the pool, then decide.
    Returns the decision ("fires", "quiet", or "kept": the probe's ranking was too unreliable to decide on), what it
    cost ("calibration", "probe", "probe_grads", "probe_scores", "gate": part
    of the stage's scoring), the validation sketches (the same artifacts the whole-pool ranking then uses) and, at a
    re-scoring stage (a previous selection exists), the split-half reliability of the probe's ranking: when it is
    below selection.rescore_reliability the gate's decision is not taken (it would read noise) and the stage keeps
    the previous selection without sketching the whole pool."""
    calib = None
    if cfg.influence.uses_energy:
        calib = tr.submit(T_grads.calibration, cfg=cfg, ckpt=ckpt, pool_rollouts=pool_rollouts, stage=stage).result()
    cand = tr.submit(T_sel.probe, cfg=cfg, pool_rollouts=pool_rollouts, stage=stage).result()
    g_probe = grads_ref(tr, cfg, stage, ckpt, pool_rollouts, "pool-probe", calib, cand)
    g_val = {n: grads_ref(tr, cfg, stage, ckpt, r, n.replace("/", "-"), calib) for n, r in val_rollouts.items()}
    sc = tr.submit(T_sel.scores, cfg=cfg, pool_grads=g_probe, val_grads=g_val, stage=stage).result()
    gate = tr.submit(T_sel.gate, cfg=cfg, scores=sc, stage=stage).result()
    shaping = {"calibration": calib, "probe": cand, "probe_grads": g_probe, "probe_scores": sc, "gate": gate}
    shaping = {n: r for n, r in shaping.items() if r is not None}
    reliability = None
    if stage > 0 and previous_selection is not None:
        reliability = T_sel.reliability(cfg, g_probe, g_val)  # over the probed rows (the others are NaN)
        if unreliable_rescore(cfg, stage, previous_selection, reliability):
            log(f"stage {stage}: split-half reliability of the probe's influence ranking {reliability:.3f} < "
                f"{cfg.selection.rescore_reliability:g}: the re-score is noise, keeping the previous selection "
                "(the whole pool is not sketched)")
            return "kept", shaping, g_val, reliability
    d = get_store(cfg).read_json(gate.key, "gate.json")
    log(f"stage {stage}: conflict gate: {len(d['conflicting'])} of {d['probed']} probed prompts conflict with the "
        f"target (score < {d['threshold']:.3f}, the median - {cfg.selection.gate_score:g} robust SDs: {d['share']:.1%}; "
        f"fires at {cfg.selection.gate_share:.1%}) "
        + ("-> influence ranks the whole pool" if d["fires"] else
           "-> this stage and every later one are method learnability's"))
    return ("fires" if d["fires"] else "quiet"), shaping, g_val, reliability


def learnability_stage(cfg: RunConfig) -> RunConfig:
    """A quiet conflict gate's stage: method learnability's, key for key (its selection and training artifacts are
    learnability's, reused where that method has run on this root)."""
    c = cfg.model_copy(deep=True)
    c.selection.method = "learnability"
    return c


def unreliable_rescore(cfg: RunConfig, stage: int, previous_selection: ArtifactRef | None,
                       reliability: float) -> bool:
    """selection.rescore_reliability: a drift-triggered re-score (stage ≥ 1, a previous selection to fall back on)
    whose ranking is less reliable than the threshold (or unmeasurable: NaN) is not trained on."""
    s = cfg.selection
    if stage == 0 or previous_selection is None or s.method != "popi" or s.rescore != "drift":
        return False
    if s.rescore_reliability is None:
        return False
    return not (reliability >= s.rescore_reliability)


def grads_ref(tr: Tracker, cfg: RunConfig, stage: int, ckpt: ArtifactRef, rollouts: ArtifactRef, label: str,
              calibration: ArtifactRef | None = None, candidates: ArtifactRef | None = None) -> ArtifactRef:
    """Finalized gradient artifact; chunks found corrupt at finalize time are recomputed once."""
    params = dict(cfg=cfg, ckpt=ckpt, rollouts=rollouts, n_rows=A.num_rows(get_store(cfg), rollouts), stage=stage,
                  label=label, calibration=calibration, candidates=candidates)
    try:
        return submit_grads(tr, params)
    except StorageError as err:
        log(f"stage {stage}: grads {label}: {err}; recomputing the missing chunks")
        return submit_grads(tr, params)


def submit_grads(tr: Tracker, params: dict[str, Any]) -> ArtifactRef:
    """One chunk task mapped over each row chunk still missing in storage, then finalize; the finalized ref."""
    missing = T_grads.missing_chunks(**params)
    stage, label = params["stage"], params["label"]
    if missing:
        log(f"stage {stage}: grads {label}: {len(missing)} of {A.num_chunks(params['cfg'], params['n_rows'])} chunks "
            "to compute")
    chunks = tr.map(T_grads.grads_chunk, {"chunk": missing}, **params)
    fin = tr.submit(T_grads.grads_finalize, chunks=chunks, **params)
    progress(chunks, f"grads {label} stage {stage}")
    return result_or_upstream_error(fin, chunks)


def progress(futures: list, desc: str) -> None:
    """Console progress bar over task futures (none when there are none, or with progress bars off)."""
    if not futures or not show_progress():
        return
    from prefect.futures import as_completed
    from tqdm.auto import tqdm

    with tqdm(total=len(futures), desc=desc, unit="chunk", leave=False) as bar:
        for _ in as_completed(futures):
            bar.update()


@flow(name="cropi-stage", flow_run_name="stage-{stage}")
def stage(config: RunConfig, stage: int, ckpt: ArtifactRef, pool: ArtifactRef, pool_rollouts: ArtifactRef,
          val_rollouts: dict[str, ArtifactRef], tests: dict[str, ArtifactRef],
          fixed_selection: ArtifactRef | None = None, previous_selection: ArtifactRef | None = None,
          drift: ArtifactRef | None = None) -> StageOutputs:
    """Run curriculum stage `stage` from checkpoint `ckpt`; returns the refs it produced and its task counts.

    fixed_selection: reuse this selection instead of scoring (method `influence_once` after stage 0).
    previous_selection: the previous stage's selection (re-scored with the candidates, influence.candidates).
    drift: the pool-health artifact that decided whether this stage re-scores (selection.rescore drift); part of
    the stage's scoring cost either way.
    """
    cfg = config
    tr = Tracker(cfg)
    grads: dict[str, ArtifactRef] = {}
    shaping: dict[str, ArtifactRef] = {"drift": drift} if drift is not None else {}
    scores = None
    reliability, kept_unreliable = None, False
    if fixed_selection is not None:
        sel = fixed_selection
    else:
        if cfg.selection.method == "popi" and cfg.selection.gate_probe is not None:
            decision, probed, g_val, reliability = probe_gate(tr, cfg, stage, ckpt, pool_rollouts, val_rollouts,
                                                              previous_selection)
            shaping.update(probed)
            kept_unreliable = decision == "kept"
            if decision != "fires":  # a firing gate ranks the whole pool below, keys unchanged
                grads = dict(g_val)
            if decision == "quiet":  # learnability's stage
                cfg = learnability_stage(cfg)
        if cfg.selection.method in SCORED and not kept_unreliable:
            g_pool, g_val, shaped = stage_sketches(tr, cfg, stage, ckpt, pool_rollouts, val_rollouts,
                                                   previous_selection)
            shaping.update(shaped)
            grads = {"pool": g_pool, **g_val}
            ess = None
            if cfg.influence.ess_power > 0 and stage > 0:  # θ_0 = β: every ESS/K is 1 at stage 0
                ess = tr.submit(T_sel.pool_health, cfg=cfg, ckpt=ckpt, pool_rollouts=pool_rollouts,
                                stage=stage).result()
                shaping["ess"] = ess
            scores = tr.submit(T_sel.scores, cfg=cfg, pool_grads=g_pool, val_grads=g_val, stage=stage, ess=ess)
            reliability = T_sel.reliability(cfg, g_pool, g_val)
            kept_unreliable = unreliable_rescore(cfg, stage, previous_selection, reliability)
            log(f"stage {stage}: split-half reliability of the influence ranking {reliability:.3f}"
                + (f" < {cfg.selection.rescore_reliability:g}: the re-score is noise, keeping the previous selection"
                   if kept_unreliable else ""))
        picked = None if kept_unreliable else tr.submit(T_sel.selection, cfg=cfg, stage=stage, pool=pool,
                                                         pool_rollouts=pool_rollouts, scores=scores)
        scores = scores.result() if scores is not None else None
        sel = previous_selection if picked is None else picked.result()

    online = tr.submit(T_roll.rollouts, cfg=cfg, ckpt=ckpt, data=pool, k=cfg.rollout.num_generations, subset=sel,
                       label=f"online-s{stage}")
    health = tr.submit(T_sel.health, cfg=cfg, ckpt=ckpt, pool_rollouts=pool_rollouts, sel=sel, stage=stage)
    new_ckpt = tr.submit(T_train.train, cfg=cfg, stage=stage, ckpt=ckpt, pool=pool, sel=sel)
    evals = {n: tr.submit(T_eval.evaluate, cfg=cfg, ckpt=new_ckpt, data=d, name=n, stage=stage + 1)
             for n, d in tests.items()}
    new_ckpt = new_ckpt.result()
    E = cfg.train.steps_per_stage
    step_evals = {k: {n: tr.submit(T_eval.evaluate, cfg=cfg, ckpt=ref, data=d, name=n, stage=stage, step=stage * E + k)
                      for n, d in tests.items()}
                  for k, ref in T_train.step_checkpoints(cfg, stage, ckpt, pool, sel).items()}

    out = StageOutputs(stage=stage, input_checkpoint=ckpt, selection=sel, checkpoint=new_ckpt,
                       online=online.result(), health=health.result(), evals={n: f.result() for n, f in evals.items()},
                       grads=grads, shaping=shaping, scores=scores, reliability=reliability,
                       kept_unreliable=kept_unreliable,
                       step_evals={k: {n: f.result() for n, f in fs.items()} for k, fs in step_evals.items()})
    from tasks.reports import stage_report

    stage_report(cfg, out)
    out.counts = tr.tally()
    return out
