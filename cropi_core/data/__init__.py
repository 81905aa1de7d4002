"""Data: normalised `Problem`s from dataset files or the embedded synthetic suite, splits, prompt templates."""

from cropi_core.data.extractors import EXTRACTORS, normalize_gold
from cropi_core.data.loaders import (LoadResult, iter_rows, load_acc_history, load_dataset, problems_from_jsonl,
                                     problems_to_jsonl, read_dataset)
from cropi_core.data.problem import DataSplits, Problem
from cropi_core.data.splits import build_splits, dedup, dedup_key, split_val_test
from cropi_core.data.synthetic import CHARSET, DOMAINS, generate_mixture, generate_problems, generate_suite, worked_response
from cropi_core.data.templates import DEFAULT_INSTRUCTION, TEMPLATES, format_prompt

__all__ = [
    "Problem", "DataSplits", "load_dataset", "read_dataset", "LoadResult", "iter_rows", "load_acc_history",
    "problems_to_jsonl", "problems_from_jsonl", "build_splits", "dedup", "dedup_key", "split_val_test",
    "format_prompt", "DEFAULT_INSTRUCTION", "TEMPLATES", "EXTRACTORS", "normalize_gold",
    "CHARSET", "DOMAINS", "generate_problems", "generate_mixture", "generate_suite",
]
