"""Character-level tokenizer for the embedded tiny model: one token per character, exact round trip.

Built from `tokenizers` parts (WordLevel vocabulary, `Split("")` pre-tokenizer, `Fuse` decoder) and wrapped
in `PreTrainedTokenizerFast`, so it saves/loads like any HF tokenizer and has a chat template. Reload a saved
one with `PreTrainedTokenizerFast.from_pretrained` (or `load_tokenizer`): `AutoTokenizer` on a folder whose
config says qwen2 would build a BPE `Qwen2Tokenizer` instead.

Vocabulary (ids in this order): the special tokens `<|endoftext|>` (pad, also stands in for unknown
characters), `<|im_start|>`, `<|im_end|>` (eos), then the sorted union of printable ASCII, "\\n" and `charset`.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
BASE_CHARS = string.printable[:95] + "\n"  # ' '..'~' (95 printable ASCII) and newline

# Compact ChatML: the tiny model pays one token per character, so roles are kept but separators are minimal.
# "<|im_start|>user:<q><|im_end|><|im_start|>assistant:" then the response ends with <|im_end|>.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}:{{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant:{% endif %}"
)


def char_vocab(charset: str | None = None) -> list[str]:
    """Token strings by id: special tokens, then the sorted characters of BASE_CHARS ∪ charset."""
    if charset is None:
        charset = _default_charset()
    chars = sorted(set(BASE_CHARS) | set(charset))
    return list(SPECIAL_TOKENS) + chars


def build_char_tokenizer(charset: str | None = None) -> PreTrainedTokenizerFast:
    """A char tokenizer covering printable ASCII, newline and `charset` (default: the synthetic CHARSET).

    `decode(encode(s)) == s` for every string over that alphabet; special tokens are atomic.
    """
    vocab = {tok: i for i, tok in enumerate(char_vocab(charset))}
    core = Tokenizer(models.WordLevel(vocab, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        additional_special_tokens=[BOS],
        model_max_length=4096,
        padding_side="left",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _default_charset() -> str:
    try:
        from cropi_core.data.synthetic import CHARSET
    except ImportError:  # the data package is optional for the tokenizer itself
        return ""
    return CHARSET
