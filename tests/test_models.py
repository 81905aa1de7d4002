"""Models: char tokenizer round trip, tiny model build/save/load, load_model errors, bootstrap raises pass rate."""

from __future__ import annotations

import random
from pathlib import Path
import sys
import time

import pytest
import torch
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from cropi_core.config import BootstrapConfig, ModelConfig, SyntheticConfig, TinyModelConfig
from cropi_core.data import CHARSET, format_prompt, generate_mixture, generate_problems
from cropi_core.errors import ConfigError, ModelError
from cropi_core.models import bootstrap, build_char_tokenizer, build_tiny, load_model, load_tokenizer, num_parameters, save_model
from cropi_core.models.bootstrap import collate, encode_pairs
from cropi_core.models.tokenizer import BOS, EOS, PAD

SMALL = TinyModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)
INSTRUCTION = "Answer in \\boxed{}."


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return build_char_tokenizer()


def _random_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = CHARSET
    out = ["", " ", "\n", "  a  b \n\n c  ", "\\boxed{12}", "Compute 7*38. " + INSTRUCTION, "{}}{ \\\\ $x^2$ ~`|"]
    out += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(n)]
    return out


def test_char_tokenizer_round_trips_every_charset_string(tok, tmp_path):
    assert set(CHARSET) <= set(tok.get_vocab()), "every synthetic character has its own token"
    strings = _random_strings(300)
    for s in strings:
        ids = tok.encode(s, add_special_tokens=False)
        assert len(ids) == len(s), f"one token per character: {s!r}"
        assert tok.decode(ids) == s
    tok.save_pretrained(tmp_path)
    for again in (PreTrainedTokenizerFast.from_pretrained(tmp_path), load_tokenizer(tmp_path)):
        assert again.get_vocab() == tok.get_vocab()
        for s in strings[:50]:
            assert again.encode(s, add_special_tokens=False) == tok.encode(s, add_special_tokens=False)
            assert again.decode(again.encode(s, add_special_tokens=False)) == s
        assert (again.pad_token, again.eos_token) == (PAD, EOS)


def test_char_tokenizer_special_tokens_and_chat_template(tok):
    assert (tok.pad_token_id, tok.convert_tokens_to_ids(BOS), tok.eos_token_id) == (0, 1, 2)
    text = format_prompt("Compute 2+3.", tok, template="chat_boxed", instruction=INSTRUCTION)
    assert text == f"{BOS}user:Compute 2+3. {INSTRUCTION}{EOS}{BOS}assistant:"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[0] == 1 and ids.count(tok.eos_token_id) == 1, "special tokens are atomic, not spelled out"
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == f"user:Compute 2+3. {INSTRUCTION}assistant:"
    # characters outside the vocabulary map to the pad/unknown token instead of failing
    assert tok.encode("é", add_special_tokens=False) == [tok.pad_token_id]


def test_build_tiny_shape_and_determinism(tok):
    m = build_tiny(TinyModelConfig(), tok)
    assert isinstance(m, Qwen2ForCausalLM)
    assert 0.5e6 <= num_parameters(m) <= 1.5e6, num_parameters(m)
    assert m.config._attn_implementation == "eager" and not m.config.tie_word_embeddings
    assert m.lm_head.weight.data_ptr() != m.model.embed_tokens.weight.data_ptr()
    assert m.config.vocab_size == len(tok) and not m.training
    rng_before = torch.get_rng_state()
    a, b = build_tiny(SMALL, tok), build_tiny(SMALL, tok)
    assert torch.equal(torch.get_rng_state(), rng_before), "init uses a private RNG"
    c = build_tiny(SMALL.model_copy(update={"seed": 1}), tok)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["lm_head.weight"], sc["lm_head.weight"])
    with pytest.raises(ConfigError, match="num_attention_heads"):
        build_tiny(SMALL.model_copy(update={"num_attention_heads": 3}), tok)


