"""Chaos benchmark: SIGKILL `cropi run` at seeded, uniformly random moments and resume it; are the final weights
byte-identical to an uninterrupted run's?

    python -m benchmarks.chaos --trials 20 --seed 0 --out benchmarks/out/chaos
    python -m benchmarks.chaos --trials 5 --s3          # on a SeaweedFS root (weed mini on loopback)

One reference run (reduced embedded config, see REDUCED), then per trial: a fresh storage root, `cropi run` started
in its own process group and killed with SIGKILL (the whole group, as a pre-empted machine loses everything) at
t ~ U(0, T_ref); then `cropi run` again to completion. Per trial it records where the kill landed (the task runs
it had not finished, against the reference run's task order), the seconds of work lost (t + resume − T_ref)
and whether every `*.safetensors` file of the final checkpoint has the reference's sha256. Writes
`chaos.json` and `chaos.md` (the table) under --out. CPU-heavy: a trial costs about two runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ≈ 1–2 min on 2 CPU cores: every task kind runs (bootstrap, rollouts, 3 gradient chunks per stage, finalize,
# scores, selection, training with a mid-stage save, evaluation, reports). Validation: 16 prompts × 8 responses,
# so that after this short warm-up some validation prompt has mixed rewards (with 8 × 4 none had: POPI had no target)
REDUCED = [
    "bootstrap.steps=120", "bootstrap.num_problems=800", "data.synthetic.pool_size=16", "data.synthetic.val_size=16",
    "data.synthetic.test_size=8", "rollout.num_generations=4", "rollout.num_generations_val=8", "rollout.max_new_tokens=16",
    "influence.sketch_dim=256", "influence.chunk_rows=32", "train.stages=2", "train.steps_per_stage=4", "train.save_steps=2",
    "train.prompts_per_step=4", "train.num_generations=4", "train.max_new_tokens=16", "eval.max_new_tokens=16",
]
TASK_KINDS = ("start-up", "dataset", "bootstrap", "rollouts", "grads-chunk", "finalize", "scores", "selection",
              "health", "train", "eval", "report")
RUN_NAME = re.compile(r"[Tt]ask run '([^']+)'")


def task_kind(run_name: str) -> str:
    """Task kind of a Prefect task-run name (e.g. grads-pool-s0-c1 → grads-chunk, train-s0 → train)."""
    n = run_name
    if n.startswith("grads-"):
        return "finalize" if "finalize" in n else "grads-chunk"
    for k in ("dataset", "bootstrap", "rollouts", "scores", "selection", "health", "train", "eval", "report",
              "start-up"):
        if n.startswith(k):
            return k
    return n.split("-")[0]


def cropi_cmd(root: str, name: str, extra: list[str]) -> list[str]:
    # --verbose: the kill points and finishing order are read from Prefect's log lines on the console
    cmd = [sys.executable, "-m", "flows.cli", "run", "--verbose", "--storage", root, "--name", name]
    for s in REDUCED + extra:
        cmd += ["--set", s]
    return cmd


def run(cmd: list[str], env: dict, log: Path, kill_at: float | None = None,
        kill_after: tuple[str, float] | None = None) -> tuple[float, int, list[tuple[float, str]]]:
    """Run `cmd` in its own process group; SIGKILL the group at `kill_at` s, or `delay` s after the line saying
    task run `after` finished (`kill_after=(after, delay)`). Returns (seconds, rc, timed lines)."""
    t0 = time.monotonic()
    if kill_after is not None:
        after, delay = kill_after
        finished = re.compile(r"[Tt]ask run '" + re.escape(after) + r"(-[0-9a-f]{3})?' - Finished in state")
    lines: list[tuple[float, str]] = []
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, bufsize=1)
        os.set_blocking(p.stdout.fileno(), False)
        while True:
            chunk = p.stdout.readline()
            if chunk:
                lines.append((time.monotonic() - t0, chunk.rstrip("\n")))
                f.write(f"{lines[-1][0]:8.2f} {chunk}")
                if kill_after is not None and kill_at is None and finished.search(chunk):
                    kill_at = lines[-1][0] + delay
                continue
            if p.poll() is not None:
                rest = p.stdout.read() or ""
                for line in rest.splitlines():
                    lines.append((time.monotonic() - t0, line))
                    f.write(f"{lines[-1][0]:8.2f} {line}\n")
                break
            if kill_at is not None and time.monotonic() - t0 >= kill_at:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                break
            time.sleep(0.02)
    return time.monotonic() - t0, p.returncode, lines


def stable(name: str) -> str:
    """A task-run name without Prefect's random 3-hex suffix (tasks without task_run_name: bootstrap-bb7)."""
    return re.sub(r"-[0-9a-f]{3}$", "", name)


