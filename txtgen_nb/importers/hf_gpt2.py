"""Hugging Face ``GPT2LMHeadModel`` (gpt2, distilgpt2, TinyStories-style GPT-2s) onto our model family.

GPT-2 is the default configuration: learned positions, pre-norm LayerNorm, tanh-GELU, fused q/k/v
with biases, head tied to the embedding. Its ``Conv1D`` weights are stored ``[in, out]``, as ours are.

Usage::

    config = hf_gpt2.config_from_hf(json.load(open("gpt2/config.json")), source="gpt2/config.json")
    params = hf_gpt2.convert(tensors, config, source="gpt2")
"""

from __future__ import annotations

from typing import Any

from txtgen_nb.config import ModelConfig
from txtgen_nb.importers.base import FlatParams, mapped, strip_prefix

LAYOUT = "Hugging Face GPT-2"
DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True)
"""``GPT2Config``'s defaults: ``save_pretrained`` leaves out the keys that equal them."""
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
               "gelu": "gelu", "relu": "relu"}
_BUFFERS = (".attn.bias", ".attn.masked_bias")


def config_from_hf(raw: dict[str, Any], source: object) -> ModelConfig:
    """Our config for a GPT-2 ``config.json``; an error names a setting we cannot reproduce."""
    get = {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None or k == "n_inner"}}
    if get["activation_function"] not in ACTIVATIONS:
        raise ValueError(f"{source}: {LAYOUT} activation_function {get['activation_function']!r} is not supported "
                         f"({', '.join(ACTIVATIONS)})")
    if get.get("scale_attn_by_inverse_layer_idx"):
        raise ValueError(f"{source}: {LAYOUT} with scale_attn_by_inverse_layer_idx is not supported")
    if get.get("scale_attn_weights") is False:
        raise ValueError(f"{source}: {LAYOUT} with scale_attn_weights false is not supported")
    d = int(get["n_embd"])
    try:
        return ModelConfig(
            vocab_size=int(get["vocab_size"]), max_len=int(get["n_positions"]), d_model=d,
            num_layers=int(get["n_layer"]), num_heads=int(get["n_head"]), d_ff=int(get["n_inner"] or 4 * d),
            layer_norm_eps=float(get["layer_norm_epsilon"]), activation=ACTIVATIONS[get["activation_function"]],
            tie_embeddings=bool(get["tie_word_embeddings"]))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {LAYOUT} config: {err}") from None


def convert(tensors: dict[str, Any], config: ModelConfig, source: object) -> FlatParams:
    """GPT-2 tensors at our parameter paths (``lm_head`` only when the head is untied)."""
    tensors = strip_prefix(tensors, ("transformer.",), _BUFFERS)
    if config.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    mapping = {"wte.weight": (("embed", "embedding"), False), "wpe.weight": (("pos_embed", "embedding"), False),
               "ln_f.weight": (("ln_f", "scale"), False), "ln_f.bias": (("ln_f", "bias"), False)}
    if not config.tie_embeddings:
        mapping["lm_head.weight"] = (("head", "kernel"), True)
    parts = {"ln_1": ("ln1",), "ln_2": ("ln2",), "attn.c_attn": ("attn", "qkv"), "attn.c_proj": ("attn", "out"),
             "mlp.c_fc": ("mlp", "fc"), "mlp.c_proj": ("mlp", "proj")}
    for i in range(config.num_layers):
        for theirs, ours in parts.items():
            is_norm = theirs.startswith("ln")
            mapping[f"h.{i}.{theirs}.weight"] = (("blocks", str(i), *ours, "scale" if is_norm else "kernel"), False)
            mapping[f"h.{i}.{theirs}.bias"] = (("blocks", str(i), *ours, "bias"), False)
    return mapped(tensors, mapping, source, LAYOUT)
