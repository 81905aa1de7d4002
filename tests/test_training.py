"""GRPO stage training with TRL on a tiny real Qwen2 model: bit-exact resume, dynamic sampling, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cropi_core.config import TrainConfig
from cropi_core.data import Problem
from cropi_core.errors import CropiError, ModelError
from cropi_core.training import build_trainer, drop_equal_reward_groups, train_grpo, training_order

TEMPLATE, INSTRUCTION = "plain_boxed", "Answer in \\boxed{}."
CHARS = "0123456789+-*= ?.\\{}boxedAnswrin"


def _char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = sorted(set(CHARS) | {"\n"})
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


def _problems(n: int, seed: int = 0) -> list[Problem]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = (int(x) for x in rng.integers(0, 5, size=2))
        out.append(Problem(f"t/{i}", f"{a}+{b}=?", str(a + b), "test", "add", "exact"))
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A ~30k-parameter Qwen2 warmed up for a few seconds to answer '\\boxed{d}' (so rewards are mixed)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from cropi_core.data import format_prompt

    torch.manual_seed(0)
    tok = _char_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128,
                      tie_word_embeddings=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      attn_implementation="eager")
    model = Qwen2ForCausalLM(cfg)
    probs = _problems(64, seed=1)
    texts = [format_prompt(p, tok, template=TEMPLATE, instruction=INSTRUCTION) for p in probs]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    answers = [tok("\\boxed{" + p.gold + "}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for p in probs]
    seqs = [a + b for a, b in zip(ids, answers)]
    width = max(map(len, seqs))
    x = torch.full((len(seqs), width), tok.pad_token_id)
    labels = torch.full_like(x, -100)
    for i, (a, b) in enumerate(zip(ids, answers)):
        x[i, : len(a) + len(b)] = torch.tensor(a + b)
        labels[i, len(a) : len(a) + len(b)] = torch.tensor(b)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = model(input_ids=x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _cfg(**kw) -> TrainConfig:
    base = dict(steps_per_stage=6, prompts_per_step=4, num_generations=4, lr=3e-3, beta=0.01, epsilon=0.2,
                temperature=1.0, max_new_tokens=10, save_steps=2, seed=0, loss_type="grpo")
    base.update(kw)
    return TrainConfig(**base)


class Crash(RuntimeError):
    pass


def test_resume_is_bit_exact(tiny_dir, tmp_path):
    problems = _problems(6)  # 6 problems, 24 prompt slots: several "epochs" in one visiting order
    cfg = _cfg()
    clean = train_grpo(tiny_dir, problems, cfg, tmp_path / "clean", template=TEMPLATE, instruction=INSTRUCTION,
                       progress=False)
    assert clean.steps == 6
    rewards = [h["reward"] for h in clean.log_history if "reward" in h]
    assert len(rewards) == 6 and 0 < max(rewards)  # some completions were correct: real learning signal
    w0 = load_file(tiny_dir / "model.safetensors")
    w_clean = load_file(clean.final_dir / "model.safetensors")
    assert any(not torch.equal(w0[k], w_clean[k]) for k in w0)
    assert (clean.final_dir / "tokenizer.json").exists() and not (tmp_path / "clean" / "checkpoints").exists()

    def crash_at_5(step: int) -> None:
        if step == 5:
            raise Crash(step)

    with pytest.raises(Crash):
        train_grpo(tiny_dir, problems, cfg, tmp_path / "run", template=TEMPLATE, instruction=INSTRUCTION,
                   fault_hook=crash_at_5, progress=False)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-2", "checkpoint-4"] and not (tmp_path / "run" / "final").exists()

    seen: list[int] = []
    resumed = train_grpo(tiny_dir, problems, cfg, tmp_path / "run", template=TEMPLATE, instruction=INSTRUCTION,
                         fault_hook=seen.append, progress=False)
    assert seen == [5, 6]  # only the missing steps ran
    w_res = load_file(resumed.final_dir / "model.safetensors")
    assert w_res.keys() == w_clean.keys()
    for k in w_clean:
        assert torch.equal(w_res[k], w_clean[k]), k
    loss = lambda r: [h["loss"] for h in r.log_history if "loss" in h]  # noqa: E731
    assert loss(resumed) == loss(clean)

    # a finished stage is not retrained; resume=False retrains from scratch to the same weights
    again = train_grpo(tiny_dir, problems, cfg, tmp_path / "run", template=TEMPLATE, instruction=INSTRUCTION,
                       fault_hook=seen.append, progress=False)
    assert seen == [5, 6] and again.steps == 6


def test_dynamic_sampling_drops_equal_groups(tiny_dir, tmp_path):
    """Equal-reward groups contribute no gradient once filtered (they would via KL and the normaliser)."""
    g = 4
    trainer = build_trainer(tiny_dir, _problems(4), _cfg(beta=0.5, dynamic_sampling=True), tmp_path / "ck",
                            template=TEMPLATE, instruction=INSTRUCTION, progress=False)
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model
    model.train()
    torch.manual_seed(1)
    b, t = 3 * g, 7
    rewards = torch.tensor([1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1], dtype=torch.float32)  # group 1 all equal
    grouped = rewards.view(-1, g)
    adv = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1)
    batch = {
        "prompt_ids": torch.randint(3, 20, (b, 5)),
        "prompt_mask": torch.ones(b, 5, dtype=torch.long),
        "completion_ids": torch.randint(3, 20, (b, t)),
        "completion_mask": (torch.rand(b, t) > 0.2).long(),
        "advantages": adv,
        "ref_per_token_logps": -torch.rand(b, t) * 3,
        "num_items_in_batch": torch.tensor(0.0),
    }
    assert torch.equal(adv[g : 2 * g], torch.zeros(g))

    def grads(inputs):
        model.zero_grad()
        trainer._compute_loss(model, inputs).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    filtered, kept = drop_equal_reward_groups(batch, rewards, g)
    assert kept == 2 and filtered["completion_ids"].shape[0] == 2 * g
    assert filtered["num_items_in_batch"] == filtered["completion_mask"].sum()
    keep = torch.tensor([True] * g + [False] * g + [True] * g)
    only_mixed = {k: (v[keep] if v.dim() else v) for k, v in batch.items()}
    g_f, g_m, g_all = grads(filtered), grads(only_mixed), grads(batch)
    assert torch.equal(g_f, g_m)
    # changing the dropped group's tokens changes nothing after filtering ...
    other = dict(batch, completion_ids=batch["completion_ids"].clone())
    other["completion_ids"][g : 2 * g] = torch.randint(3, 20, (g, t))
    assert torch.equal(grads(drop_equal_reward_groups(other, rewards, g)[0]), g_f)
    # ... whereas unfiltered, the equal group still moves the gradient (KL term + 1/B normaliser)
    assert not torch.allclose(g_all, g_f)
    # every group equal: zero gradient, no crash
    none, kept0 = drop_equal_reward_groups(batch, torch.ones(b), g)
    assert kept0 == 0 and torch.count_nonzero(grads(none)) == 0


def test_dynamic_sampling_end_to_end(tiny_dir, tmp_path):
    res = train_grpo(tiny_dir, _problems(4), _cfg(steps_per_stage=2, dynamic_sampling=True, loss_type="dapo"),
                     tmp_path, template=TEMPLATE, instruction=INSTRUCTION, progress=False)
    kept = [h["dynamic_sampling/kept_fraction"] for h in res.log_history if "dynamic_sampling/kept_fraction" in h]
    assert res.steps == 2 and len(kept) == 2 and all(0 <= k <= 1 for k in kept)
    saved = json.loads((res.final_dir / "train_result.json").read_text())
    assert saved["steps"] == 2


def test_training_order_covers_every_problem():
    order = training_order(5, steps=4, prompts_per_step=3, seed=0)
    assert len(order) == 12 and sorted(order[:5].tolist()) == [0, 1, 2, 3, 4]
    assert sorted(order[5:10].tolist()) == [0, 1, 2, 3, 4]
    assert order.tolist() == training_order(5, 4, 3, 0).tolist() != training_order(5, 4, 3, 1).tolist()


def test_bad_inputs(tiny_dir, tmp_path):
    with pytest.raises(CropiError, match="no problems"):
        train_grpo(tiny_dir, [], _cfg(), tmp_path, template=TEMPLATE, instruction=INSTRUCTION, progress=False)
    with pytest.raises(ModelError, match="config.json"):
        train_grpo(tmp_path / "nope", _problems(2), _cfg(), tmp_path, template=TEMPLATE, instruction=INSTRUCTION,
                   progress=False)
    assert not (tmp_path / "final").exists()


def _counted_train(tiny_dir, problems, cfg, out):
    """train_grpo with TRL's generation and loss calls counted: (TrainResult, generations, loss passes, rows per pass)."""
    from cropi_core import training

    calls = {"gen": 0, "loss": 0, "rows": []}
    cls = training._trainer_class()

    class Counted(cls):
        def _generate_and_score_completions(self, inputs):
            calls["gen"] += 1
            return super()._generate_and_score_completions(inputs)

        def _compute_loss(self, model, inputs):
            calls["loss"] += 1
            calls["rows"].append(int(inputs["completion_ids"].shape[0]))
            return super()._compute_loss(model, inputs)

    orig = training._trainer_class
    training._trainer_class = lambda: Counted
    try:
        res = train_grpo(tiny_dir, problems, cfg, out, template=TEMPLATE, instruction=INSTRUCTION, progress=False)
    finally:
        training._trainer_class = orig
    return res, calls


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_micro_batches_take_the_same_step(tiny_dir, tmp_path, loss_type):
    """train.micro_batch_size 8 and 4 (of 16 completions: 4 prompts × 4) = one pass of 16, to float rounding,
    over 2 optimizer steps.

    Same generation: TRL generates the 16 completions once per optimizer step in every case (one randperm of 16
    rows before the split), so rewards and advantages are identical; only the loss is summed over 2 or 4
    micro-batches instead of one pass, which reorders float32 sums (~1e-7 relative in the gradient).
    Tolerance: |Δw| ≤ 1e-6, against a step of ~lr = 3e-3 per weight (measured: ≤ 3e-7). Exception: the
    attention key biases, whose gradient is exactly 0 in exact arithmetic (a bias added to every key shifts a
    query's scores by one constant, which softmax ignores), so theirs is pure rounding noise, which Adam's
    g/(√v + 1e-8) turns into a step of up to lr in a random direction (measured: 9e-6 apart after step 2);
    they get lr/100 = 3e-5. A real difference (other completions, a loss normalised per micro-batch) moves
    weights by ~lr."""
    problems = _problems(8)
    runs = {}
    for mb in (None, 8, 4):
        cfg = _cfg(steps_per_stage=2, save_steps=10, micro_batch_size=mb, loss_type=loss_type)
        runs[mb] = _counted_train(tiny_dir, problems, cfg, tmp_path / f"mb{mb}")
    full, calls_full = runs[None]
    assert calls_full == {"gen": 2, "loss": 2, "rows": [16, 16]}
    w0 = load_file(tiny_dir / "model.safetensors")
    w_full = load_file(full.final_dir / "model.safetensors")
    moved = max((w_full[k] - w0[k]).abs().max().item() for k in w0)
    assert moved > 1e-3  # the step did something
    reward = lambda r: [h["reward"] for h in r.log_history if "reward" in h]  # noqa: E731
    for mb, n in ((8, 2), (4, 4)):
        res, calls = runs[mb]
        assert res.steps == 2
        assert calls == {"gen": 2, "loss": 2 * n, "rows": [mb] * (2 * n)}  # generated once per step, n passes of mb
        assert reward(res) == reward(full)  # the same completions were sampled
        w = load_file(res.final_dir / "model.safetensors")
        for k in w_full:
            tol = 3e-5 if k.endswith("k_proj.bias") else 1e-6
            diff = (w[k] - w_full[k]).abs().max().item()
            assert diff <= tol, (mb, k, diff)