def finished_order(lines: list[tuple[float, str]]) -> list[str]:
    """Task-run names (stable) in the order they finished ("Task run 'x' - Finished in state ..." lines)."""
    out: list[str] = []
    for _, line in lines:
        if "Finished in state" in line:
            out += [stable(n) for n in RUN_NAME.findall(line) if stable(n) not in out]
    return out


def read_log(path: Path) -> list[tuple[float, str]]:
    """Timed lines of a log written by `run` ("%8.2f line")."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        head, _, rest = line.strip().partition(" ")
        try:
            out.append((float(head), rest))
        except ValueError:
            continue
    return out


def killed_in(ref_order: list[str], lines: list[tuple[float, str]]) -> str:
    """The task run the kill landed in: the first task of the reference run's finishing order that the killed
    run had not finished (the local runner runs one task at a time); "start-up" if no task had started
    logging yet, "report" once every task had finished."""
    done = set(finished_order(lines))
    if not done and not any(RUN_NAME.search(line) for _, line in lines):
        return "start-up"
    for name in ref_order:
        if name not in done:
            return name
    return "report"


def final_weights(root: str, name: str) -> dict[str, str]:
    """sha256 of every safetensors file of the run's final checkpoint (from runs/<name>/summary.json)."""
    sys.path.insert(0, str(REPO))
    from storage import open_store
    from storage.registry import checkpoint_dir

    summary = json.loads((Path(run_folder(root, name)) / "summary.json").read_text())
    folder = checkpoint_dir(open_store(root), summary["final_checkpoint"])
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


def run_folder(root: str, name: str) -> Path:
    return (Path(root) / "runs" / name) if "://" not in root else REPO / "runs" / name


def concurrent(base: str, env: dict, out: Path, extra: list[str]) -> dict:
    """Two `cropi run` on one root started together: same config, then configs differing in selection.ratio
    (they share datasets, rollouts, gradients and scores). Both must finish, every artifact must verify in
    full, and the report says how much work both runs did (duplicated)."""
    sys.path.insert(0, str(REPO))
    from storage import open_store

    results = {}
    for label, sets in (("same config", ([], [])), ("different ratio", (["selection.ratio=0.1"], ["selection.ratio=0.2"]))):
        root = f"{base}/concurrent-{label.replace(' ', '-')}"
        procs, t0 = [], time.monotonic()
        for name, more in zip(("a", "b"), sets):
            log = open(out / f"concurrent-{label.replace(' ', '-')}-{name}.log", "w")
            procs.append((name, log, subprocess.Popen(cropi_cmd(root, name, extra + more), cwd=REPO, env=env,
                                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)))
        rcs = {name: p.wait() for name, _, p in procs}
        seconds = time.monotonic() - t0
        for _, log, _ in procs:
            log.close()
        store = open_store(root, verify="full")
        damaged = [m.key[:12] for m in store.find() if store.verify(m.key, "full")]
        sums = {n: json.loads((run_folder(root, n) / "summary.json").read_text()) for n in rcs if rcs[n] == 0}
        done = {n: {k for _, k in s["computed"]} for n, s in sums.items()}
        both = set.intersection(*done.values()) if len(done) == 2 else set()
        results[label] = {"rc": rcs, "seconds": round(seconds, 1), "artifacts": len(store.find()),
                          "damaged": damaged, "computed": {n: len(v) for n, v in done.items()},
                          "computed_by_both": len(both),
                          "same_final": len({s["final_checkpoint"] for s in sums.values()}) == 1 if sums else None}
        print(label, json.dumps(results[label]))
    return results


