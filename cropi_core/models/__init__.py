"""Policies: the embedded tiny Qwen2 + char tokenizer, local HF / GGUF checkpoints, and the supervised warm-up."""

from cropi_core.models.bootstrap import bootstrap
from cropi_core.models.gguf import convert_gguf, load_gguf, smollm2_gguf_dir
from cropi_core.models.hf_io import save_model
from cropi_core.models.loading import load_model, load_tokenizer, resolve_device
from cropi_core.models.tiny import build_tiny, num_parameters
from cropi_core.models.tokenizer import build_char_tokenizer

__all__ = ["bootstrap", "build_char_tokenizer", "build_tiny", "convert_gguf", "load_gguf", "load_model",
           "load_tokenizer", "num_parameters", "resolve_device", "save_model", "smollm2_gguf_dir"]