def test_tiny_save_load_identical(tok, tmp_path):
    model = build_tiny(SMALL, tok)
    with torch.no_grad():  # make weights differ from a fresh init, so loading cannot pass by re-initialising
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_model(model, tok, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded, tok2 = load_model(str(tmp_path / "ckpt"))
    assert isinstance(tok2, PreTrainedTokenizerFast) and tok2.get_vocab() == tok.get_vocab()
    assert tok2.chat_template == tok.chat_template
    s1, s2 = model.state_dict(), loaded.state_dict()
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1), "bit-identical weights"
    assert loaded.config._attn_implementation == "eager" and not loaded.training
    ids = torch.tensor([tok.encode("Compute 12+34. \\boxed{46}")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    # ModelConfig path form and the embedded name
    via_cfg, _ = load_model(ModelConfig(name_or_path=str(tmp_path / "ckpt"), device="cpu"))
    assert torch.equal(via_cfg.lm_head.weight, model.lm_head.weight)
    fresh, ftok = load_model("tiny")
    assert isinstance(fresh, Qwen2ForCausalLM) and ftok.get_vocab() == tok.get_vocab()


def test_load_model_bad_inputs_are_one_line(tmp_path):
    before = sorted(tmp_path.rglob("*"))
    cases = [
        (str(tmp_path / "nope"), "model path not found"),
        (str(tmp_path), "no config.json"),
    ]
    (tmp_path / "file.bin").write_text("x")
    cases.append((str(tmp_path / "file.bin"), "expected a model folder"))
    (tmp_path / "cfgonly").mkdir()
    (tmp_path / "cfgonly" / "config.json").write_text("{}")
    cases.append((str(tmp_path / "cfgonly"), "no weights"))
    before = sorted(tmp_path.rglob("*"))
    for path, needle in cases:
        with pytest.raises(ModelError) as err:
            load_model(path)
        msg = str(err.value)
        assert needle in msg and "\n" not in msg, msg
        assert path.split("/")[-1] in msg, msg
    with pytest.raises(ModelError, match="unknown dtype 'float8'"):
        load_model("tiny", dtype="float8")
    assert sorted(tmp_path.rglob("*")) == before, "nothing written"


def test_gguf_without_package_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now raises ImportError
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path), gguf_file="m.gguf")
    msg = str(err.value)
    assert "'gguf' package" in msg and "\n" not in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_bootstrap_masks_prompt_tokens(tok):
    probs = generate_problems("add", 3, seed=0)
    pairs = encode_pairs(tok, probs, template="chat_boxed", instruction=INSTRUCTION)
    ids, mask, labels = collate(pairs, tok.pad_token_id)
    for row, (p, (a, b)) in enumerate(zip(probs, pairs)):
        assert tok.decode(b) == f"\\boxed{{{p.gold}}}{EOS}"
        kept = labels[row][labels[row] != -100].tolist()
        assert kept == b, "loss only on the response tokens"
        assert (labels[row, : len(a)] == -100).all() and mask[row].sum() == len(a) + len(b)


def _boxed_int_rate(model, tok, problems) -> float:
    """Fraction of greedy responses that end in a parseable `\\boxed{<integer>}` (the answer format)."""
    from cropi_core.rollout.hf import generate
    from cropi_core.verify import extract_boxed, parse_int

    texts = [format_prompt(p, tok, instruction=INSTRUCTION) for p in problems]
    gen = generate(model, tok, texts, 1, do_sample=False, max_new_tokens=12)
    outs = [tok.decode(rs[0], skip_special_tokens=True) for rs in gen.responses]
    return sum(parse_int(extract_boxed(o) or "x") is not None for o in outs) / len(outs)


