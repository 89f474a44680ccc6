"""A decoder-only transformer family in Flax NNX, with a functional KV cache.

One implementation whose ``ModelConfig`` picks the variant: LayerNorm (with or without bias) or
RMSNorm; pre- or post-norm blocks; a final norm or none; GELU (tanh or exact), ReLU or SwiGLU;
learned, rotary or no positions; fused or separate q/k/v with or without biases; grouped-query
attention; a head tied to the embedding or not, with or without a bias. The defaults are the
original architecture (pre-norm, learned positions, tanh-GELU, fused q/k/v, tied head), so GPT-2,
Llama and the JAX miniGPT tutorial are all configurations of this one model.

The cache is a plain pytree (a list of ``{"k", "v"}`` arrays of shape ``[B, H_kv, S, Dh]``) passed
in and returned, so a compiled decode loop can carry it through ``lax.while_loop``. Heads come
before slots so both attention contractions are plain batched matmuls over ``(B, H)``: with
``[B, S, H, Dh]`` XLA:CPU transposes the whole cache every step (16x slower at batch 16).
Rotary positions are applied to keys before they are cached.

Usage::

    model = Transformer(config, rngs=nnx.Rngs(0))
    logits = model(tokens)                                 # [B, T, V], causal
    cache = init_cache(config, batch=2, size=64)
    logits, cache = model(tokens, positions=pos, cache=cache, cache_index=0, mask=mask)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from txtgen_nb.config import ModelConfig

Array = jax.Array
Cache = list[dict[str, Array]]


def compute_dtype(config: ModelConfig) -> jnp.dtype:
    """The dtype activations and parameters use for ``config``."""
    return jnp.dtype(config.dtype)


@dataclasses.dataclass(frozen=True)
class RecomputeConfig:
    """The context of a module run by :class:`Recompute` (it has no KV cache to size)."""

    max_len: int
    vocab_size: int  # the width of the module's logits, read from one abstract call


def init_cache(config: ModelConfig | RecomputeConfig, batch: int, size: int) -> Cache:
    """Zeroed KV cache with ``size`` slots per row (for :class:`Recompute`, a token buffer ``[B, S]``).

    Usage: ``init_cache(cfg, batch=1, size=128)``
    """
    if isinstance(config, RecomputeConfig):
        return [{"tokens": jnp.zeros((batch, size), jnp.int32)}]
    shape = (batch, config.num_kv_heads, size, config.head_dim)  # [B, H_kv, S, Dh]
    dtype = compute_dtype(config)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(config.num_layers)]


def causal_mask(length: int) -> Array:
    """``[1, T, T]`` boolean mask: query ``i`` sees keys ``0..i``."""
    return jnp.tril(jnp.ones((length, length), dtype=bool))[None]


def _linear(config: ModelConfig, d_in: int, d_out: int, use_bias: bool, rngs: nnx.Rngs) -> nnx.Linear:
    dtype = compute_dtype(config)
    return nnx.Linear(d_in, d_out, use_bias=use_bias, dtype=dtype, param_dtype=dtype, rngs=rngs)


def make_norm(config: ModelConfig, rngs: nnx.Rngs) -> nnx.LayerNorm | nnx.RMSNorm:
    """The config's normalisation layer over ``d_model``. Usage: ``make_norm(cfg, nnx.Rngs(0))``"""
    dtype, eps = compute_dtype(config), config.layer_norm_eps
    if config.norm == "rmsnorm":
        return nnx.RMSNorm(config.d_model, epsilon=eps, dtype=dtype, param_dtype=dtype, rngs=rngs)
    return nnx.LayerNorm(config.d_model, epsilon=eps, use_bias=config.norm_bias, dtype=dtype, param_dtype=dtype,
                         rngs=rngs)


def apply_rope(x: Array, positions: Array, theta: float) -> Array:
    """Rotary embedding of ``x [B, H, T, Dh]`` at ``positions [B, T]`` (rotate-half layout, as in
    Hugging Face Llama). Usage: ``apply_rope(q, positions, 10000.0)``"""
    half = x.shape[-1] // 2
    freqs = 1.0 / theta ** (jnp.arange(half, dtype=jnp.float32) / half)  # [Dh/2]
    angles = positions[:, None, :, None].astype(jnp.float32) * freqs  # [B, 1, T, Dh/2]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _put_slots(x: Array, new: Array, cache_index: Array | int) -> Array:
    """``x [..., T, S]`` with slots ``cache_index .. cache_index + T`` of its last axis set to ``new [..., T, T]``
    (the start clamped as ``dynamic_update_slice`` clamps the cache update)."""
    return jax.lax.dynamic_update_slice_in_dim(x, new.astype(x.dtype), cache_index, axis=x.ndim - 1)