def targets(ref_order: list[str], ref_lines: list[tuple[float, str]], kinds: list[str]) -> list[tuple[str, str, float]]:
    """For each task kind, (its first task run in the reference order — stage 1's for train, mid-stage — the task
    run finishing just before it, the seconds between the two finishes in the reference run)."""
    done: dict[str, float] = {}
    for t, line in ref_lines:
        if "Finished in state" in line:
            for n in RUN_NAME.findall(line):
                done.setdefault(stable(n), t)
    out = []
    for kind in kinds:
        cands = [i for i, n in enumerate(ref_order) if task_kind(n) == kind and i > 0]
        if kind == "train":
            cands = [i for i in cands if ref_order[i].endswith("s1")] or cands
        if not cands:
            raise SystemExit(f"--targeted: no task of kind {kind!r} in the reference run (kinds: {TASK_KINDS})")
        i = cands[0]
        # time the kill from the previous task of the chain: evaluations run beside it (thread runner), so an
        # evaluation that finishes just before says nothing about when the target started
        j = i - 1
        while j > 0 and kind != "eval" and task_kind(ref_order[j]) == "eval":
            j -= 1
        out.append((ref_order[i], ref_order[j], max(0.05, done[ref_order[i]] - done[ref_order[j]])))
    return out


def write_tables(out: Path, t_ref: float, trials: list[dict], s3: bool) -> dict:
    """chaos.json + chaos.md (the table) under `out`; returns the result dict."""
    kinds = Counter(k for t in trials for k in t["kinds"])
    result = {"reference_s": round(t_ref, 1), "trials": trials, "kinds": dict(kinds), "s3": s3,
              "identical": sum(t["identical"] for t in trials), "n": len(trials)}
    (out / "chaos.json").write_text(json.dumps(result, indent=1))
    md = [f"reference run {t_ref:.0f}s; identical final weights {result['identical']}/{result['n']}"
          f"{' (SeaweedFS root)' if s3 else ''}", "",
          "| trial | killed at (s) | running at the kill | resume (s) | lost (s) | identical weights |",
          "|---|---|---|---|---|---|"]
    for t in trials:
        md.append(f"| {t['trial']} | {t['kill_at_s']} | {', '.join(t['active']) or 'finished'} ({', '.join(t['kinds'])})"
                  f" | {t['resume_s']} | {t['lost_s']} | {'yes' if t['identical'] else 'NO'} |")
    md += ["", "kill points per task kind: " + ", ".join(f"{k} {kinds.get(k, 0)}" for k in TASK_KINDS)]
    (out / "chaos.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


def from_logs(out: Path) -> dict:
    """Rebuild the table from a finished benchmark folder (its logs and chaos.json)."""
    old = json.loads((out / "chaos.json").read_text())
    ref_order = finished_order(read_log(out / "reference.log"))
    trials = []
    for t in old["trials"]:
        lines = [(x, l) for x, l in read_log(out / f"trial-{t['trial']:02d}-killed.log") if x <= t["kill_at_s"]]
        where = [killed_in(ref_order, lines)] if t["killed"] else []
        trials.append({**t, "active": where, "kinds": sorted({task_kind(n) for n in where})})
    return write_tables(out, old["reference_s"], trials, old["s3"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "chaos")
    ap.add_argument("--s3", action="store_true", help="storage on a SeaweedFS server on 127.0.0.1 (weed mini)")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra config overrides")
    ap.add_argument("--concurrent", action="store_true", help="instead: two cropi run on one root at once")
    ap.add_argument("--targeted", default="", help="instead of uniform moments: one trial per task kind listed "
                    "(e.g. rollouts,grads-chunk,finalize,scores,selection,train,eval,report), killed at a seeded "
                    "uniform moment inside that task (uniform moments over a run rarely land in sub-second tasks)")
    ap.add_argument("--inside", default="", help="instead: one trial per task name listed (e.g. selection,scores): "
                    "the task SIGKILLs its own process group after writing its payload, before committing it "
                    "(CROPI_KILL, tasks.common.maybe_kill) — for tasks too short to hit by timing")
    ap.add_argument("--reference-from", type=Path, default=None,
                    help="reuse the reference run of an earlier local benchmark folder (its --out) instead of a new one")
    ap.add_argument("--from-logs", action="store_true", help="only rebuild the table from --out's logs")
    args = ap.parse_args(argv)
    if args.from_logs:
        from_logs(args.out)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    server = None
    if args.s3:
        sys.path.insert(0, str(REPO / "tests"))
        from seaweed import start_seaweed

        server = start_seaweed(buckets=("cropi-chaos",))
        env.update(server.env())
        os.environ.update(server.env())
        base = "s3://cropi-chaos/" + args.out.name
    else:
        base = str(args.out / "roots")
    rng = random.Random(args.seed)
    if args.concurrent:
        try:
            res = concurrent(base, env, args.out, args.extra)
            (args.out / "concurrent.json").write_text(json.dumps(res, indent=1))
            return 0 if all(all(rc == 0 for rc in r["rc"].values()) and not r["damaged"] for r in res.values()) else 1
        finally:
            if server is not None:
                server.stop()
    try:
        if args.reference_from is not None:  # the uninterrupted run of an earlier benchmark (same config)
            ref_root = str(args.reference_from / "roots" / "reference")
            ref_lines = read_log(args.reference_from / "reference.log")
            t_ref = json.loads((args.reference_from / "chaos.json").read_text())["reference_s"]
        else:
            ref_root = f"{base}/reference"
            t_ref, rc, ref_lines = run(cropi_cmd(ref_root, "ref", args.extra), env, args.out / "reference.log")
            if rc != 0:
                print(f"reference run failed (rc {rc}); see {args.out / 'reference.log'}", file=sys.stderr)
                return 1
        ref = final_weights(ref_root, "ref")
        ref_order = finished_order(ref_lines)
        print(f"reference: {t_ref:.1f}s, final weights {list(ref.values())[0][:12]}")
        trials = []
        plan = targets(ref_order, ref_lines, args.targeted.split(",")) if args.targeted else []
        inside = [k for k in args.inside.split(",") if k]
        aimed = inside or [task for task, _, _ in plan]  # recorded per trial as aimed_at
        for i in range(len(inside) or len(plan) or args.trials):
            root = f"{base}/trial-{i:02d}"
            name = f"trial-{i:02d}"
            if inside:  # the task kills its own process group after writing its payload, before its commit
                killed_s, rc1, lines = run(cropi_cmd(root, name, args.extra), {**env, "CROPI_KILL": inside[i]},
                                           args.out / f"trial-{i:02d}-killed.log")
                at = killed_s
            elif plan:  # kill inside the task: a seeded uniform moment of its reference duration after its predecessor
                task, after, window = plan[i]
                delay = rng.uniform(0.0, window)
                killed_s, rc1, lines = run(cropi_cmd(root, name, args.extra), env,
                                           args.out / f"trial-{i:02d}-killed.log", kill_after=(after, delay))
                at = killed_s
                print(f"trial {i}: aimed at {task} ({delay:.2f}s after {after} finished)")
            else:
                at = rng.uniform(0.0, t_ref)
                killed_s, rc1, lines = run(cropi_cmd(root, name, args.extra), env,
                                           args.out / f"trial-{i:02d}-killed.log", kill_at=at)
            where = [killed_in(ref_order, lines)] if rc1 != 0 else []
            resume_s, rc2, _ = run(cropi_cmd(root, name, args.extra), env, args.out / f"trial-{i:02d}-resume.log")
            same = rc2 == 0 and final_weights(root, name) == ref
            row = {"trial": i, "kill_at_s": round(at, 2), "killed": rc1 != 0, "active": where,
                   **({"aimed_at": aimed[i]} if aimed else {}),
                   "kinds": sorted({task_kind(n) for n in where}), "resume_s": round(resume_s, 1),
                   "lost_s": round(killed_s + resume_s - t_ref, 1), "resume_rc": rc2, "identical": same}
            trials.append(row)
            print(json.dumps(row))
        result = write_tables(args.out, t_ref, trials, args.s3)
        return 0 if result["identical"] == result["n"] else 1
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
