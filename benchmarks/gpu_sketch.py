"""Sketch throughput at the paper's scale: a random-weight model with Qwen2.5-1.5B's exact shape, the real Qwen2
tokenizer, k = 32768, bf16 — cropi's default sketch (`grass@0.25+energy`: masked block + sparse JL, ρ 0.25, energy
allocation), `grass` and `sparse` with sparse JL at --sparse-ratio, the paper's projection (`sparse:gaussian`, a dense
Gaussian matrix) vs a plain forward+backward (a) and its ceiling for hook-based sketches (a′, input gradients only).

Called by scripts/gpu_check.sh (which sets the offline environment). Nothing is downloaded: the weights are
random (throughput does not depend on their values) and the tokenizer is read from a local folder.

    .venv/bin/python benchmarks/gpu_sketch.py                  # GPU: 1.5B shape, 64 prompts x 8 responses
    .venv/bin/python benchmarks/gpu_sketch.py --small          # CPU smoke run: tiny shape, same code path

Per method it prints prompts/s, tokens/s (prompt+response tokens teacher-forced, as in benchmarks/sketch.py),
the ratio to (a) plain fwd+bwd on the same batch, peak accelerator memory (CPU: peak RSS growth) and the
projector's set-up time. `sparse` keeps every selected parameter's full per-prompt gradient and projects its
kept coordinates with a dense Gaussian generated on the fly (`sparse:gaussian`) (CPU generator, so rows are identical on any
machine); at 1.5B x 32768 that is ~5e12 random numbers per prompt group, hours of work. Unless `--sparse-params
all`, sparse therefore runs on a named subset of parameters and its full-model time is extrapolated linearly in
kept coordinates: per prompt, t_full = t_plain + t_proj_group(subset) * (kept_all / kept_subset) / prompts_per_group(all),
with t_proj_group the measured time of one projection step (once per group of prompts; with all parameters a
group holds GROUP_BYTES / (4 bytes x parameters) prompts, i.e. one at 1.5B).
Rows marked "extrapolated" are estimates, the others are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from cropi_core.influence import GROUP_BYTES, PromptRollouts, gradient_energy, sketch_prompts
from cropi_core.objective import group_advantages
from cropi_core.projection import make_projector
from cropi_core.projection.jl import energy_ratios
from cropi_core.rollout.logprobs import teacher_force_pairs

ROOT = Path(__file__).resolve().parent.parent

# Qwen/Qwen2.5-1.5B(-Instruct) config.json, written out so no hub access is needed.
QWEN25_15B = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
    hidden_act="silu", tie_word_embeddings=True, use_sliding_window=False, sliding_window=None, max_window_layers=21,
    attention_dropout=0.0, initializer_range=0.02, bos_token_id=151643, eos_token_id=151645,
)
# Same vocabulary (the real tokenizer's ids), tiny body: the CPU smoke shape.
SMALL = {**QWEN25_15B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 2048}

WORDS = ("the of and to in is that for it as with was on be by at this are from or have an they which one you were "
         "all we when there can more if no out so said what up its about into than them only other new some could "
         "time these two may then first any my now such like our over man me even most made after also did many "
         "number sum total apples train hours minutes price dollars each half twice left remaining cost bought sold "
         "speed distance rate per cent area circle square triangle angle prime factor divide multiply equals "
         "therefore answer let compute step 1 2 3 4 5 6 7 8 9 10 12 15 20 24 36 48 60 100").split()


def tokenizer_path(arg: str | None) -> Path:
    """--tokenizer, $CROPI_QWEN2_TOKENIZER, ../shared/models/qwen2-tokenizer or shared/models/qwen2-tokenizer."""
    cands = [arg, os.environ.get("CROPI_QWEN2_TOKENIZER"), ROOT.parent / "shared/models/qwen2-tokenizer",
             ROOT / "shared/models/qwen2-tokenizer"]
    for c in cands:
        if c and (Path(c) / "vocab.json").exists() and (Path(c) / "merges.txt").exists():
            return Path(c)
    sys.exit(f"gpu_sketch: Qwen2 tokenizer (vocab.json + merges.txt) not found in any of {[str(c) for c in cands if c]};"
             " pass --tokenizer DIR")


def text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def make_batch(tok, model, n: int, k: int, prompt_len: int, resp_len: int, seed: int, temperature: float
               ) -> list[PromptRollouts]:
    """n prompts (chat template, random words) x k responses (random words ending in a boxed number), lengths in
    tokens drawn from [len/2, 3len/2]; behavior log-probs by teacher forcing the model itself (so ρ ≈ 1)."""
    rng = random.Random(seed)

    def ids(s: str, want: int) -> torch.Tensor:
        t = tok(s, add_special_tokens=False)["input_ids"]
        while len(t) < want:
            t = t + tok(" " + text(rng, want), add_special_tokens=False)["input_ids"]
        return torch.tensor(t[:want], dtype=torch.long)

    pairs, shells = [], []
    for i in range(n):
        q = text(rng, prompt_len) + " Please reason step by step, and put your final answer within \\boxed{}."
        chat = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True) \
            if tok.chat_template else q
        full = tok(chat, add_special_tokens=False)["input_ids"]
        p_len = rng.randint(prompt_len // 2, prompt_len * 3 // 2)
        p = torch.tensor(full[-p_len:] if len(full) > p_len else full, dtype=torch.long)
        rs = [ids(text(rng, resp_len) + f" \\boxed{{{rng.randint(0, 99)}}}<|im_end|>",
                  rng.randint(resp_len // 2, resp_len * 3 // 2)) for _ in range(k)]
        rewards = torch.zeros(k)
        rewards[: 1 + i % (k - 1)] = 1  # every prompt scorable (mixed rewards)
        shells.append((p, rs, rewards))
        pairs += [(p, r) for r in rs]
    logb = teacher_force_pairs(model, pairs, temperature=temperature, batch_size=16)
    out, j = [], 0
    for i, (p, rs, rewards) in enumerate(shells):
        out.append(PromptRollouts(p, rs, [lb.float().cpu() for lb in logb[j: j + k]], rewards, problem_id=f"gpu/{i}"))
        j += k
    return out


class PeakMemory:
    """Peak accelerator memory (torch.cuda.max_memory_allocated) or, on CPU, peak RSS growth sampled every 5 ms."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.proc = psutil.Process()
            self.base = self.peak = self.proc.memory_info().rss
            self.stop = threading.Event()
            self.t = threading.Thread(target=self._poll, daemon=True)
            self.t.start()
        return self

    def _poll(self) -> None:
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated()
        else:
            self.stop.set()
            self.t.join()
            self.bytes = max(self.peak, self.proc.memory_info().rss) - self.base


