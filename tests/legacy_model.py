"""Frozen copy of ``txtgen_nb/model.py`` before the configurable model family (commit 127a8a2).

The reference that ``tests/test_model_family.py`` compares the new model against: run folders
saved before the change must give the same logits and the same text. Do not edit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from txtgen_nb.config import ModelConfig

Array = jax.Array
Cache = list[dict[str, Array]]


def compute_dtype(config: ModelConfig) -> jnp.dtype:
    """The dtype activations and parameters use for ``config``."""
    return jnp.dtype(config.dtype)


def init_cache(config: ModelConfig, batch: int, size: int) -> Cache:
    """Zeroed KV cache with ``size`` slots per row. Usage: ``init_cache(cfg, batch=1, size=128)``"""
    shape = (batch, config.num_heads, size, config.head_dim)
    dtype = compute_dtype(config)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(config.num_layers)]


def causal_mask(length: int) -> Array:
    """``[1, T, T]`` boolean mask: query ``i`` sees keys ``0..i``."""
    return jnp.tril(jnp.ones((length, length), dtype=bool))[None]


class Attention(nnx.Module):
    """Causal multi-head self-attention that optionally reads and writes a KV cache."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, dtype = config.d_model, compute_dtype(config)
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.qkv = nnx.Linear(d, 3 * d, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(d, d, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(
        self, x: Array, mask: Array, layer_cache: dict[str, Array] | None, cache_index: Array | int
    ) -> tuple[Array, dict[str, Array] | None]:
        batch, length, _ = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3 * self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        q, k, v = jnp.split(qkv, 3, axis=1)  # [B, H, T, Dh] each
        if layer_cache is not None:
            start = (0, 0, cache_index, 0)
            k = jax.lax.dynamic_update_slice(layer_cache["k"], k.astype(layer_cache["k"].dtype), start)
            v = jax.lax.dynamic_update_slice(layer_cache["v"], v.astype(layer_cache["v"].dtype), start)
            layer_cache = {"k": k, "v": v}
        scores = jnp.einsum("bhtd,bhsd->bhts", q, k).astype(jnp.float32) / jnp.sqrt(self.head_dim)
        scores = jnp.where(mask[:, None], scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        y = jnp.einsum("bhts,bhsd->bthd", weights, v).reshape(batch, length, -1)
        return self.out(y), layer_cache


class MLP(nnx.Module):
    """Position-wise feed-forward network with a GELU."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dtype = compute_dtype(config)
        self.fc = nnx.Linear(config.d_model, config.d_ff, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(config.d_ff, config.d_model, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.proj(jax.nn.gelu(self.fc(x)))


class Block(nnx.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, eps, dtype = config.d_model, config.layer_norm_eps, compute_dtype(config)
        self.ln1 = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.attn = Attention(config, rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(
        self, x: Array, mask: Array, layer_cache: dict[str, Array] | None, cache_index: Array | int
    ) -> tuple[Array, dict[str, Array] | None]:
        attn_out, layer_cache = self.attn(self.ln1(x), mask, layer_cache, cache_index)
        x = x + attn_out
        x = x + self.mlp(self.ln2(x))
        return x, layer_cache


class Transformer(nnx.Module):
    """Decoder-only language model.

    Usage: ``Transformer(ModelConfig(vocab_size=512, max_len=64, d_model=64, num_layers=2,
    num_heads=4), rngs=nnx.Rngs(0))``
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        d, dtype = config.d_model, compute_dtype(config)
        self.embed = nnx.Embed(config.vocab_size, d, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.pos_embed = nnx.Embed(config.max_len, d, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.ln_f = nnx.LayerNorm(d, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.head = None
        if not config.tie_embeddings:
            self.head = nnx.Linear(d, config.vocab_size, use_bias=False, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(
        self,
        tokens: Array,
        *,
        positions: Array | None = None,
        mask: Array | None = None,
        cache: Cache | None = None,
        cache_index: Array | int = 0,
    ) -> Array | tuple[Array, Cache]:
        """Logits ``[B, T, V]`` (float32) for ``tokens [B, T]``.

        Without ``cache`` the pass is causal over ``tokens``. With ``cache`` the new keys and values
        are written at slots ``cache_index .. cache_index + T`` and ``mask [B, T, S]`` says which
        cache slots each query may see; the updated cache is returned with the logits.
        """
        length = tokens.shape[1]
        if positions is None:
            positions = jnp.arange(length)[None]
        if mask is None:
            mask = causal_mask(length)
        x = self.embed(tokens) + self.pos_embed(positions)
        new_cache = None if cache is None else []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, mask, None if cache is None else cache[i], cache_index)
            if cache is not None:
                new_cache.append(layer_cache)
        x = self.ln_f(x)
        logits = self.embed.attend(x) if self.head is None else self.head(x)
        logits = logits.astype(jnp.float32)
        return logits if cache is None else (logits, new_cache)


def count_params(params: nnx.State) -> int:
    """Number of scalars in a parameter state. Usage: ``count_params(nnx.state(model, nnx.Param))``"""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