def test_micro_batch_size_must_divide_the_step(tiny_dir, tmp_path):
    from cropi_core.errors import ConfigError
    from cropi_core.training import micro_batching

    assert micro_batching(_cfg()) == (16, 1) and micro_batching(_cfg(micro_batch_size=4)) == (4, 4)
    with pytest.raises(ValueError) as e:
        _cfg(micro_batch_size=6)
    line = str(e.value)
    assert "micro_batch_size" in line and "must divide" in line and "4 × 4 = 16" in line
    cfg = _cfg(micro_batch_size=8)
    cfg.prompts_per_step = 3  # assignment validates only the assigned field: training checks again
    with pytest.raises(ConfigError) as e:
        train_grpo(tiny_dir, _problems(4), cfg, tmp_path, template=TEMPLATE, instruction=INSTRUCTION, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg == ("train.micro_batch_size: must divide train.prompts_per_step × "
                                       "train.num_generations = 3 × 4 = 12 (got 8)")
    for bad in ({"loss_type": "bnpo"}, {"dynamic_sampling": True}):
        with pytest.raises(ValueError, match="micro_batch_size"):
            _cfg(micro_batch_size=4, **bad)
    assert _cfg(micro_batch_size=16, loss_type="bnpo").micro_batch_size == 16  # the whole step: nothing changes
