"""Pure, jittable sampling rules: temperature → top-k → top-p → min-p, and greedy.

Every function works on logits of shape ``[..., vocab]`` and accepts its settings as Python
numbers or traced arrays broadcastable to the leading axes ``[...]`` (one setting per row is
fine), so changing a setting never recompiles a jitted caller. Removed tokens get ``-inf``.

Usage::

    filtered = filter_logits(logits, temperature=0.8, top_k=50, top_p=0.9)
    token = sample_token(jax.random.key(0), logits, temperature=0.8, top_k=50, top_p=0.9)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
NEG_INF = -jnp.inf


def _setting(value: ArrayLike, logits: Array) -> Array:
    """A setting broadcast against the leading axes of ``logits``, with a trailing vocab axis."""
    value = jnp.asarray(value, dtype=jnp.float32)
    return jnp.broadcast_to(value, logits.shape[:-1])[..., None]


def apply_temperature(logits: Array, temperature: ArrayLike) -> Array:
    """Divide by ``temperature``; ``temperature <= 0`` keeps only the argmax (greedy).

    Usage: ``apply_temperature(logits, 0.7)``
    """
    logits = jnp.asarray(logits, jnp.float32)
    t = _setting(temperature, logits)
    scaled = logits / jnp.where(t > 0, t, 1.0)
    is_max = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=bool)
    return jnp.where((t > 0) | is_max, scaled, NEG_INF)


def apply_top_k(logits: Array, top_k: ArrayLike) -> Array:
    """Keep every token whose logit is at least the k-th largest; ``top_k <= 0`` disables.

    Usage: ``apply_top_k(logits, 50)``
    """
    vocab = logits.shape[-1]
    k = jnp.broadcast_to(jnp.asarray(top_k, jnp.int32), logits.shape[:-1])[..., None]
    k_index = jnp.clip(k, 1, vocab) - 1
    sorted_desc = -jnp.sort(-logits, axis=-1)
    kth = jnp.take_along_axis(sorted_desc, k_index, axis=-1)
    return jnp.where((k <= 0) | (logits >= kth), logits, NEG_INF)


def apply_top_p(logits: Array, top_p: ArrayLike) -> Array:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p``.

    The token that crosses the threshold is kept, so at least one token always stays; tokens
    tied with the last kept logit are kept too. ``top_p >= 1`` disables the filter.

    Usage: ``apply_top_p(logits, 0.9)``
    """
    p = _setting(top_p, logits)
    sorted_desc = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = mass_before < p
    keep_sorted = keep_sorted.at[..., 0].set(True)
    threshold = jnp.min(jnp.where(keep_sorted, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    return jnp.where((p >= 1.0) | (logits >= threshold), logits, NEG_INF)


def apply_min_p(logits: Array, min_p: ArrayLike) -> Array:
    """Keep tokens whose probability is at least ``min_p`` times the top token's; 0 disables.

    Usage: ``apply_min_p(logits, 0.05)``
    """
    m = _setting(min_p, logits)
    top = jnp.max(logits, axis=-1, keepdims=True)
    relative = jnp.exp(logits - top)
    return jnp.where((m <= 0) | (relative >= m), logits, NEG_INF)


class Stages(NamedTuple):
    """The logits after each stage of :func:`filter_logits` (``-inf`` = removed)."""

    raw: Array
    temperature: Array
    top_k: Array
    top_p: Array
    min_p: Array


def filter_stages(
    logits: ArrayLike,
    *,
    temperature: ArrayLike,
    top_k: ArrayLike = 0,
    top_p: ArrayLike = 1.0,
    min_p: ArrayLike = 0.0,
) -> Stages:
    """Run the sampling pipeline and keep every intermediate result (for visualisation).

    Usage: ``stages = filter_stages(logits, temperature=0.8, top_k=50, top_p=0.9)``
    """
    raw = jnp.asarray(logits, jnp.float32)
    after_t = apply_temperature(raw, temperature)
    after_k = apply_top_k(after_t, top_k)
    after_p = apply_top_p(after_k, top_p)
    after_m = apply_min_p(after_p, min_p)
    return Stages(raw, after_t, after_k, after_p, after_m)


def filter_logits(
    logits: ArrayLike,
    *,
    temperature: ArrayLike,
    top_k: ArrayLike = 0,
    top_p: ArrayLike = 1.0,
    min_p: ArrayLike = 0.0,
) -> Array:
    """Logits after temperature, top-k, top-p and min-p, in that order; removed tokens are ``-inf``.

    ``temperature=0`` is greedy (only the argmax stays), ``top_k=0``, ``top_p=1`` and ``min_p=0``
    disable their filters.

    Usage: ``filter_logits(logits, temperature=0.8, top_k=50, top_p=1.0)``
    """
    return filter_stages(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p).min_p


TOP_K_CAP = 64


def filter_logits_fast(
    logits: ArrayLike,
    *,
    temperature: ArrayLike,
    top_k: ArrayLike = 0,
    top_p: ArrayLike = 1.0,
    min_p: ArrayLike = 0.0,
    cap: int = TOP_K_CAP,
) -> Array:
    """:func:`filter_logits` (same rules, same result) without sorting the vocabulary each call.

    Top-k and top-p only need the ``cap`` largest logits (``lax.top_k``) when every row has
    ``1 <= top_k <= cap``, or top-k off and either ``top_p >= 1`` or a nucleus inside those ``cap``
    tokens. Otherwise the whole batch takes the sorting path (one ``lax.cond`` for the batch: do
    not ``vmap`` this function, or the cond becomes a select and both paths run).

    Usage: ``filter_logits_fast(logits, temperature=0.8, top_k=50, top_p=1.0)``
    """
    raw = jnp.asarray(logits, jnp.float32)
    vocab = raw.shape[-1]
    cap = max(1, min(cap, vocab))
    after_t = apply_temperature(raw, temperature)
    k = jnp.broadcast_to(jnp.asarray(top_k, jnp.int32), raw.shape[:-1])[..., None]
    p = _setting(top_p, raw)
    k_on = (k > 0) & (k < vocab)  # k >= vocab keeps every token, like k == 0
    small_k = k_on & (k <= cap)
    top_vals = jax.lax.top_k(after_t, cap)[0]  # [..., cap], descending
    kth = jnp.where(small_k, jnp.take_along_axis(top_vals, jnp.clip(k, 1, cap) - 1, axis=-1), NEG_INF)
    after_k = jnp.where(after_t >= kth, after_t, NEG_INF)
    # the top-p rule of apply_top_p on the window of the cap largest logits left after top-k
    window = jnp.where(top_vals >= kth, top_vals, NEG_INF)
    probs = jnp.exp(window - jax.nn.logsumexp(after_k, axis=-1, keepdims=True))
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep_window = (mass_before < p).at[..., 0].set(True)
    threshold = jnp.min(jnp.where(keep_window, window, jnp.inf), axis=-1, keepdims=True)
    after_p = jnp.where((p >= 1.0) | (after_k >= threshold), after_k, NEG_INF)
    # exact unless top-k needs a rank past the window, or top-p's nucleus may extend past it
    exact = jnp.where(k_on, small_k, (p >= 1.0) | (jnp.sum(probs, axis=-1, keepdims=True) >= p))
    return jax.lax.cond(
        jnp.all(exact),
        lambda: apply_min_p(after_p, min_p),
        lambda: filter_logits(raw, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p),
    )


def probabilities(filtered_logits: ArrayLike) -> Array:
    """Renormalised probabilities of (filtered) logits; removed tokens get exactly 0.

    Usage: ``probs = probabilities(filter_logits(logits, temperature=0.8))``
    """
    return jax.nn.softmax(jnp.asarray(filtered_logits, jnp.float32), axis=-1)


def entropy(filtered_logits: ArrayLike) -> Array:
    """Entropy in nats of the distribution given by (filtered) logits, over the leading axes.

    Usage: ``entropy(filter_logits(logits, temperature=1.0))``
    """
    probs = probabilities(filtered_logits)
    logp = jnp.where(probs > 0, jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0)
    return jnp.maximum(-jnp.sum(probs * logp, axis=-1), 0.0) + 0.0  # never negative, never -0.0


def sample_token(
    key: Array,
    logits: ArrayLike,
    *,
    temperature: ArrayLike,
    top_k: ArrayLike = 0,
    top_p: ArrayLike = 1.0,
    min_p: ArrayLike = 0.0,
) -> Array:
    """Draw token ids of shape ``logits.shape[:-1]`` from the filtered distribution.

    Usage: ``sample_token(jax.random.key(42), logits, temperature=0.8, top_k=50, top_p=1.0)``
    """
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