def test_bootstrap_teaches_the_answer_format(tok):
    """A reduced bootstrap (40 steps): loss drops, the boxed-integer format goes from never to (almost) always.

    Pass rates are printed, not asserted here: 40 steps do not teach arithmetic (see the report for the
    measured pass rates of longer bootstraps)."""
    from cropi_core.evaluation import evaluate

    model = build_tiny(TinyModelConfig(), tok)
    tests = generate_problems("add", 32, seed=123)
    train = generate_mixture(["add"], 400, seed=7, exclude=[p.prompt for p in tests])
    kw = dict(template="chat_boxed", instruction=INSTRUCTION, max_new_tokens=12, progress=False)
    fmt_before, before = _boxed_int_rate(model, tok, tests), evaluate(model, tok, tests, **kw)
    t0 = time.perf_counter()
    stats = bootstrap(model, tok, train, BootstrapConfig(steps=40, lr=3e-3, batch_size=32), template="chat_boxed",
                      instruction=INSTRUCTION, progress=False)
    fmt_after, after = _boxed_int_rate(model, tok, tests), evaluate(model, tok, tests, **kw)
    print(f"\nbootstrap {stats['steps']} steps {time.perf_counter() - t0:.1f}s loss {stats['loss_first']:.2f}->{stats['loss_last']:.2f}"
          f" boxed-int rate {fmt_before:.2f}->{fmt_after:.2f} add greedy pass@1 {before.accuracy:.2f}->{after.accuracy:.2f}")
    assert stats["loss_last"] < 0.5 * stats["loss_first"]
    assert fmt_before == 0.0 and before.accuracy == 0.0
    assert fmt_after >= 0.9, fmt_after


def test_concurrent_loads_in_threads_give_intact_models(tok, tmp_path):
    """Prefect runs tasks in a thread pool, so several tasks load checkpoints at once. A model with tied
    input/output embeddings (like SmolLM2) must come back with the saved weights in every thread: unguarded
    concurrent `from_pretrained` calls left some with a random lm_head or meta tensors."""
    from concurrent.futures import ThreadPoolExecutor

    from transformers import Qwen2Config

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    save_model(Qwen2ForCausalLM(config), tok, tmp_path / "m")
    want = {k: v.clone() for k, v in load_model(str(tmp_path / "m"))[0].state_dict().items()}

    def load(_: int) -> list[str]:
        model = load_model(str(tmp_path / "m"))[0]
        bad = [k for k, v in model.state_dict().items() if v.is_meta or not torch.equal(v, want[k])]
        if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
            bad.append("lm_head not tied")
        return bad

    with ThreadPoolExecutor(6) as pool:
        problems = [b for bad in pool.map(load, range(36)) for b in bad]
    assert not problems, problems[:5]


def test_model_alias_resolves_to_the_installed_wheel():
    from cropi_core.config import MODEL_ALIASES, load_config, resolve_alias
    from cropi_core.models.gguf import smollm2_gguf_dir

    folder, gguf = resolve_alias("smollm2-135m-instruct")
    package, file, _ = MODEL_ALIASES["smollm2-135m-instruct"]
    assert gguf == file and (Path(folder) / file).is_file()
    assert Path(folder) == smollm2_gguf_dir()
    assert resolve_alias("/some/folder", "x.gguf") == ("/some/folder", "x.gguf")  # not an alias: unchanged
    # the shipped config names the model by alias; loading it keeps the alias (it is the key), checks the wheel
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "smollm2-gsm8k.yaml")
    assert cfg.model.name_or_path == "smollm2-135m-instruct"


def test_model_alias_not_installed_is_one_line(monkeypatch):
    from cropi_core import config as C

    monkeypatch.setitem(C.MODEL_ALIASES, "smollm2-135m-instruct",
                        ("cropi_no_such_wheel", "model.gguf", "pip install cropi-no-such-wheel"))
    for call in (lambda: C.resolve_alias("smollm2-135m-instruct"),
                 lambda: C.load_config(None, {"model.name_or_path": "smollm2-135m-instruct"}),
                 lambda: load_model("smollm2-135m-instruct")):
        with pytest.raises(ConfigError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and "'smollm2-135m-instruct' is not installed" in msg
        assert "pip install cropi-no-such-wheel" in msg
