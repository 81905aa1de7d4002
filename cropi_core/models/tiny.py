"""The embedded tiny policy: a Qwen2-architecture causal LM (~1M parameters) over the char tokenizer."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from cropi_core.config import TinyModelConfig


def tiny_config(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2Config:
    """Qwen2Config for `cfg` with the tokenizer's vocabulary and special ids; eager attention, untied head."""
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        # per-example gradients (torch.func / hooks) with padding need the plain softmax path
        attn_implementation="eager",
        use_cache=True,
    )


def build_tiny(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2ForCausalLM:
    """A freshly initialised tiny Qwen2ForCausalLM in float32, eval mode; identical for identical (cfg, vocab).

    Initialisation draws from a private RNG seeded with `cfg.seed`; the global torch RNG is left untouched.
    """
    if cfg.hidden_size % cfg.num_attention_heads or cfg.num_attention_heads % cfg.num_key_value_heads:
        from cropi_core.errors import ConfigError

        raise ConfigError(
            f"model.tiny: hidden_size {cfg.hidden_size} must divide by num_attention_heads {cfg.num_attention_heads}, "
            f"which must divide by num_key_value_heads {cfg.num_key_value_heads}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Qwen2ForCausalLM(tiny_config(cfg, tokenizer))
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    return model.float().eval()


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
