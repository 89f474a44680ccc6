"""Hugging Face GPT-2 and Llama folders load without a flag and agree with ``transformers`` (PyTorch, CPU).

Tiny random models with every weight perturbed, stored as float32, bfloat16 or float16, single-file
or sharded; the reference runs the same (rounded) weights in float32.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

from txtgen_nb import generate, load_model_and_tokenizer
from txtgen_nb.checkpoint import load_run
from txtgen_nb.tokenizer import encode_prompt, special_ids

from conftest import tiny_tokenizer

STORED = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}

CASES = {
    "gpt2_f32_tied": ("gpt2", torch.float32, False, {}),
    "gpt2_bf16_untied_sharded": ("gpt2", torch.bfloat16, True, dict(tie_word_embeddings=False,
                                                                     activation_function="gelu")),
    "llama_f32_gqa": ("llama", torch.float32, False, dict(num_key_value_heads=2)),
    "llama_f16_tied_bias_sharded": ("llama", torch.float16, True, dict(
        num_key_value_heads=1, tie_word_embeddings=True, attention_bias=True, mlp_bias=True, rope_theta=500.0)),
    "llama_bf16_mha": ("llama", torch.bfloat16, False, dict(num_key_value_heads=4)),
}


def hf_model(kind: str, overrides: dict) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    if kind == "gpt2":
        base = dict(vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=4)
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**base, **overrides}))
    else:
        base = dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=32)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**base, **overrides}))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model.eval()


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(f"{p.relative_to(root)} {p.stat().st_mtime_ns}".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def save_folder(kind: str, dtype: torch.dtype, sharded: bool, overrides: dict, folder: Path):
    """Save as Hugging Face does; return the float32 reference holding the stored (rounded) weights."""
    model = hf_model(kind, overrides).to(dtype)
    model.save_pretrained(folder, max_shard_size="20KB" if sharded else "50GB")
    tiny_tokenizer().save(str(folder / "tokenizer.json"))
    reference = type(model)(model.config).eval()  # fresh float32 buffers (rotary frequencies are not rounded)
    reference.load_state_dict({name: value.float() for name, value in model.state_dict().items()})
    reference.config._attn_implementation = "eager"
    return reference.to(torch.float32)


def greedy_reference(model, ids: list[int], steps: int, eos: int) -> list[int]:
    out: list[int] = []
    with torch.no_grad():
        while len(out) < steps and (not out or out[-1] != eos):
            logits = model(torch.tensor([ids + out])).logits
            out.append(int(logits[0, -1].argmax()))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_folder_loads_and_agrees_with_transformers(case, tmp_path):
    kind, dtype, sharded, overrides = CASES[case]
    folder = tmp_path / case
    reference = save_folder(kind, dtype, sharded, overrides, folder)
    assert (folder / "model.safetensors.index.json").is_file() == sharded
    with safe_open(str(next(folder.glob("*.safetensors"))), framework="flax") as handle:
        assert handle.get_slice(next(iter(handle.keys()))).get_dtype() == STORED[dtype]
    before = digest(folder)
    lines = []
    model, params, tokenizer, config = load_model_and_tokenizer(folder, log=lines.append)
    assert digest(folder) == before
    assert lines[1].startswith(f"Loading config from: {folder / 'config.json'} (Hugging Face ")
    assert config.num_kv_heads == overrides.get("num_key_value_heads", 4)
    tokens = np.random.default_rng(0).integers(0, 300, (2, 24))
    with torch.no_grad():
        expected = reference(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(tokens, jnp.int32))), expected, atol=2e-4, rtol=2e-4)
    prompt = "Once upon a time"
    result = generate(model, params, tokenizer, prompt, max_new_tokens=10, temperature=0.0)
    eos = special_ids(tokenizer).eos
    assert result.new_token_ids[0] == greedy_reference(reference, encode_prompt(tokenizer, prompt), 10, eos)


def test_errors_name_the_layout(tmp_path):
    folder = tmp_path / "gpt2"
    save_folder("gpt2", torch.float32, False, {}, folder)
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "architectures": ["MistralForCausalLM"],
                                                    "model_type": "mistral"}))
    with pytest.raises(ValueError, match="Hugging Face architecture MistralForCausalLM, mistral is not supported"):
        load_run(folder)
    (folder / "config.json").write_text(json.dumps({**raw, "n_layer": 3}))
    with pytest.raises(ValueError, match=r"Hugging Face GPT-2 weights do not match its config.json "
                                         r"\(missing: h\.2\.attn\.c_attn\.bias"):
        load_run(folder)
    (folder / "config.json").write_text(json.dumps(raw))
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="Could not find tokenizer.json"):
        load_run(folder)


def test_tokenizer_larger_than_vocab_is_refused(tmp_path):
    folder = tmp_path / "llama"
    save_folder("llama", torch.float32, False, dict(vocab_size=200), folder)
    with pytest.raises(ValueError, match="vocab_size 200 is smaller than the tokenizer's 300 tokens"):
        load_run(folder)
