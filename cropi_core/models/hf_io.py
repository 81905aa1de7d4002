"""What every model reader and writer shares (loading.py, gguf.py, training.py): the process-wide lock around
transformers' `from_pretrained`, and `save_model`. Its own module, so those modules need not import each other."""

from __future__ import annotations

import threading
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

# transformers' from_pretrained builds the model under process-global patches (meta-device init, tied-weight
# bookkeeping); two threads loading at once (Prefect's thread-pool tasks) can leave one model with a
# randomly initialised lm_head or meta tensors. Every load in cropi holds this lock.
LOAD_LOCK = threading.RLock()


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """Write `model` (safetensors, config, generation config) and `tokenizer` into `folder` (created)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out
