"""Data: every shared dataset loads with the README's row counts; extractors, splits, dedup, templates, synthetic suite."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cropi_core.config import DataConfig, DatasetSpec, SyntheticConfig
from cropi_core.data import (CHARSET, DOMAINS, DataSplits, Problem, build_splits, dedup, dedup_key, format_prompt,
                             generate_mixture, generate_problems, generate_suite, load_acc_history, load_dataset,
                             problems_from_jsonl, problems_to_jsonl, read_dataset, split_val_test)
from cropi_core.data.extractors import boxed, gsm8k_hash, normalize_gold, strip_parenthetical
from cropi_core.errors import ConfigError, ModelError
from cropi_core.verify import reward

# (relative path, spec kwargs, rows in the file per README, rows skipped for an empty/null answer)
SHARED_FILES = {
    "gsm8k_train": ("gsm8k/train.jsonl", dict(extractor="gsm8k_hash", verifier="exact"), 7473, 0),
    "gsm8k_test": ("gsm8k/test.jsonl", dict(extractor="gsm8k_hash", verifier="exact"), 1319, 0),
    # README says 2 empty answers; there are 2 null and 2 "" (rows 887, 1010, 5329, 5331)
    "math_train": ("math/train.jsonl", dict(prompt_field="problem", domain_field="type", meta_fields=["difficulty"]), 7474, 4),
    "math500": ("qwen25_math_eval/math500/test.jsonl",
                dict(prompt_field="problem", id_field="unique_id", domain_field="subject", meta_fields=["level"]), 500, 0),
    "dsr_sub": ("deepscaler/dsr_sub.jsonl", dict(prompt_field="problem", id_field="index", meta_fields=["index"]), 1209, 1),
    "aime_1983_2023": ("deepscaler/aime_1983_2023.jsonl", dict(prompt_field="problem", verifier="exact"), 975, 0),
    "amc22_23": ("amc22_23/test.jsonl", dict(prompt_field="problem", verifier="exact"), 83, 0),
    "aime24": ("qwen25_math_eval/aime24/test.jsonl", dict(prompt_field="problem", id_field="id", verifier="exact"), 30, 0),
    "aime25": ("qwen25_math_eval/aime25/test.jsonl", dict(prompt_field="problem"), 30, 0),  # one gold is 336^\\circ
    "amc23": ("qwen25_math_eval/amc23/test.jsonl", dict(prompt_field="problem", id_field="id"), 40, 0),
    "gaokao2023en": ("qwen25_math_eval/gaokao2023en/test.jsonl", dict(prompt_field="question"), 385, 2),
    "college_math": ("qwen25_math_eval/college_math/test.jsonl", dict(prompt_field="question"), 2818, 0),
    "svamp": ("qwen25_math_eval/svamp/test.jsonl",
              dict(prompt_field=["Body", "Question"], answer_field="Answer", id_field="ID"), 1000, 0),
    "asdiv": ("qwen25_math_eval/asdiv/test.jsonl",
              dict(prompt_field=["body", "question"], extractor="strip_parenthetical"), 2215, 0),
}


def spec(data_dir: Path, name: str, **over) -> DatasetSpec:
    rel, kw, _, _ = SHARED_FILES[name]
    return DatasetSpec(name=name, path=str(data_dir / rel), **{**kw, **over})


@pytest.fixture(scope="module")
def loaded(data_dir):
    return {name: read_dataset(spec(data_dir, name)) for name in SHARED_FILES}


def test_every_shared_file_is_covered(data_dir):
    files = {str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file() and p.name != "README.md"}
    covered = {rel for rel, *_ in SHARED_FILES.values()} | {"deepscaler/dsr_sub_acc_step_500.json"}
    assert files == covered and len(files) == 15


@pytest.mark.parametrize("name", list(SHARED_FILES))
def test_shared_file_row_counts(loaded, name):
    _, _, rows, skipped = SHARED_FILES[name]
    res = loaded[name]
    assert res.rows == rows
    assert len(res.skipped_empty_answer) == skipped
    assert len(res.problems) == rows - skipped
    ids = [p.id for p in res.problems]
    assert len(set(ids)) == len(ids) and all(i.startswith(f"{name}/") for i in ids)
    assert all(p.prompt.strip() and p.gold.strip() and p.source == name for p in res.problems)
    assert all(p.gold == p.gold.strip() for p in res.problems)


def test_acc_history(data_dir, loaded):
    hist = load_acc_history(str(data_dir / "deepscaler/dsr_sub_acc_step_500.json"))
    assert len(hist) == 1209 and set(hist) == set(range(1209))
    lengths = {len(v) for v in hist.values()}
    assert min(lengths) == 44 and max(lengths) == 57
    assert all(0.0 <= a <= 1.0 for v in hist.values() for a in v)
    assert statistics.pvariance(hist[0]) >= 0.0
    # the history joins the DSR-sub problems through meta["index"]
    assert all(p.meta["index"] in hist for p in loaded["dsr_sub"].problems)


def test_gsm8k_golds(loaded, data_dir):
    train = loaded["gsm8k_train"].problems
    raw = [json.loads(line)["answer"] for line in (data_dir / "gsm8k/train.jsonl").open()]
    assert sum("," in a.split("####")[-1] for a in raw) == 79  # README: 79 golds with a comma ...
    assert all("," not in p.gold and int(p.gold) == int(p.gold) for p in train)  # ... all stripped
    assert sum(p.gold.startswith("-") for p in train) == 3
    assert train[0].gold == "72" and train[0].id == "gsm8k_train/0" and train[0].meta == {"row": 1}


def test_field_mappings(loaded, data_dir):
    svamp = loaded["svamp"].problems[0]
    row = json.loads((data_dir / "qwen25_math_eval/svamp/test.jsonl").open().readline())
    assert svamp.prompt == f"{row['Body']} {row['Question']}" and svamp.gold == "145"  # float 145.0 -> "145"
    assert svamp.id == f"svamp/{row['ID']}"
    assert loaded["asdiv"].problems[0].gold == "9"  # '9 (apples)'
    assert loaded["amc22_23"].problems[0].gold == "142"  # 142.0
    m500 = loaded["math500"].problems[0]
    assert m500.id == "math500/test/precalculus/807.json" and m500.domain == "Precalculus" and m500.meta["level"] == 2
    assert m500.gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    math = loaded["math_train"].problems
    assert {p.domain for p in math} == {"Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra",
                                        "Number Theory", "Prealgebra", "Precalculus"}
    assert loaded["math_train"].skipped_empty_answer == [887, 1010, 5329, 5331]
    # DSR-sub's `prompt` column is problem + the boxed instruction; we keep the question only
    dsr_rows = [json.loads(line) for line in (data_dir / "deepscaler/dsr_sub.jsonl").open()]
    by_index = {r["index"]: r for r in dsr_rows}
    for p in loaded["dsr_sub"].problems[:50]:
        assert by_index[p.meta["index"]]["prompt"].strip().startswith(p.prompt)  # prompts are stripped
    gaokao = loaded["gaokao2023en"].problems
    assert not any(p.gold.startswith("$") and p.gold.endswith("$") and p.gold.count("$") == 2 for p in gaokao)


def test_extractors():
    assert gsm8k_hash("so 3+4=7\n#### 1,000") == "1000"
    assert gsm8k_hash(None) is None
    with pytest.raises(ValueError, match="####"):
        gsm8k_hash("no marker")
    assert boxed("a \\boxed{1} then \\boxed{\\frac{3}{7}}.") == "\\frac{3}{7}"
    assert boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert strip_parenthetical("9 (apples)") == "9" and strip_parenthetical("(2, 3)") == "(2, 3)"
    assert strip_parenthetical("0.5 (meters)") == "0.5"
    assert normalize_gold("142.0", "math") == "142" and normalize_gold("142.50", "math") == "142.50"
    assert normalize_gold("$\\frac{1}{2}$", "math") == "\\frac{1}{2}"
    assert normalize_gold("\\$36", "math") == "\\$36"
    assert normalize_gold(" +1,000.0 ", "exact") == "1000" and normalize_gold("-3", "exact") == "-3"
    with pytest.raises(ValueError, match="not an integer"):
        normalize_gold("\\frac{1}{2}", "exact")


def test_fsspec_urls_and_parquet(tmp_path, data_dir):
    rows = [{"q": f"What is {i}+1?", "a": str(i + 1), "k": i} for i in range(5)]
    # memory:// JSONL, file:// JSON list, local Parquet: same problems
    with fsspec.open("memory://cropi-test/d.jsonl", "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    got = []
    for path in ("memory://cropi-test/d.jsonl", f"file://{tmp_path}/d.json", str(tmp_path / "d.parquet")):
        ps = load_dataset(DatasetSpec(name="d", path=path, prompt_field="q", answer_field="a", id_field="k",
                                      verifier="exact"))
        got.append([(p.id, p.prompt, p.gold) for p in ps])
    assert got[0] == got[1] == got[2] and got[0][3] == ("d/3", "What is 3+1?", "4")
    assert len(load_dataset(DatasetSpec(name="d", path=str(tmp_path / "d.parquet"), prompt_field="q",
                                        answer_field="a", limit=2))) == 2


def test_records_round_trip(loaded):
    ps = loaded["math500"].problems[:20] + generate_problems("word", 5, 0)
    assert [Problem.from_record(p.to_record()) for p in ps] == ps
    assert problems_from_jsonl(problems_to_jsonl(ps)) == ps
    assert json.loads(json.dumps(ps[0].to_record())) == ps[0].to_record()


def test_split_val_test_is_seeded_by_id(loaded):
    ps = loaded["gsm8k_test"].problems
    v, t = split_val_test(ps, 100, seed=0)
    assert len(v) == 100 and len(t) == len(ps) - 100 and not {p.id for p in v} & {p.id for p in t}
    v_rev, _ = split_val_test(list(reversed(ps)), 100, seed=0)
    assert {p.id for p in v_rev} == {p.id for p in v}  # row order does not matter
    v_sub, _ = split_val_test(ps[:-50], 100, seed=0)  # removing rows outside val keeps most of val
    assert len({p.id for p in v_sub} & {p.id for p in v}) >= 90
    v1, _ = split_val_test(ps, 100, seed=1)
    assert len({p.id for p in v1} & {p.id for p in v}) < 30
    assert [p.id for p in v] == [p.id for p in ps if p.id in {q.id for q in v}]  # original order kept


def test_dedup_key_normalises_text():
    a = Problem("s/1", "What is  2+2?\n", "4", "s", "s")
    b = Problem("s/2", "what is 2+2?", "4", "s", "s")
    c = Problem("s/3", "What is 2+3?", "5", "s", "s")
    assert dedup([a, b, c]) == [a, c]
    assert dedup([b, c], against=[a]) == [c]
    assert dedup_key("Ｗhat\tis 2+2?") == dedup_key("what is 2+2?")  # NFKC full-width letters


def test_dedup_pool_against_tests_and_itself(data_dir, loaded):
    # DSR-sub contains 232 MATH-train problems verbatim (whitespace aside)
    math_keys = {dedup_key(p.prompt) for p in loaded["math_train"].problems}
    assert sum(dedup_key(p.prompt) in math_keys for p in loaded["dsr_sub"].problems) == 232
    cfg = DataConfig(synthetic=None, split_seed=0,
                     pool=[spec(data_dir, "math_train"), spec(data_dir, "dsr_sub")],
                     targeted=[spec(data_dir, "math500", val_size=50)],
                     untargeted=[spec(data_dir, "amc23")])
    s = build_splits(cfg)
    assert sorted(s.val) == ["val/math500"] and sorted(s.test_targeted) == ["test/math500"]
    assert list(s.test_untargeted) == ["test/amc23"]
    assert len(s.val["val/math500"]) == 50 and len(s.test_targeted["test/math500"]) == 450
    held = {dedup_key(p.prompt) for ps in s.eval_sets().values() for p in ps}
    pool_keys = [dedup_key(p.prompt) for p in s.pool]
    assert len(set(pool_keys)) == len(pool_keys) and not set(pool_keys) & held
    # independent count: distinct pool prompts minus held-out ones
    all_pool = {dedup_key(p.prompt) for n in ("math_train", "dsr_sub") for p in loaded[n].problems}
    assert len(s.pool) == len(all_pool - held)
    dsr_kept = [p for p in s.pool if p.source == "dsr_sub"]
    assert len(dsr_kept) <= 1208 - 232  # MATH's copy is the one kept
    # limits count rows after dedup; without dedup duplicates stay
    cfg2 = cfg.model_copy(update={"dedup": False})
    assert len(build_splits(cfg2).pool) == 7470 + 1208


def test_format_prompt(shared_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(shared_dir / "models/qwen2-tokenizer")
    # that folder's own chat template is rtp-llm test data (it appends "template ends here"): use ChatML
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    p = Problem("x/1", "What is 2+3?", "5", "x", "x")
    text = format_prompt(p, tok, "chat_boxed", "Answer in \\boxed{}.")
    assert text == "<|im_start|>user\nWhat is 2+3? Answer in \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    tok.chat_template = None
    with pytest.raises(ModelError, match="no chat template"):
        format_prompt(p, tok)
    assert format_prompt("Q?", None, "plain_boxed", "Box it.") == "Q? Box it.\n"
    assert format_prompt(p, None, "raw") == "What is 2+3?"
    with pytest.raises(ValueError, match="unknown prompt template"):
        format_prompt(p, tok, "fancy")


# ---------------------------------------------------------------- synthetic suite

def test_generate_problems_deterministic_unique_and_correct():
    for d in DOMAINS:
        a, b = generate_problems(d, 300, seed=3), generate_problems(d, 300, seed=3)
        assert a == b and generate_problems(d, 300, seed=4) != a
        assert len({p.prompt for p in a}) == 300 and len({p.id for p in a}) == 300
        levels = {p.meta["level"] for p in a}
        assert len(levels) >= 2 and levels <= {1, 2, 3}, (d, levels)
        for p in a:
            assert p.verifier == "exact" and p.domain == d and p.source == "synthetic"
            assert str(int(p.gold)) == p.gold and int(p.gold) >= 0
            assert len(p.prompt) <= 80
            assert reward(p, f"\\boxed{{{p.gold}}}") == 1.0 and reward(p, f"\\boxed{{{int(p.gold) + 1}}}") == 0.0
            if p.prompt.startswith("Compute "):  # check arithmetic independently
                assert eval(p.prompt[len("Compute "):-1]) == int(p.gold)  # noqa: S307 (digits and +-* only)


def test_word_problem_answers():
    for p in generate_problems("word", 200, seed=0):
        nums = [int(w) for w in p.prompt.replace("?", " ").replace(".", " ").split() if w.isdigit()]
        op = p.meta["op"]
        want = nums[0] + nums[1] if op == "add" else nums[0] - nums[1] if op == "sub" else nums[0] * nums[1]
        assert int(p.gold) == want, p.prompt


def test_generate_suite_layout_and_no_overlap():
    cfg = SyntheticConfig()
    s = generate_suite(cfg)
    assert isinstance(s, DataSplits)
    assert sorted(s.val) == ["val/two_step", "val/word"]
    assert sorted(s.test_targeted) == ["test/two_step", "test/word"]
    assert sorted(s.test_untargeted) == ["test/add", "test/max", "test/mul", "test/sub"]
    assert len(s.pool) == 6 * cfg.pool_size and all(len(v) == cfg.val_size for v in s.val.values())
    assert all(len(v) == cfg.test_size for v in s.eval_sets().values() if v not in s.val.values())
    targeted_share = sum(p.domain in cfg.targeted for p in s.pool) / len(s.pool)
    assert targeted_share == pytest.approx(2 / 6)
    prompts = [p.prompt for p in s.all_problems()]
    ids = [p.id for p in s.all_problems()]
    assert len(set(prompts)) == len(prompts) and len(set(ids)) == len(ids)
    assert [p.domain for p in s.pool[:12]] != sorted(p.domain for p in s.pool[:12])  # mixed
    assert generate_suite(cfg).pool == s.pool  # deterministic
    small = generate_suite(SyntheticConfig(domains=["add", "mul"], targeted=["mul"], pool_size=10,
                                           pool_per_domain={"mul": 3}, val_size=4, test_size=5))
    assert small.sizes() == {"pool": 13, "val/mul": 4, "test/mul": 5, "test/add": 5}
    # fewer untargeted test prompts: targeted sets unchanged, each untargeted test set a prefix of the old one
    skew = generate_suite(SyntheticConfig(domains=["add", "mul"], targeted=["mul"], pool_size=10,
                                          pool_per_domain={"mul": 3}, val_size=4, test_size=5, untargeted_test_size=2))
    assert skew.sizes() == {"pool": 13, "val/mul": 4, "test/mul": 5, "test/add": 2}
    assert skew.test_targeted == small.test_targeted and skew.test_untargeted["test/add"] == small.test_untargeted["test/add"][:2]
    assert SyntheticConfig(untargeted_test_size=None).hashable() == SyntheticConfig().hashable()  # old keys kept


def test_generate_mixture_avoids_excluded_prompts():
    s = generate_suite(SyntheticConfig())
    held = {p.prompt for ps in s.eval_sets().values() for p in ps}
    mix = generate_mixture(list(DOMAINS), 600, seed=1, exclude=held)
    assert len(mix) == 600 and not {p.prompt for p in mix} & held
    assert {p.domain for p in mix} == set(DOMAINS) and len({p.id for p in mix}) == 600
    # the default warm-up size (4000) fits beside the suite; an exhausted domain hands its share on
    big = generate_mixture(["mul", "word"], 3000, seed=2, exclude=held)
    n_mul = sum(p.domain == "mul" for p in big)  # mul has 576 distinct prompts, its 64 test prompts held out
    assert len(big) == 3000 and len({p.prompt for p in big}) == 3000 and 400 < n_mul <= 512
    with pytest.raises(ConfigError, match="fewer than 2000 distinct problems"):
        generate_mixture(["mul"], 2000, seed=2)
    with pytest.raises(ConfigError, match="'mul' has fewer than 2000"):
        generate_problems("mul", 2000, seed=2)


def test_longer_generation_extends_the_same_list():
    assert generate_problems("sub", 50, seed=5)[:20] == generate_problems("sub", 20, seed=5)


def test_charset_covers_everything(repo_configs=Path(__file__).resolve().parents[1] / "configs"):
    from cropi_core.config import load_config

    text = "".join(p.prompt + p.gold for d in DOMAINS for p in generate_problems(d, 500, 0))
    text += load_config(repo_configs / "tiny.yaml").data.instruction + "\\boxed{-123}"
    assert set(text) <= set(CHARSET)
    assert len(set(CHARSET)) == len(CHARSET) and "\n" in CHARSET


def test_worked_solutions_are_correct_and_only_for_multi_step_domains():
    """two_step and word carry a worked solution whose every step is true arithmetic and whose boxed answer
    is the gold; one-fact domains have none. The warm-up teaches it for a seeded share of the problems."""
    import re

    from cropi_core.data.synthetic import worked_response
    from cropi_core.models.bootstrap import target_text

    for d in DOMAINS:
        probs = generate_problems(d, 200, seed=3)
        for p in probs:
            w = worked_response(p)
            if d not in ("two_step", "word"):
                assert w is None and target_text(p, 1.0, 0) == f"\\boxed{{{p.gold}}}"
                continue
            steps = re.findall(r"(\d+)([+*-])(\d+)=(\d+)\.", w)
            assert steps and w.endswith(f"\\boxed{{{p.gold}}}"), w
            for a, op, b, c in steps:
                assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c), w
            assert int(steps[-1][3]) == int(p.gold)
        if d in ("two_step", "word"):
            chosen = [target_text(p, 0.5, 7) for p in probs]
            assert chosen == [target_text(p, 0.5, 7) for p in probs]  # a pure function of (problem, seed)
            share = sum(not t.startswith("\\boxed") for t in chosen) / len(chosen)
            assert 0.35 < share < 0.65, share
            assert all(t.startswith("\\boxed") for t in (target_text(p, 0.0, 7) for p in probs))


def test_unboxed_habit_only_on_multi_step_domains_and_scores_zero():
    """bootstrap.unboxed_fraction teaches a seeded share of the multi-step problems an unboxed answer, which the
    `exact` verifier scores 0; worked solutions keep their share, one-fact domains stay boxed; the default (0)
    leaves the bootstrap key unchanged and fractions summing above 1 are rejected."""
    from cropi_core.config import BootstrapConfig, RunConfig
    from cropi_core.models.bootstrap import target_text
    from cropi_core.verify import VERIFIERS

    for d in DOMAINS:
        probs = generate_problems(d, 400, seed=5)
        texts = [target_text(p, 0.5, 1, unboxed_fraction=0.3) for p in probs]
        unboxed = [t for t in texts if t.startswith("Answer: ")]
        if d not in ("two_step", "word"):
            assert not unboxed
            continue
        assert 0.2 < len(unboxed) / len(texts) < 0.4
        worked = sum("=" in t for t in texts) / len(texts)
        assert 0.4 < worked < 0.6  # the same problems are worked as with unboxed_fraction = 0
        assert [t for t in texts if "=" in t] == [t for t in (target_text(p, 0.5, 1) for p in probs) if "=" in t]
        for p, t in zip(probs, texts, strict=True):
            assert VERIFIERS["exact"](t, p.gold) == (0.0 if t.startswith("Answer: ") else 1.0)
    old = BootstrapConfig(unboxed_fraction=0.0, unboxed_domains=None).hashable()
    assert "unboxed_fraction" not in old and "unboxed_domains" not in old  # keys from before the habit existed
    assert BootstrapConfig(unboxed_fraction=0.3).hashable()["unboxed_fraction"] == 0.3
    assert RunConfig().hashable("bootstrap")["unboxed_domains"] == ["two_step", "word", "sub"]
    with pytest.raises(ValueError, match="worked_fraction \\+ unboxed_fraction"):
        BootstrapConfig(worked_fraction=0.8, unboxed_fraction=0.3)


def test_unboxed_domains_put_the_habit_on_a_one_fact_domain():
    """bootstrap.unboxed_domains: a listed one-fact domain (the default's untargeted `sub`) gets the unboxed answer
    for a seeded `unboxed_fraction` of its problems, the multi-step ones keep exactly the same worked/unboxed
    choices as with unboxed_domains=None, unlisted domains stay boxed."""
    from cropi_core.config import BootstrapConfig
    from cropi_core.models.bootstrap import target_text

    listed = ["two_step", "word", "sub"]
    for d in DOMAINS:
        probs = generate_problems(d, 400, seed=5)
        texts = [target_text(p, 0.5, 1, 0.3, listed) for p in probs]
        share = sum(t.startswith("Answer: ") for t in texts) / len(texts)
        if d in ("two_step", "word"):
            assert texts == [target_text(p, 0.5, 1, 0.3) for p in probs]
        elif d == "sub":
            assert 0.2 < share < 0.4, share
            assert all(t.startswith(("Answer: ", "\\boxed{")) for t in texts)
        else:
            assert share == 0.0
    with pytest.raises(ValueError, match="unboxed_domains"):
        BootstrapConfig(unboxed_domains=["nope"])


def test_conflicting_domains_carry_the_other_convention_in_pool_tests_and_warm_up():
    """data.synthetic.conflict_domains: a seeded `conflict_strength` share of the domain's problems (the same draw for
    a problem id everywhere) is verified by `answer_line`; the warm-up teaches those "Answer: gold" (right, reward 1)
    except a seeded `unboxed_fraction` taught boxed (their wrong-format habit, reward 0); other domains unchanged;
    the base key moves only when a conflict domain is set."""
    from collections import Counter

    from cropi_core.config import RunConfig, SyntheticConfig
    from cropi_core.data.synthetic import generate_suite, with_conventions
    from cropi_core.models.bootstrap import target_text
    from cropi_core.verify import VERIFIERS
    from tasks.bootstrap import bootstrap_problems
    from tasks.recipes import base_key

    plain = generate_suite(SyntheticConfig())
    cfg = SyntheticConfig(conflict_domains=["add"])
    s = generate_suite(cfg)
    assert [p.id for p in s.pool] == [p.id for p in plain.pool]  # the same prompts, only verifiers differ
    assert Counter(p.verifier for p in s.pool if p.domain == "add") == {"answer_line": 120}
    assert all(p.verifier == "exact" for p in s.pool if p.domain != "add")
    assert all(p.verifier == "answer_line" for p in s.test_untargeted["test/add"])
    half = generate_suite(SyntheticConfig(conflict_domains=["add"], conflict_strength=0.5))
    n = sum(p.verifier == "answer_line" for p in half.pool if p.domain == "add")
    assert 40 < n < 80, n  # ~ half of 120
    again = with_conventions(plain.pool, ["add"], 0.5, 0)
    assert [p.verifier for p in again] == [p.verifier for p in half.pool]  # a pure function of the id
    for p in (p for p in s.pool if p.domain == "add"):
        t = target_text(p, 0.5, 1, unboxed_fraction=0.3)
        assert VERIFIERS["answer_line"](t, p.gold) == (0.0 if t.startswith("\\boxed{") else 1.0)
    taught = [target_text(p, 0.5, 1, unboxed_fraction=0.3) for p in s.pool if p.domain == "add"]
    assert 0.15 < sum(t.startswith("\\boxed{") for t in taught) / len(taught) < 0.45
    run = RunConfig()
    run.data.synthetic.conflict_domains = ["add"]
    warm = bootstrap_problems(run, exclude=[])
    assert {p.verifier for p in warm if p.domain == "add"} == {"answer_line"}
    assert {p.verifier for p in warm if p.domain != "add"} == {"exact"}
    assert base_key(run) != base_key(RunConfig())
    run.data.synthetic.conflict_domains = []
    assert base_key(run) == base_key(RunConfig())
    with pytest.raises(ValueError, match="conflict_domains"):
        SyntheticConfig(conflict_domains=["two_step"])  # a targeted domain cannot conflict with itself


def test_synthetic_verifiers_set_a_domains_verifier_everywhere_and_leave_keys_alone_when_empty():
    """data.synthetic.verifiers: the named domains' pool, validation and test problems take that verifier (the same
    prompts); unnamed domains keep "exact"; {} is omitted from the keyed config; unknown domains are rejected."""
    from cropi_core.config import SyntheticConfig
    from cropi_core.data.synthetic import generate_suite

    plain = generate_suite(SyntheticConfig())
    cfg = SyntheticConfig(verifiers={"add": "last_number", "two_step": "last_number"})
    s = generate_suite(cfg)
    assert [p.id for p in s.pool] == [p.id for p in plain.pool]
    assert {p.verifier for p in s.pool if p.domain in ("add", "two_step")} == {"last_number"}
    assert {p.verifier for p in s.pool if p.domain not in ("add", "two_step")} == {"exact"}
    assert {p.verifier for p in s.val["val/two_step"]} == {"last_number"}
    assert {p.verifier for p in s.test_untargeted["test/add"]} == {"last_number"}
    assert {p.verifier for p in s.test_targeted["test/word"]} == {"exact"}
    assert "verifiers" not in SyntheticConfig().hashable() and "verifiers" in cfg.hashable()
    with pytest.raises(ValueError, match="verifiers"):
        SyntheticConfig(verifiers={"nope": "exact"})
    with pytest.raises(ValueError):
        SyntheticConfig(verifiers={"add": "fuzzy"})


def test_distractor_share_splits_the_pool_between_targeted_and_other_domains():
    """720 prompts (6 × 120): share 0.8 gives the 4 untargeted domains 576 (144 each) and the 2 targeted 144 (72 each);
    pool_per_domain still overrides a domain; null keeps pool_size per domain."""
    from collections import Counter

    from cropi_core.config import SyntheticConfig
    from cropi_core.data.synthetic import generate_suite

    c = Counter(p.domain for p in generate_suite(SyntheticConfig(distractor_share=0.8)).pool)
    assert c == {"add": 144, "sub": 144, "mul": 144, "max": 144, "two_step": 72, "word": 72}
    c = Counter(p.domain for p in generate_suite(SyntheticConfig(distractor_share=0.8, pool_per_domain={"mul": 10})).pool)
    assert c["mul"] == 10 and c["word"] == 72
    assert Counter(p.domain for p in generate_suite(SyntheticConfig()).pool) == {d: 120 for d in DOMAINS}
    assert "distractor_share" not in SyntheticConfig().hashable() and "conflict_domains" not in SyntheticConfig().hashable()
