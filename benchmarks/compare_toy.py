"""A minutes-scale stand-in for the embedded benchmark, for `cropi compare` on a loaded 2-core machine.

The paper's setting in miniature: the pool mixes a targeted minority ("Pick target i." → 1, a quarter of the pool)
with an untargeted majority ("Pick other i." → 2); the validation set comes from the targeted kind only, the
untargeted test set is never used for selection. The base model (2 layers, 32 wide, char tokenizer) is warmed up
on "Pick warm i." prompts with random golds in {1, 2}, so it answers 1 or 2 about half the time on every kind:
every prompt has 0 < pass rate < 1 and GRPO has signal from step 1.

    python benchmarks/compare_toy.py OUT_DIR        # writes data, model and OUT_DIR/toy.yaml, prints the yaml path
    cropi compare --config OUT_DIR/toy.yaml --storage OUT_DIR/store
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import yaml

INSTRUCTION = "Answer in \\boxed{}."
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "intermediate_size": 64, "max_position_embeddings": 256}


def write_data(folder: Path) -> dict[str, Path]:
    """pool: 24 target (gold 1) + 72 other (gold 2), shuffled; target: 32 (16 val + 16 test); other: 16."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    pool = [{"question": f"Pick target {i}.", "answer": "1", "kind": "target"} for i in range(24)] + \
           [{"question": f"Pick other {i}.", "answer": "2", "kind": "other"} for i in range(72)]
    rng.shuffle(pool)
    sets = {"pool": pool,
            "target": [{"question": f"Pick target {i}.", "answer": "1"} for i in range(100, 132)],
            "other": [{"question": f"Pick other {i}.", "answer": "2"} for i in range(100, 116)]}
    out = {}
    for name, rows in sets.items():
        p = folder / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out[name] = p
    return out


def warm_model(folder: Path, steps: int = 40) -> Path:
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


def config(data: dict[str, Path], model: Path) -> dict:
    spec = {"format": "jsonl", "verifier": "exact"}
    return {
        "name": "toy",
        "model": {"name_or_path": str(model)},
        "data": {"synthetic": None, "template": "plain_boxed", "instruction": INSTRUCTION,
                 "pool": [{"name": "pool", "path": str(data["pool"]), "domain_field": "kind", **spec}],
                 "targeted": [{"name": "target", "path": str(data["target"]), "val_size": 16, **spec}],
                 "untargeted": [{"name": "other", "path": str(data["other"]), **spec}]},
        "rollout": {"num_generations": 4, "num_generations_val": 8, "max_new_tokens": 12, "temperature": 1.0},
        "influence": {"projector": "dense", "sketch_dim": 64, "chunk_rows": 48},
        "selection": {"ratio": 0.25},
        "train": {"stages": 3, "steps_per_stage": 4, "save_steps": 4, "prompts_per_step": 4, "num_generations": 4,
                  "max_new_tokens": 12, "temperature": 1.0},
        "eval": {"max_new_tokens": 12},
        "runner": {"retries": 1, "retry_delay_s": 0},
    }


def main(out: Path) -> Path:
    data = write_data(out / "data")
    model = warm_model(out / "model")
    path = out / "toy.yaml"
    path.write_text(yaml.safe_dump(config(data, model), sort_keys=False))
    return path


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/out/compare_toy").resolve()))