def plain_fwd_bwd(model, prompts, micro_batch_tokens: int, device: torch.device, backbone: bool = False) -> None:
    """(a): the scoring loss Σ_b -A_b/(K|τ_b|) Σ_t ρ_b,t over every response, as training would run it (weights
    require grad, one .grad per parameter), right-padded micro-batches of at most `micro_batch_tokens` tokens.
    backbone=True is (a′): weights frozen, the gradient started at the embedding output — the forward and
    input-gradient backward every hook-based sketch runs before its hooks work, so plain / (a′) is the ceiling of
    any sketch's "× plain" (benchmarks/sketch.py)."""
    seqs = []
    for p in prompts:
        adv = group_advantages(p.rewards)
        for j, r in enumerate(p.response_ids):
            seqs.append((torch.cat([p.prompt_ids, r]), p.prompt_ids.numel(), p.behavior_logprobs[j],
                         -float(adv[j]) / (p.k * max(1, r.numel()))))
    seqs.sort(key=lambda s: s[0].numel())
    batches, cur = [], []
    for s in seqs:
        if cur and (len(cur) + 1) * s[0].numel() > micro_batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(s)
    batches += [cur] if cur else []
    for p in model.parameters():
        p.requires_grad_(not backbone)
    model.zero_grad(set_to_none=True)
    hook = model.get_input_embeddings().register_forward_hook(
        lambda mod, args, out: out.detach().requires_grad_(True)) if backbone else None
    for batch in batches:
        length = max(s[0].numel() for s in batch)
        ids = torch.zeros(len(batch), length, dtype=torch.long)
        attn = torch.zeros_like(ids)
        logb = torch.zeros(len(batch), length - 1)
        mask = torch.zeros(len(batch), length - 1)
        for b, (x, p0, lb, _) in enumerate(batch):
            ids[b, : x.numel()], attn[b, : x.numel()] = x, 1
            logb[b, p0 - 1 : x.numel() - 1], mask[b, p0 - 1 : x.numel() - 1] = lb, 1
        ids, attn, logb, mask = ids.to(device), attn.to(device), logb.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()
        logp = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        coef = torch.tensor([s[3] for s in batch], device=device)
        (coef[:, None] * torch.exp(logp - logb) * mask).sum().backward()
    if hook is not None:
        hook.remove()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(False)