class Attention(nnx.Module):
    """Causal self-attention (multi-head or grouped-query) that optionally reads and writes a KV cache."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, dh = config.d_model, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, dh
        self.rope_theta = config.rope_theta if config.positions == "rope" else None
        kv = config.num_kv_heads * dh
        if config.qkv_fused:
            self.qkv = _linear(config, d, d + 2 * kv, config.qkv_bias, rngs)
        else:
            self.q = _linear(config, d, d, config.qkv_bias, rngs)
            self.k = _linear(config, d, kv, config.qkv_bias, rngs)
            self.v = _linear(config, d, kv, config.qkv_bias, rngs)
        self.out = _linear(config, d, d, config.out_bias, rngs)

    def _project(self, x: Array) -> tuple[Array, Array, Array]:
        """q ``[B, H, T, Dh]``, k and v ``[B, H_kv, T, Dh]``."""
        batch, length, _ = x.shape
        heads = (self.num_heads, self.num_kv_heads, self.num_kv_heads)
        if hasattr(self, "qkv"):
            qkv = self.qkv(x).reshape(batch, length, sum(heads), self.head_dim).transpose(0, 2, 1, 3)
            return tuple(jnp.split(qkv, [heads[0], heads[0] + heads[1]], axis=1))
        return tuple(proj(x).reshape(batch, length, h, self.head_dim).transpose(0, 2, 1, 3)
                     for proj, h in zip((self.q, self.k, self.v), heads))

    def __call__(
        self, x: Array, positions: Array, mask: Array, layer_cache: dict[str, Array] | None, cache_index: Array | int
    ) -> tuple[Array, dict[str, Array] | None]:
        batch, length, _ = x.shape
        q, k, v = self._project(x)
        if self.rope_theta is not None:
            q, k = apply_rope(q, positions, self.rope_theta), apply_rope(k, positions, self.rope_theta)
        if self.num_kv_heads == self.num_heads:
            score_spec, mix_spec, mask = "bhtd,bhsd->bhts", "bhts,bhsd->bthd", mask[:, None]
        else:  # grouped-query: query heads in groups of H / H_kv share one key/value head
            q = q.reshape(batch, self.num_kv_heads, -1, length, self.head_dim)  # [B, H_kv, G, T, Dh]
            score_spec, mix_spec, mask = "bkgtd,bksd->bkgts", "bkgts,bksd->btkgd", mask[:, None, None]
        if layer_cache is None:
            scores = jnp.einsum(score_spec, q, k)  # [..., T, T]
        else:
            # Attend to the cache as it was plus the new keys; the updated cache is only returned. Reading
            # the updated cache made XLA:CPU copy every layer's whole cache three times per decode step.
            old_k, old_v = layer_cache["k"], layer_cache["v"]
            k, v = k.astype(old_k.dtype), v.astype(old_v.dtype)
            scores = _put_slots(jnp.einsum(score_spec, q, old_k), jnp.einsum(score_spec, q, k), cache_index)  # [..., T, S]
        scores = jnp.where(mask, scores.astype(jnp.float32) / jnp.sqrt(self.head_dim), jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        if layer_cache is None:
            y = jnp.einsum(mix_spec, weights, v)
        else:
            new_weights = jax.lax.dynamic_slice_in_dim(weights, cache_index, length, axis=-1)  # [..., T, T]
            old_weights = _put_slots(weights, jnp.zeros_like(new_weights), cache_index)
            y = jnp.einsum(mix_spec, old_weights, old_v) + jnp.einsum(mix_spec, new_weights, v)
            start = (0, 0, cache_index, 0)
            layer_cache = {"k": jax.lax.dynamic_update_slice(old_k, k, start),
                           "v": jax.lax.dynamic_update_slice(old_v, v, start)}
        return self.out(y.reshape(batch, length, -1)), layer_cache


class MLP(nnx.Module):
    """Position-wise feed-forward network: ``proj(act(fc(x)))``, or ``proj(silu(gate(x)) * fc(x))`` for SwiGLU."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.activation = config.activation
        self.fc = _linear(config, config.d_model, config.d_ff, config.mlp_bias, rngs)
        if config.activation == "swiglu":
            self.gate = _linear(config, config.d_model, config.d_ff, config.mlp_bias, rngs)
        self.proj = _linear(config, config.d_ff, config.d_model, config.mlp_bias, rngs)

    def __call__(self, x: Array) -> Array:
        if self.activation == "swiglu":
            return self.proj(jax.nn.silu(self.gate(x)) * self.fc(x))
        act = {"gelu_tanh": jax.nn.gelu, "gelu": functools.partial(jax.nn.gelu, approximate=False),
               "relu": jax.nn.relu}[self.activation]
        return self.proj(act(self.fc(x)))


