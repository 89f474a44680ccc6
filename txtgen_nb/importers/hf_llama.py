"""Hugging Face ``LlamaForCausalLM`` (Llama, SmolLM, TinyLlama-style) onto our model family.

Llama is RMSNorm, rotary positions (rotate-half layout), SwiGLU, separate q/k/v without biases,
grouped-query attention and, usually, an untied head. Its ``nn.Linear`` weights are ``[out, in]``:
transposed here. Only the default rotary scaling is supported.

Usage::

    config = hf_llama.config_from_hf(json.load(open("llama/config.json")), source="llama/config.json")
    params = hf_llama.convert(tensors, config, source="llama")
"""

from __future__ import annotations

from typing import Any

from txtgen_nb.config import ModelConfig
from txtgen_nb.importers.base import FlatParams, mapped, strip_prefix

LAYOUT = "Hugging Face Llama"
DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", max_position_embeddings=2048,
                rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0, attention_bias=False,
                mlp_bias=False)
"""``LlamaConfig``'s defaults: ``save_pretrained`` leaves out the keys that equal them."""


def _rope_theta(raw: dict[str, Any], source: object) -> float:
    """``rope_theta`` from ``rope_parameters`` (transformers 5) or the top level with ``rope_scaling``."""
    params = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise ValueError(f"{source}: {LAYOUT} rotary scaling {kind!r} is not supported (only the default)")
    return float(params.get("rope_theta", raw.get("rope_theta", DEFAULTS["rope_theta"])))


def config_from_hf(raw: dict[str, Any], source: object) -> ModelConfig:
    """Our config for a Llama ``config.json``; an error names a setting we cannot reproduce."""
    get = {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    if get["hidden_act"] != "silu":
        raise ValueError(f"{source}: {LAYOUT} hidden_act {get['hidden_act']!r} is not supported (silu)")
    d, heads = int(get["hidden_size"]), int(get["num_attention_heads"])
    if raw.get("head_dim") not in (None, d // heads):
        raise ValueError(f"{source}: {LAYOUT} head_dim {raw['head_dim']} is not hidden_size / num_attention_heads "
                         f"({d // heads}): not supported")
    try:
        return ModelConfig(
            vocab_size=int(get["vocab_size"]), max_len=int(get["max_position_embeddings"]), d_model=d,
            num_layers=int(get["num_hidden_layers"]), num_heads=heads, d_ff=int(get["intermediate_size"]),
            num_kv_heads=int(get["num_key_value_heads"] or heads), layer_norm_eps=float(get["rms_norm_eps"]),
            norm="rmsnorm", activation="swiglu", positions="rope", rope_theta=_rope_theta(raw, source),
            qkv_fused=False, qkv_bias=bool(get["attention_bias"]), out_bias=bool(get["attention_bias"]),
            mlp_bias=bool(get["mlp_bias"]), tie_embeddings=bool(get["tie_word_embeddings"]))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {LAYOUT} config: {err}") from None


def convert(tensors: dict[str, Any], config: ModelConfig, source: object) -> FlatParams:
    """Llama tensors at our parameter paths, linear weights transposed to ``[in, out]``."""
    tensors = strip_prefix(tensors, ("model.",), ("rotary_emb.inv_freq",))
    if config.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    mapping = {"embed_tokens.weight": (("embed", "embedding"), False), "norm.weight": (("ln_f", "scale"), False)}
    if not config.tie_embeddings:
        mapping["lm_head.weight"] = (("head", "kernel"), True)
    linears = {"self_attn.q_proj": (("attn", "q"), config.qkv_bias), "self_attn.k_proj": (("attn", "k"), config.qkv_bias),
               "self_attn.v_proj": (("attn", "v"), config.qkv_bias), "self_attn.o_proj": (("attn", "out"), config.out_bias),
               "mlp.gate_proj": (("mlp", "gate"), config.mlp_bias), "mlp.up_proj": (("mlp", "fc"), config.mlp_bias),
               "mlp.down_proj": (("mlp", "proj"), config.mlp_bias)}
    for i in range(config.num_layers):
        block = ("blocks", str(i))
        mapping[f"layers.{i}.input_layernorm.weight"] = ((*block, "ln1", "scale"), False)
        mapping[f"layers.{i}.post_attention_layernorm.weight"] = ((*block, "ln2", "scale"), False)
        for theirs, (ours, has_bias) in linears.items():
            mapping[f"layers.{i}.{theirs}.weight"] = ((*block, *ours, "kernel"), True)
            if has_bias:
                mapping[f"layers.{i}.{theirs}.bias"] = ((*block, *ours, "bias"), False)
    return mapped(tensors, mapping, source, LAYOUT)