def _interrupt(signum, frame) -> None:  # noqa: ANN001
    raise KeyboardInterrupt


def parse_kind(spec: str, default_ratio: float) -> tuple[str, str, float, bool]:
    """"kind[:transform][@ratio][+energy]" -> (kind, transform, sparse ratio, energy allocation?)."""
    body, plus, alloc = spec.partition("+")
    if plus and alloc != "energy":
        sys.exit(f"gpu_sketch: --kinds {spec!r}: only '+energy' may follow the projector")
    body, at, r = body.partition("@")
    kind, _, transform = body.partition(":")
    if kind not in ("grass", "sparse"):
        sys.exit(f"gpu_sketch: --kinds {spec!r}: unknown projector {kind!r} (grass, sparse)")
    try:
        ratio = float(r) if at else default_ratio
    except ValueError:
        sys.exit(f"gpu_sketch: --kinds {spec!r}: ratio {r!r} is not a number")
    if not 0 < ratio <= 1:
        sys.exit(f"gpu_sketch: --kinds {spec!r}: ratio {ratio:g} is not in (0, 1]")
    return kind, transform or "sjl", ratio, bool(plus)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def sparse_subset(model, spec: str) -> list[str] | None:
    """`all` -> None (every parameter); `last-kv` -> the last layer's k_proj/v_proj; else a comma list of names."""
    if spec == "all":
        return None
    if spec == "last-kv":
        last = model.config.num_hidden_layers - 1
        want = [f"model.layers.{last}.self_attn.{m}.{w}" for m in ("k_proj", "v_proj") for w in ("weight", "bias")]
        names = {n for n, _ in model.named_parameters()}
        return [n for n in want if n in names]
    return [s.strip() for s in spec.split(",") if s.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny body (CPU smoke test); defaults shrink accordingly")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu")
    ap.add_argument("--tokenizer", default=None, help="folder with vocab.json + merges.txt (Qwen2)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--dim", type=int, default=None, help="k (default 32768; --small 1024)")
    ap.add_argument("--sparse-ratio", type=float, default=0.1)
    ap.add_argument("--prompts", type=int, default=None, help="default 64 (--small 8)")
    ap.add_argument("--k", type=int, default=None, help="responses per prompt (default 8; --small 4)")
    ap.add_argument("--prompt-len", type=int, default=None, help="mean prompt tokens (default 128; --small 24)")
    ap.add_argument("--resp-len", type=int, default=None, help="mean response tokens (default 512; --small 32)")
    ap.add_argument("--micro-batch-tokens", type=int, default=None, help="default 16384 (--small 512)")
    ap.add_argument("--kinds", default="grass@0.25+energy,grass,sparse,sparse:gaussian",
                    help="comma list of kind[:transform][@ratio][+energy]: transform sjl by default (gaussian = the "
                         "paper's matrix), ratio --sparse-ratio by default, +energy = allocation by gradient energy "
                         "measured on the first --calibration-prompts prompts (its time is the row's setup s). "
                         "grass@0.25+energy is cropi's default sketch")
    ap.add_argument("--calibration-prompts", type=int, default=16, help="as influence.calibration_prompts")
    ap.add_argument("--sparse-params", default=None,
                    help="all | last-kv (default) | comma list of parameter names")
    ap.add_argument("--sparse-prompts", type=int, default=None, help="prompts for sparse (default 8; --small all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default benchmarks/out/gpu_sketch[-small].json)")
    a = ap.parse_args()
    small = a.small
    dim = a.dim or (1024 if small else 32768)
    n = a.prompts or (8 if small else 64)
    k = a.k or (4 if small else 8)
    plen = a.prompt_len or (24 if small else 128)
    rlen = a.resp_len or (32 if small else 512)
    mbt = a.micro_batch_tokens or (512 if small else 16384)
    sparse_spec = a.sparse_params or "last-kv"
    n_sparse = min(n, a.sparse_prompts or (n if small else 8))
    out_path = a.out or ROOT / "benchmarks" / "out" / ("gpu_sketch-small.json" if small else "gpu_sketch.json")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    dtype = getattr(torch, a.dtype)

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_path(a.tokenizer)))
    torch.manual_seed(a.seed)
    cfg = Qwen2Config(**(SMALL if small else QWEN25_15B), attn_implementation="sdpa")
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2 {'small' if small else '2.5-1.5B shape'}, {n_params / 1e6:.1f}M params ({a.dtype}) on "
          f"{device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}; "
          f"tokenizer {len(tok)} tokens; built in {time.perf_counter() - t0:.1f}s", flush=True)
    prompts = make_batch(tok, model, n, k, plen, rlen, a.seed, 1.0)
    tokens = sum(p.num_tokens for p in prompts)
    print(f"batch: {n} prompts x {k} responses, {tokens} tokens teacher-forced "
          f"(mean prompt {sum(p.prompt_ids.numel() for p in prompts) / n:.0f}, mean response "
          f"{sum(r.numel() for p in prompts for r in p.response_ids) / (n * k):.0f}); k={dim}, "
          f"micro-batch {mbt} tokens", flush=True)

    rows: list[dict] = []

    def timed(name: str, fn, ps, **extra) -> dict:
        fn(ps[:1])  # warm-up: kernels, allocator, lazily built projector pieces
        sync(device)
        with PeakMemory(device) as mem:
            t = time.perf_counter()
            fn(ps)
            sync(device)
            dt = time.perf_counter() - t
        toks = sum(p.num_tokens for p in ps)
        row = dict(method=name, prompts=len(ps), seconds=dt, prompts_per_s=len(ps) / dt, tokens_per_s=toks / dt,
                   peak_mem_gb=mem.bytes / 2**30, **extra)
        rows.append(row)
        print(f"  {name}: {dt:.2f}s for {len(ps)} prompts", flush=True)
        return row

    stopped = None
    try:  # a time limit (scripts/gpu_check.sh: timeout -s INT) keeps the rows measured so far
        signal.signal(signal.SIGTERM, _interrupt)
        plain = timed("(a) plain fwd+bwd", lambda ps: plain_fwd_bwd(model, ps, mbt, device), prompts)
        timed("(a′) fwd+bwd, input gradients only (the ceiling of any hook-based sketch)",
              lambda ps: plain_fwd_bwd(model, ps, mbt, device, backbone=True), prompts)
        for spec in [s.strip() for s in a.kinds.split(",") if s.strip()]:
            kind, transform, ratio, energy = parse_kind(spec, a.sparse_ratio)
            dense_jl = kind == "sparse" and transform != "sjl"  # the slow one: run on a parameter subset, extrapolate
            params = sparse_subset(model, sparse_spec) if dense_jl else None
            t = time.perf_counter()
            ratios = None
            if energy:  # the stage's calibration artifact, measured here: per-parameter keep ratios
                e = gradient_energy(model, prompts[: a.calibration_prompts], micro_batch_tokens=mbt)
                ratios = energy_ratios(e, {n: p.numel() for n, p in model.named_parameters()}, ratio)
            proj = make_projector(kind, model, dim, sparse_ratio=ratio, transform=transform, seed=a.seed,
                                  dtype=torch.float16, params=params, param_ratios=ratios)
            sync(device)
            setup = time.perf_counter() - t
            ps = prompts[:n_sparse] if dense_jl else prompts
            finish_s = [0.0]
            if dense_jl:  # time the projection step itself (what grows with kept coordinates)
                orig_finish = proj.finish

                def finish(orig=orig_finish):
                    sync(device)
                    t = time.perf_counter()
                    r = orig()
                    sync(device)
                    finish_s[0] += time.perf_counter() - t
                    return r
                proj.finish = finish
            label = f"(b) {kind} ρ={ratio:g} {transform}" + (" + energy" if energy else "") + (
                "" if params is None else f" [{len(params)} params subset]")

            def run(b, proj=proj):
                finish_s[0] = 0.0  # only the timed call counts
                return sketch_prompts(model, b, proj, micro_batch_tokens=mbt)
            row = timed(label, run, ps, setup_s=setup, bytes_per_prompt=proj.bytes_per_prompt())
            if dense_jl and params is not None:
                # everything but the projection scales like a forward+backward; the projection like kept coordinates
                # the projection runs once per group of prompts (sketch_prompts groups by GROUP_BYTES of buffers), and
                # its cost per group grows with kept coordinates; all parameters => far fewer prompts per group
                whole = make_projector("sparse", model, dim, sparse_ratio=ratio, transform=transform, seed=a.seed,
                                       param_ratios=ratios)
                full = whole.kept
                groups_subset = -(-row["prompts"] // max(1, GROUP_BYTES // proj.slot_bytes()))
                per_group_full = max(1, GROUP_BYTES // whole.slot_bytes())
                proj_per_prompt = finish_s[0] / groups_subset * full / proj.kept / per_group_full
                del whole
                per_prompt = plain["seconds"] / plain["prompts"] + proj_per_prompt
                tok_per_prompt = row["tokens_per_s"] * row["seconds"] / row["prompts"]
                row.update(projection_s=finish_s[0], kept_subset=proj.kept)
                rows.append(dict(method=f"(b) sparse ρ={ratio:g} {transform} all params (extrapolated)", prompts=None,
                                 seconds=None, prompts_per_s=1 / per_prompt, tokens_per_s=tok_per_prompt / per_prompt,
                                 peak_mem_gb=None, kept_all=full, projection_s_per_prompt=proj_per_prompt,
                                 flat_buffer_gb_per_prompt=4 * n_params / 2**30))
    except KeyboardInterrupt:
        stopped = f"stopped by a signal after {len(rows)} row(s)"
        print(f"\ngpu_sketch: {stopped}; the table and JSON hold what was measured", flush=True)
    plain = next((r for r in rows if r["method"].startswith("(a) plain")), None)
    base = plain["tokens_per_s"] if plain else None
    for r in rows:
        r["vs_plain"] = r["tokens_per_s"] / base if base else None

    mem_name = "peak GPU GB" if device.type == "cuda" else "peak RSS +GB"
    print(f"\n| method | prompts | s | prompts/s | tokens/s | × plain | {mem_name} | setup s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = lambda v, fmt: "" if v is None else format(v, fmt)  # noqa: E731
        print(f"| {r['method']} | {f(r['prompts'], 'd')} | {f(r['seconds'], '.2f')} | {r['prompts_per_s']:.3f} | "
              f"{r['tokens_per_s']:.0f} | {f(r['vs_plain'], '.3f')} | {f(r['peak_mem_gb'], '.2f')} | "
              f"{f(r.get('setup_s'), '.1f')} |")
    meta = dict(small=small, device=str(device), gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                dtype=a.dtype, dim=dim, sparse_ratio=a.sparse_ratio, prompts=n, k=k, prompt_len=plen, resp_len=rlen,
                micro_batch_tokens=mbt, tokens=tokens, n_params=n_params, sparse_params=sparse_spec,
                torch=torch.__version__, host=platform.node(), time=time.strftime("%Y-%m-%dT%H:%M:%S"),
                complete=stopped is None, **({"stopped": stopped} if stopped else {}))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out_path}")
    if stopped:
        sys.exit(124)


if __name__ == "__main__":
    main()
