"""`vllm` rollout backend over HTTP: K samples per prompt from a vLLM OpenAI-compatible server.

The server (`vllm serve <checkpoint folder>`, started by tasks/vllm_server.py or run elsewhere) must serve the very
checkpoint whose rollouts are asked for; `VLLMServerBackend` checks that the server's `/v1/models` lists that
folder. Requests go to `/v1/completions` with the prompt as token ids (the ids cropi's tokenizer and chat template
give, as for the hf backend) and `return_token_ids: true`, so the response token ids are the ones vLLM sampled,
not a re-tokenisation of its text: they are exactly what log β is teacher-forced on (with the HF model, at the
sampling temperature, as for the hf backend) and what is stored. The server's echo of the prompt ids is checked
against ours. Sampling: temperature, top_p, top_k = -1 (off), no penalties, per-request seed derived from
(rollout.seed, problem id) as the in-process vllm backend does, so a prompt's samples do not depend on the batch.

Only the standard library speaks HTTP here (no process management: cropi_core stays pure).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cropi_core.data import Problem, format_prompt
from cropi_core.errors import ModelError
from cropi_core.rollout.base import RolloutBackend, derive_seed
from cropi_core.rollout.hf import eos_token_ids
from cropi_core.rollout.logprobs import teacher_force_pairs
from cropi_core.rollout.types import PromptRollouts
from cropi_core.rollout.vllm import rollouts_from_vllm


def http_json(url: str, body: dict | None = None, *, timeout: float = 600.0) -> Any:
    """GET (body None) or POST JSON to `url`; the decoded JSON answer. ModelError with the server's own message
    (one line) on an HTTP error, or saying the server is unreachable."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:500].replace("\n", " ")
        raise ModelError(f"vLLM server {url}: HTTP {err.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as err:
        raise ModelError(f"vLLM server {url} unreachable: {getattr(err, 'reason', err)}") from None


def reload_weights(url: str, folder: str | Path, *, timeout: float = 600.0) -> None:
    """Load checkpoint `folder`'s weights (same architecture) into the engine at `url` in place: vLLM's dev-mode
    `/collective_rpc` → every worker's `reload_weights(weights_path=folder)`, then `/reset_prefix_cache` (cached
    KV blocks were computed with the old weights). The server must run with VLLM_SERVER_DEV_MODE=1."""
    http_json(f"{url}/collective_rpc", {"method": "reload_weights",
                                        "kwargs": {"weights_path": str(Path(folder).resolve())}, "timeout": timeout},
              timeout=timeout)
    req = urllib.request.Request(f"{url}/reset_prefix_cache", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
    except urllib.error.HTTPError as err:
        raise ModelError(f"vLLM server {url}/reset_prefix_cache: HTTP {err.code}") from None


def completions(url: str, bodies: list[dict], *, concurrency: int = 64, timeout: float = 1800.0) -> list[dict]:
    """POST every body to `url`/v1/completions, all in flight together (the engine batches them); answers in order."""
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(bodies)))) as pool:
        return list(pool.map(lambda b: http_json(f"{url}/v1/completions", b, timeout=timeout), bodies))


def served_model(url: str, folder: str) -> str:
    """The model name under which the server at `url` serves checkpoint `folder`; ModelError when it serves
    another model (its rollouts would not be this checkpoint's)."""
    models = http_json(f"{url}/v1/models", timeout=30).get("data", [])
    want = str(Path(folder).resolve())
    for m in models:
        for name in (m.get("root"), m.get("id")):
            if name and str(Path(name).resolve()) == want:
                return str(m["id"])
    listed = ", ".join(str(m.get("root") or m.get("id")) for m in models) or "nothing"
    raise ModelError(f"vLLM server {url} serves {listed}, not the checkpoint {want}")