class Block(nnx.Module):
    """Transformer block. Pre-norm: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``; post-norm:
    ``ln1(x + attn(x))`` then ``ln2(x + mlp(x))``."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.pre_norm = config.norm_position == "pre"
        self.ln1 = make_norm(config, rngs)
        self.attn = Attention(config, rngs=rngs)
        self.ln2 = make_norm(config, rngs)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(
        self, x: Array, positions: Array, mask: Array, layer_cache: dict[str, Array] | None, cache_index: Array | int
    ) -> tuple[Array, dict[str, Array] | None]:
        if self.pre_norm:
            attn_out, layer_cache = self.attn(self.ln1(x), positions, mask, layer_cache, cache_index)
            x = x + attn_out
            return x + self.mlp(self.ln2(x)), layer_cache
        attn_out, layer_cache = self.attn(x, positions, mask, layer_cache, cache_index)
        x = self.ln1(x + attn_out)
        return self.ln2(x + self.mlp(x)), layer_cache


HEAD_CHUNKS = 4  # reduced precision: the head's float32 copy (see _tie) is made a quarter at a time


def _tie(weight: Array, x: Array) -> Array:
    """``weight`` made to depend on ``x``, exactly (plus a zero XLA cannot know before ``x``: one
    fused elementwise op). XLA:CPU computes bfloat16 dots in float32 and, with nothing to order
    them, converts every layer's weights at the start of the program, holding float32 copies of all
    at once (530 MB of temporaries on SmolLM2 in bfloat16; an optimization barrier does not help,
    XLA:CPU removes it before scheduling). Tied to the activations, only the running layer's copy
    is alive."""
    zero = jnp.minimum(jnp.abs(x.reshape(-1)[0]), 0)
    return weight + zero.astype(weight.dtype) if jnp.issubdtype(weight.dtype, jnp.floating) else weight


def _tied(module: nnx.Module, x: Array) -> nnx.Module:
    """``module`` with its weights tied to ``x`` by :func:`_tie`."""
    graphdef, weights = nnx.split(module)
    return nnx.merge(graphdef, jax.tree.map(lambda w: _tie(w, x), weights))


class Transformer(nnx.Module):
    """Decoder-only language model.

    Usage: ``Transformer(ModelConfig(vocab_size=512, max_len=64, d_model=64, num_layers=2,
    num_heads=4), rngs=nnx.Rngs(0))``
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        d, dtype = config.d_model, compute_dtype(config)
        self.embed = nnx.Embed(config.vocab_size, d, dtype=dtype, param_dtype=dtype, rngs=rngs)
        if config.positions == "learned":
            self.pos_embed = nnx.Embed(config.max_len, d, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        if config.final_norm:
            self.ln_f = make_norm(config, rngs)
        self.head = None if config.tie_embeddings else _linear(config, d, config.vocab_size, config.head_bias, rngs)

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
        positions = jnp.broadcast_to(positions, (tokens.shape[0], length))  # [B, T]
        x = self.embed(tokens)
        if self.config.positions == "learned":
            x = x + self.pos_embed(positions)
        new_cache = None if cache is None else []
        reduced = compute_dtype(self.config) != jnp.float32  # see _tie
        for i, block in enumerate(self.blocks):
            block = _tied(block, x) if reduced else block
            x, layer_cache = block(x, positions, mask, None if cache is None else cache[i], cache_index)
            if cache is not None:
                new_cache.append(layer_cache)
        if self.config.final_norm:
            x = self.ln_f(x)
        logits = self._chunked_logits(x) if reduced else self._logits(x)
        return logits if cache is None else (logits, new_cache)

    def _logits(self, x: Array) -> Array:
        """Float32 logits ``[B, T, V]`` of the last hidden states ``x [B, T, d]``, through the head or
        the tied embedding."""
        return (self.embed.attend(x) if self.head is None else self.head(x)).astype(jnp.float32)

    def _chunked_logits(self, x: Array) -> Array:
        """:meth:`_logits` in reduced precision: a vocabulary chunk at a time (:data:`HEAD_CHUNKS`),
        each tied to the one before (:func:`_tie`), so the head's float32 copy is never whole."""
        kernel = self.embed.embedding[...].T if self.head is None else self.head.kernel[...]  # [d, V]
        bias = None if self.head is None else self.head.bias
        parts: list[Array] = []
        for chunk in jnp.array_split(kernel, HEAD_CHUNKS, axis=1):  # [d, V / HEAD_CHUNKS]
            parts.append(jnp.dot(x.astype(kernel.dtype), _tie(chunk, parts[-1] if parts else x)))
        logits = jnp.concatenate(parts, axis=-1)
        if bias is not None:
            logits = logits + bias[...].astype(kernel.dtype)
        return logits.astype(jnp.float32)


class Recompute(nnx.Module):
    """Any NNX module ``__call__(tokens [B, T]) -> logits [B, T, V]`` behind the family's cached call.

    Its cache is the token buffer: each call writes the new tokens, then runs the module's full
    forward pass over each row's tokens so far, shifted to start at slot 0 (the module has no mask,
    so left padding would be context) and cut to the context ``max_len``. Slower than a KV cache,
    but it runs in the same compiled loop, so sampling settings stay traced.

    Usage: ``model, params = as_decoder(my_module, nnx.state(my_module, nnx.Param), context=64)``
    """

    def __init__(self, module: nnx.Module, max_len: int):
        self.module = module
        shape = jax.eval_shape(lambda tokens: module(tokens), jax.ShapeDtypeStruct((1, 1), jnp.int32)).shape  # [1, 1, V]
        self.config = RecomputeConfig(max_len, int(shape[-1]))

    def __call__(
        self,
        tokens: Array,
        *,
        positions: Array | None = None,
        mask: Array | None = None,
        cache: Cache | None = None,
        cache_index: Array | int = 0,
    ) -> Array | tuple[Array, Cache]:
        if cache is None and mask is None:
            return self.module(tokens).astype(jnp.float32)
        if cache is None:  # a left-padded batch without a cache (a trace's recompute): through a fresh buffer
            logits, _ = self(tokens, mask=mask, cache=init_cache(self.config, *tokens.shape), cache_index=0)
            return logits
        buffer = jax.lax.dynamic_update_slice(cache[0]["tokens"], tokens.astype(jnp.int32), (0, cache_index))  # [B, S]
        slots = buffer.shape[1]
        start = jnp.zeros(tokens.shape[0], jnp.int32) if mask is None else jnp.argmax(mask[:, -1], axis=-1)  # [B]
        window = min(self.config.max_len, slots)
        index = jnp.minimum(jnp.arange(window)[None] + start[:, None], slots - 1)  # [B, W]
        logits = self.module(jnp.take_along_axis(buffer, index, axis=1))  # [B, W, V]
        query = jnp.clip(cache_index + jnp.arange(tokens.shape[1])[None] - start[:, None], 0, window - 1)  # [B, T]
        return jnp.take_along_axis(logits, query[..., None], axis=1).astype(jnp.float32), [{"tokens": buffer}]


def context_length(module: nnx.Module, default: int | None = None) -> int | None:
    """The context a module declares (``module.config.max_len`` or ``module.max_len``), else ``default``.

    Usage: ``context_length(my_module, default=256)``
    """
    declared = getattr(getattr(module, "config", None), "max_len", None) or getattr(module, "max_len", None)
    return int(declared) if declared else default


def as_decoder(module: nnx.Module, params: nnx.State, context: int) -> tuple[nnx.Module, nnx.State]:
    """``(model, params)`` that generation runs: a family :class:`Transformer` as it is; any other NNX
    module (with ``params = nnx.state(module, nnx.Param)``) wrapped in :class:`Recompute`, its context
    ``module.config.max_len`` or ``module.max_len`` where it has one, else ``context``. The module
    itself is not changed.

    Usage: ``model, params = as_decoder(my_module, nnx.state(my_module, nnx.Param), context=64)``
    """
    if isinstance(module, (Transformer, Recompute)):
        return module, params
    if not isinstance(module, nnx.Module):
        raise ValueError(f"model must be a Flax NNX module, got {type(module).__name__}")
    max_len = context_length(module, context)
    graphdef, state = nnx.split(module)
    copy = nnx.merge(graphdef, state)
    nnx.update(copy, params)
    wrapper = Recompute(copy, int(max_len))
    return wrapper, nnx.state(wrapper)


def count_params(params: nnx.State) -> int:
    """Number of scalars in a parameter state. Usage: ``count_params(nnx.state(model, nnx.Param))``"""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
