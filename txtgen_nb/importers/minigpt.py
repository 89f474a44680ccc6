"""The JAX miniGPT tutorial's checkpoints (jax-ai-stack ``docs/source/JAX_for_LLM_pretraining.md``).

Its ``MiniGPT`` is learned positions, post-norm blocks (LayerNorm eps 1e-6 with bias), an
``nnx.MultiHeadAttention`` with separate q/k/v and biases, a ReLU MLP, no final norm, and an untied
output layer with a bias. It saves ``nnx.state(model)`` with ``PyTreeCheckpointer``; the same tree
wrapped as ``{'params': ...}`` and Flax linen trees (``transformer_blocks_0`` ...) map one to one.
The dimensions follow from the shapes, so no config file is needed; one in the tutorial's names
(``maxlen``, ``embed_dim``, ``feed_forward_dim``, ``num_transformer_blocks`` ...) is checked against them.

Usage::

    if minigpt.looks_like(flat):
        config, native = minigpt.convert(flat, None, "ckpt")  # None: no config file to check
"""

from __future__ import annotations

import re

import numpy as np

from txtgen_nb.config import ALIASES, ModelConfig, config_from_dict
from txtgen_nb.importers.base import FlatParams, expected_params

LAYOUT = "JAX miniGPT tutorial"
ARCHITECTURE = dict(norm="layernorm", norm_bias=True, norm_position="post", final_norm=False, activation="relu",
                    positions="learned", qkv_fused=False, qkv_bias=True, out_bias=True, mlp_bias=True,
                    tie_embeddings=False, head_bias=True, layer_norm_eps=1e-6)
_LINEN_BLOCK = re.compile(r"^transformer_blocks_(\d+)$")
_BLOCK_MAP = {  # tutorial path inside a block -> ours
    ("layer_norm1",): ("ln1",), ("layer_norm2",): ("ln2",), ("linear1",): ("mlp", "fc"),
    ("linear2",): ("mlp", "proj"), ("mha", "query"): ("attn", "q"), ("mha", "key"): ("attn", "k"),
    ("mha", "value"): ("attn", "v"), ("mha", "out"): ("attn", "out"),
}
_TOP_MAP = {("embedding_layer", "token_emb"): ("embed",), ("embedding_layer", "pos_emb"): ("pos_embed",),
            ("output_layer",): ("head",)}


def _normalise(key: tuple[str, ...]) -> tuple[str, ...]:
    """Linen names list entries ``transformer_blocks_3``; NNX gives ``transformer_blocks/3``."""
    match = _LINEN_BLOCK.match(key[0]) if key else None
    return ("transformer_blocks", match.group(1), *key[1:]) if match else key


def looks_like(flat: FlatParams) -> bool:
    """Whether parameter names are the tutorial's. Usage: ``minigpt.looks_like(flat)``"""
    return any(k and _normalise(k)[0] in ("embedding_layer", "transformer_blocks") for k in flat)


def _map_key(key: tuple[str, ...]) -> tuple[str, ...] | None:
    if key[0] == "transformer_blocks" and len(key) >= 3:
        for theirs, ours in _BLOCK_MAP.items():
            if key[2:2 + len(theirs)] == theirs and len(key) == 3 + len(theirs):
                return ("blocks", key[1], *ours, key[-1])
        return None
    for theirs, ours in _TOP_MAP.items():
        if key[:len(theirs)] == theirs and len(key) == len(theirs) + 1:
            return (*ours, key[-1])
    return None


def _reshape(ours: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    """``nnx.MultiHeadAttention`` keeps heads as an axis: q/k/v kernels ``[d, H, Dh]``, biases ``[H, Dh]``,
    the output kernel ``[H, Dh, d]``; ours are flat ``[d, H*Dh]``, ``[H*Dh]``, ``[H*Dh, d]``."""
    if ours[2:4] == ("attn", "out") and ours[-1] == "kernel":
        return array.reshape(-1, array.shape[-1])
    if ours[2:3] == ("attn",) and ours[3] in ("q", "k", "v"):
        return array.reshape(array.shape[0], -1) if ours[-1] == "kernel" else array.reshape(-1)
    return array


def convert(flat: FlatParams, raw_config: dict | None, source: object) -> tuple[ModelConfig, FlatParams]:
    """The tutorial's parameters as ``(config, params at our paths)``; the config comes from the
    shapes and is checked against ``raw_config`` when one is given. Errors name what did not match.

    Usage: ``config, native = convert(flatten(tree), None, "ckpt")``
    """
    native: FlatParams = {}
    unexpected = []
    for key, array in flat.items():
        key = _normalise(key)
        if "rngs" in key:  # dropout key state, not a parameter
            continue
        ours = _map_key(key)
        if ours is None:
            unexpected.append("/".join(key))
        else:
            native[ours] = _reshape(ours, np.asarray(array))
    if unexpected:
        raise ValueError(f"{source}: looks like the {LAYOUT} layout but has unexpected parameters: "
                         f"{', '.join(sorted(unexpected)[:5])}")
    try:
        vocab, d_model = _shape(native, ("embed", "embedding"))
        max_len = _shape(native, ("pos_embed", "embedding"))[0]
        layers = len({k[1] for k in native if k[0] == "blocks"})
        heads = np.asarray(_find(flat, ("mha", "query", "kernel"))).shape[1]
        d_ff = _shape(native, ("blocks", "0", "mlp", "fc", "kernel"))[1]
    except KeyError as err:
        raise ValueError(f"{source}: looks like the {LAYOUT} layout but {err.args[0]} is missing") from None
    dims = dict(vocab_size=vocab, max_len=max_len, d_model=d_model, num_layers=layers, num_heads=heads, d_ff=d_ff)
    if raw_config is not None:
        _check_dims(dims, raw_config, source)
    config = ModelConfig(**dims, **ARCHITECTURE)
    missing = sorted(_their_key(k) for k in set(expected_params(config)[2]) - set(native))
    if missing:
        raise ValueError(f"{source}: looks like the {LAYOUT} layout but is missing: {', '.join(missing[:5])}")
    return config, native


def _their_key(ours: tuple[str, ...]) -> str:
    """The tutorial's name for one of our parameter paths (for error messages)."""
    if ours[0] == "blocks":
        theirs = next(t for t, o in _BLOCK_MAP.items() if ours[2:-1] == o)
        return "/".join(("transformer_blocks", ours[1], *theirs, ours[-1]))
    return "/".join((*next(t for t, o in _TOP_MAP.items() if ours[:-1] == o), ours[-1]))


def _shape(flat: FlatParams, key: tuple[str, ...]) -> tuple[int, ...]:
    if key not in flat:
        raise KeyError("/".join(key))
    return tuple(flat[key].shape)


def _find(flat: FlatParams, tail: tuple[str, ...]) -> np.ndarray:
    for key, array in flat.items():
        if key[-len(tail):] == tail:
            return array
    raise KeyError("/".join(tail))


def _check_dims(dims: dict[str, int], raw_config: dict, source: object) -> None:
    given = config_from_dict(raw_config, source=f"{source} config")
    differ = [f"{name} {getattr(given, name)} (config) vs {value} (checkpoint)" for name, value in dims.items()
              if any(alias in raw_config for alias in ALIASES[name]) and getattr(given, name) != value]
    if differ:
        raise ValueError(f"{source}: {LAYOUT} checkpoint does not match its config: {'; '.join(differ)}")
