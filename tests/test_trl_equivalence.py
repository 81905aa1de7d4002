"""At θ = β the gradient of our scoring loss is the gradient of TRL's own GRPO loss on the same batch."""

from __future__ import annotations

import pytest
import torch

from cropi_core.influence import PromptRollouts, sketch_prompts
from cropi_core.objective import group_advantages
from cropi_core.projection import make_projector

trl = pytest.importorskip("trl")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def char_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz0123456789 ")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tok = char_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      attn_implementation="eager", tie_word_embeddings=False, pad_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), use_cpu=True, bf16=False, report_to="none",
                      num_generations=4, per_device_train_batch_size=4, beta=0.0, max_completion_length=16,
                      temperature=1.0)
    tr = GRPOTrainer(model=model, reward_funcs=[lambda prompts, completions, **kw: [0.0] * len(prompts)], args=args,
                     train_dataset=Dataset.from_dict({"prompt": ["ab", "cd"]}), processing_class=tok)
    tr.model.double()
    tr.current_gradient_accumulation_steps = 1
    return tr


def batch(model, vocab: int, k: int = 4, p_len: int = 5):
    """Two prompts (equal prompt length: no left padding) × K right-padded completions, with β = the model."""
    g = torch.Generator().manual_seed(1)
    prompts = []
    for rewards in ([1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]):
        p = torch.randint(1, vocab, (p_len,), generator=g)
        rs = [torch.randint(1, vocab, (int(n),), generator=g) for n in torch.randint(2, 12, (k,), generator=g)]
        lbs = []
        with torch.no_grad():
            for r in rs:
                ids = torch.cat([p, r])[None]
                lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
                lbs.append(lp[p_len - 1 : -1].gather(-1, r[:, None]).squeeze(-1))
        prompts.append(PromptRollouts(p, rs, lbs, torch.tensor(rewards)))
    return prompts


def trl_grad(tr, prompts, loss_type: str) -> torch.Tensor:
    tr.loss_type = loss_type
    tr.args.loss_type = loss_type
    comp = [r for p in prompts for r in p.response_ids]
    t = max(r.numel() for r in comp)
    completion_ids = torch.stack([torch.nn.functional.pad(r, (0, t - r.numel())) for r in comp])
    completion_mask = torch.stack([(torch.arange(t) < r.numel()).long() for r in comp])
    prompt_ids = torch.stack([p.prompt_ids for p in prompts for _ in p.response_ids])
    inputs = {
        "prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "advantages": torch.cat([group_advantages(p.rewards.double()) for p in prompts]),
        "num_items_in_batch": completion_mask.sum(),
    }
    model = tr.model
    model.train()
    model.zero_grad()
    for q in model.parameters():
        q.requires_grad_(True)
    loss = tr._compute_loss(model, inputs)
    loss.backward()
    out = torch.cat([q.grad.reshape(-1) for _, q in model.named_parameters()])
    model.zero_grad()
    return out


@pytest.mark.parametrize("loss_type,aggregation", [("grpo", "seq_mean_token_mean"), ("dapo", "token_mean")])
def test_gradient_equals_trl_grpo_loss(trainer, loss_type, aggregation):
    model = trainer.model
    prompts = batch(model, model.config.vocab_size)
    ref = trl_grad(trainer, prompts, loss_type)
    rows = sketch_prompts(model, prompts, make_projector("exact", model, 0, dtype=torch.float64),
                          aggregation=aggregation)
    if loss_type == "grpo":  # TRL: mean over all B·K sequences = mean of per-prompt losses
        ours = rows.mean(0)
    else:  # TRL: Σ all tokens / all tokens = per-prompt token means weighted by token share
        n = torch.tensor([sum(r.numel() for r in p.response_ids) for p in prompts], dtype=torch.float64)
        ours = (rows * (n / n.sum())[:, None]).sum(0)
    assert float((ours - ref).norm() / ref.norm()) < 1e-6
    # the check can fail: the other aggregation's gradient differs from TRL's for this loss type
    other = sketch_prompts(model, prompts, make_projector("exact", model, 0, dtype=torch.float64),
                           aggregation="token_mean" if aggregation == "seq_mean_token_mean" else "seq_mean_token_mean")
    assert float((other.mean(0) - ref).norm() / ref.norm()) > 1e-3