class VLLMServerBackend(RolloutBackend):
    """Rollouts sampled by a vLLM server at `url` serving `model`'s checkpoint folder; log β by teacher forcing
    `model` (the HF model of the same checkpoint) on the returned token ids."""

    name = "vllm"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, url: str,
                 model_name: str | None = None, logprob_batch_size: int = 64,
                 logprob_micro_batch_tokens: int | None = None, concurrency: int = 64, timeout: float = 1800.0):
        """url: the server's base URL; model_name: the name it serves the checkpoint under when the caller knows
        the server holds this checkpoint's weights (a server cropi started and reloaded, tasks/vllm_server.py);
        None = check that the server serves the checkpoint's own folder (`served_model`); logprob_batch_size / logprob_micro_batch_tokens: teacher-forcing passes of
        log β, as for the hf backend; concurrency: requests in flight at once; timeout: seconds per request."""
        folder = getattr(model.config, "name_or_path", "") or ""
        if not folder or not (Path(folder) / "config.json").is_file():
            raise ModelError("vllm backend needs the checkpoint's local folder (model.config.name_or_path)")
        self.model, self.tokenizer, self.url = model, tokenizer, url.rstrip("/")
        self.folder = str(Path(folder).resolve())
        self.model_name = model_name or served_model(self.url, self.folder)
        self.eos_ids = set(eos_token_ids(model, tokenizer))
        self.logprob_batch_size, self.concurrency, self.timeout = logprob_batch_size, concurrency, timeout
        self.logprob_micro_batch_tokens = logprob_micro_batch_tokens
        self.last_stats: dict[str, float] = {}

    def request(self, prompt_ids: list[int], k: int, *, temperature: float, top_p: float, max_new_tokens: int,
                seed: int) -> dict:
        """One /v1/completions body: K samples of `prompt_ids` with every knob not asked for at neutral."""
        return {"model": self.model_name, "prompt": prompt_ids, "n": k, "temperature": temperature, "top_p": top_p,
                "top_k": -1, "min_p": 0.0, "max_tokens": max_new_tokens, "min_tokens": 0, "seed": seed,
                "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "ignore_eos": False,
                "stop_token_ids": sorted(self.eos_ids), "skip_special_tokens": True, "return_token_ids": True,
                "logprobs": None}

    def sample(self, problems: list[Problem], k: int, *, temperature: float, top_p: float = 1.0, max_new_tokens: int,
               seed: int = 0, template: str = "chat_boxed", instruction: str = "", batch_size: int = 64,
               progress: bool = True) -> list[PromptRollouts]:
        if k < 1:
            raise ValueError(f"k must be ≥ 1 (got {k})")
        texts = [format_prompt(p, self.tokenizer, template=template, instruction=instruction) for p in problems]
        prompt_ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        bodies = [self.request(ids, k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                               seed=derive_seed(seed, "vllm", p.id) % (2**31)) for p, ids in zip(problems, prompt_ids)]
        start = time.perf_counter()
        answers = completions(self.url, bodies, concurrency=self.concurrency, timeout=self.timeout)
        gen_s = time.perf_counter() - start
        outputs = [self._output(p, ids, a, k) for p, ids, a in zip(problems, prompt_ids, answers)]
        was_training = self.model.training
        self.model.eval()
        try:
            def logprob_fn(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
                bound = {} if self.logprob_micro_batch_tokens is None else {"max_tokens": self.logprob_micro_batch_tokens}
                return teacher_force_pairs(self.model, pairs, temperature=temperature, batch_size=self.logprob_batch_size,
                                           **bound)

            decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
            result = rollouts_from_vllm(outputs, problems, eos_ids=self.eos_ids, decode=decode, logprob_fn=logprob_fn)
        finally:
            self.model.train(was_training)
        tokens = sum(r.numel() for pr in result for r in pr.response_ids)
        total = time.perf_counter() - start
        self.last_stats = {"prompts": len(problems), "responses": len(problems) * k, "response_tokens": tokens,
                           "generate_s": gen_s, "total_s": total, "tokens_per_s": tokens / max(total, 1e-9)}
        return result

    def _output(self, problem: Problem, prompt_ids: list[int], answer: dict, k: int) -> SimpleNamespace:
        """A RequestOutput-shaped record (what `rollouts_from_vllm` reads) from one /v1/completions answer."""
        choices = sorted(answer.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != k:
            raise ModelError(f"vLLM server returned {len(choices)} samples for problem {problem.id}, asked for {k}")
        outs = []
        for c in choices:
            if c.get("token_ids") is None:
                raise ModelError("vLLM server returned no token ids (it must support return_token_ids: vLLM ≥ 0.10.2)")
            echoed = c.get("prompt_token_ids")
            if echoed is not None and list(echoed) != list(prompt_ids):
                raise ModelError(f"vLLM server tokenised problem {problem.id}'s prompt differently from cropi")
            outs.append(SimpleNamespace(token_ids=list(c["token_ids"]), text=c.get("text", ""), logprobs=None))
        return SimpleNamespace(prompt_token_ids=prompt_ids, outputs=outs)
