"""Load / save policies: the embedded tiny model, any local HF causal LM folder, or a GGUF file. Never the hub.

Every failure a user can cause (missing folder, missing weights, GGUF without the `gguf` package) is a
one-line `ModelError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from cropi_core.config import MODEL_ALIASES, ModelConfig, resolve_alias
from cropi_core.errors import ModelError
from cropi_core.models.hf_io import LOAD_LOCK
from cropi_core.models.tiny import build_tiny
from cropi_core.models.tokenizer import build_char_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# tokenizer_config.json classes meaning "a plain tokenizer.json": our char tokenizer among them. AutoTokenizer
# would instead follow config.json's model_type (qwen2 -> a BPE Qwen2Tokenizer that drops spaces and newlines).
_GENERIC_TOKENIZERS = {"PreTrainedTokenizerFast", "TokenizersBackend"}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """"auto"/None -> cuda if available else cpu; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, default: str = "float32") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype or default
    if name not in DTYPES:
        raise ModelError(f"unknown dtype {name!r} (known: {', '.join(DTYPES)})")
    return DTYPES[name]


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Tokenizer of a local folder: generic tokenizer.json ones (our char tokenizer) as PreTrainedTokenizerFast,
    everything else through AutoTokenizer. Left padding (for generation)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelError(f"{folder}: tokenizer folder not found")
    cls = None
    cfg_file = folder / "tokenizer_config.json"
    if cfg_file.is_file():
        try:
            cls = json.loads(cfg_file.read_text()).get("tokenizer_class")
        except json.JSONDecodeError as err:
            raise ModelError(f"{cfg_file}: invalid JSON at line {err.lineno}: {err.msg}") from None
    try:
        if cls in _GENERIC_TOKENIZERS and (folder / "tokenizer.json").is_file():
            tok = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        else:
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"{folder}: cannot load tokenizer: {_first_line(err)}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(
    cfg: ModelConfig | str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    gguf_file: str | None = None,
    attn_implementation: str = "eager",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode on `device`, tokenizer) for a ModelConfig, "tiny", an alias of `MODEL_ALIASES`, or a
    local folder / fsspec URL.

    - "tiny": a freshly initialised embedded model (`cfg.tiny` shape) with the char tokenizer;
    - a folder with config.json + safetensors (our checkpoints, converted GGUF, any HF causal LM);
    - a folder + `gguf_file` (ModelConfig.gguf_file or the keyword): dequantised into a plain, saveable model.
    `dtype`/`device` override the config ("auto" device = cuda when available). Attention defaults to "eager"
    (what the tiny model is built with, and what per-example gradients with padding need); pass "sdpa" for speed.
    """
    if not isinstance(cfg, ModelConfig):
        cfg = ModelConfig(name_or_path=str(cfg), gguf_file=gguf_file)
    elif gguf_file is not None:
        cfg = cfg.model_copy(update={"gguf_file": gguf_file})
    if cfg.name_or_path in MODEL_ALIASES:
        folder, gguf = resolve_alias(cfg.name_or_path, cfg.gguf_file)
        cfg = cfg.model_copy(update={"name_or_path": folder, "gguf_file": gguf})
    torch_dtype = resolve_dtype(dtype, cfg.dtype)
    dev = resolve_device(device if device is not None else cfg.device)

    if cfg.is_embedded:
        tokenizer = build_char_tokenizer()
        model = build_tiny(cfg.tiny, tokenizer)
        return model.to(device=dev, dtype=torch_dtype).eval(), tokenizer

    folder = local_folder(cfg.name_or_path)
    if cfg.gguf_file:
        from cropi_core.models.gguf import load_gguf

        model, tokenizer = load_gguf(folder, cfg.gguf_file, dtype=torch_dtype, attn_implementation=attn_implementation)
        if cfg.tokenizer_path:
            tokenizer = load_tokenizer(local_folder(cfg.tokenizer_path))
        tokenizer.padding_side = "left"
        return model.to(dev).eval(), tokenizer

    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: not a model folder (no config.json)")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        raise ModelError(f"{folder}: no weights (expected model.safetensors); for a GGUF file set model.gguf_file")
    tokenizer = load_tokenizer(local_folder(cfg.tokenizer_path) if cfg.tokenizer_path else folder)
    try:
        with LOAD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(
                str(folder), dtype=torch_dtype, local_files_only=True, attn_implementation=attn_implementation
            )
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"{folder}: cannot load model: {_first_line(err)}") from None
    return model.to(dev).eval(), tokenizer


def local_folder(name_or_path: str) -> Path:
    """A local folder for a path or fsspec URL (remote folders are copied once into a local cache)."""
    if "://" in name_or_path and not name_or_path.startswith("file://"):
        return _fetch_remote(name_or_path)
    path = Path(name_or_path.removeprefix("file://")).expanduser()
    if not path.exists():
        raise ModelError(f"{name_or_path}: model path not found (use 'tiny' for the embedded model)")
    if not path.is_dir():
        raise ModelError(f"{name_or_path}: expected a model folder, got a file (for GGUF set model.gguf_file)")
    return path


def _fetch_remote(url: str) -> Path:
    import fsspec

    cache = Path(os.environ.get("CROPI_MODEL_CACHE", Path.home() / ".cache" / "cropi" / "models"))
    dest = cache / hashlib.sha256(url.encode()).hexdigest()[:16]
    if (dest / ".complete").exists():
        return dest
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.isdir(root):
        raise ModelError(f"{url}: model folder not found")
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    fs.get(root.rstrip("/") + "/", str(tmp), recursive=True)
    (tmp / ".complete").touch()
    try:
        tmp.rename(dest)
    except OSError:  # another process finished the same copy first
        shutil.rmtree(tmp, ignore_errors=True)
    if not (dest / ".complete").exists():
        raise ModelError(f"{url}: copy into {dest} is incomplete; delete that folder and retry")
    return dest


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
