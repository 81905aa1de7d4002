"""Shared setup for the flow / CLI tests: a small "coin" task a tiny model learns in seconds.

Every gold answer is "1" or "2" (seeded), so a model warmed up for a few dozen steps answers `\\boxed{1}` or
`\\boxed{2}` about half the time: most prompts have 0 < pass rate < 1, i.e. POPI can score them, GRPO has
signal, and the whole curriculum runs for real in well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import yaml

INSTRUCTION = "Answer in \\boxed{}."


def write_coin_data(folder: Path, seed: int = 0) -> dict[str, Path]:
    """pool (48), targeted (16: 8 val + 8 test) and untargeted (8) JSONL files with golds in {1, 2}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    out = {}
    for name, n, word in (("pool", 48, "pool"), ("target", 16, "target"), ("other", 8, "other")):
        rows = [{"question": f"Pick {word} {i}.", "answer": str(rng.choice([1, 2]))} for i in range(n)]
        p = folder / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out[name] = p
    return out


def train_coin_model(folder: Path, data: dict[str, Path], steps: int = 40) -> Path:
    """A 2-layer, 32-wide Qwen2 with the char tokenizer, warmed up on held-out coin prompts."""
    import torch

    from cropi_core.config import BootstrapConfig, TinyModelConfig
    from cropi_core.data import Problem
    from cropi_core.models import bootstrap, build_char_tokenizer, build_tiny, save_model

    torch.manual_seed(0)
    tok = build_char_tokenizer()
    model = build_tiny(TinyModelConfig(**TINY), tok)
    rng = random.Random(1)
    warm = [Problem(f"warm/{i}", f"Pick warm {i}.", str(rng.choice([1, 2])), "warm", "warm", "exact") for i in range(256)]
    bootstrap(model, tok, warm, BootstrapConfig(steps=steps, lr=2e-2, batch_size=16, num_problems=256),
              template="plain_boxed", instruction=INSTRUCTION, progress=False)
    save_model(model, tok, folder)
    return folder


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "intermediate_size": 64, "max_position_embeddings": 256}


def coin_config(data: dict[str, Path], model_dir: Path, **extra) -> dict:
    """A reduced-budget RunConfig dict: 2 stages × 4 GRPO steps, 16-row gradient chunks."""
    spec = {"format": "jsonl", "verifier": "exact"}
    cfg = {
        "name": "coin",
        "model": {"name_or_path": str(model_dir)},
        "data": {
            "synthetic": None, "template": "plain_boxed", "instruction": INSTRUCTION,
            "pool": [{"name": "pool", "path": str(data["pool"]), **spec}],
            "targeted": [{"name": "target", "path": str(data["target"]), "val_size": 8, **spec}],
            "untargeted": [{"name": "other", "path": str(data["other"]), **spec}],
        },
        "rollout": {"num_generations": 4, "num_generations_val": 4, "max_new_tokens": 12, "temperature": 1.0},
        "influence": {"projector": "dense", "sketch_dim": 32, "chunk_rows": 16},
        # the paper's selection: these runs test the pipeline's mechanics (every stage scored), not the default
        "selection": {"ratio": 0.25, "fusion": "none", "rescore": "every", "gate_probe": None},
        "train": {"stages": 2, "steps_per_stage": 4, "save_steps": 2, "prompts_per_step": 2, "num_generations": 2,
                  "max_new_tokens": 12, "temperature": 1.0},
        "eval": {"max_new_tokens": 12},
        "runner": {"retries": 2, "retry_delay_s": 0},
    }
    for dotted, v in extra.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def coin_setup(tmp_path_factory, name: str, **extra) -> Iterator[dict]:
    """Body of a module fixture: coin data, a warmed-up model and its config (`extra`: dotted overrides, as in
    coin_config) in a fresh folder; torch on one thread (2 shared cores) until the module is done.
    Use as `yield from H.coin_setup(tmp_path_factory, "name")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp(name)
    data = write_coin_data(root / "data")
    model = train_coin_model(root / "model", data)
    cfg = write_config(root / "coin.yaml", coin_config(data, model, **extra))
    yield {"root": root, "data": data, "model": model, "config": cfg, "storage": root / "store"}
    torch.set_num_threads(threads)
