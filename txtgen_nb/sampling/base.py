"""What every rule shares: settings broadcast against the logits, probabilities, entropy and a fast sort.

Usage: ``column(0.9, logits)  # [..., 1], one setting per row``
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
NEG_INF = -jnp.inf


def _order_bits(bits: Array) -> Array:
    """int32 bit patterns of float32 values mapped to ints in the floats' order (and back: an involution)."""
    return jnp.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def sort_descending(x: Array) -> Array:
    """``x`` float32 sorted largest first along the last axis: the values of ``-jnp.sort(-x)``, sorted
    as int32 keys (XLA:CPU's float comparator is about 4x slower: 34 vs 8 ms on ``[128, 2048]``).

    Usage: ``sort_descending(jnp.array([1.0, 3.0, 2.0]))  # [3., 2., 1.]``
    """
    keys = _order_bits(jax.lax.bitcast_convert_type(jnp.asarray(x, jnp.float32), jnp.int32))
    ordered = ~jnp.sort(~keys, axis=-1)  # ~ reverses the order of int32s
    return jax.lax.bitcast_convert_type(_order_bits(ordered), jnp.float32)


def column(value: ArrayLike, logits: Array) -> Array:
    """A setting broadcast against the leading axes of ``logits``, with a trailing vocab axis."""
    value = jnp.asarray(value, dtype=jnp.float32)
    return jnp.broadcast_to(value, logits.shape[:-1])[..., None]


def per_row(value: ArrayLike, logits: Array, dtype=jnp.float32) -> Array:
    """A setting broadcast to the leading axes of ``logits`` (no vocab axis)."""
    return jnp.broadcast_to(jnp.asarray(value).astype(dtype), logits.shape[:-1])


def context_ids(context: ArrayLike, logits: Array) -> Array:
    """Context ids ``[..., T]`` broadcast to the leading axes of ``logits``."""
    ids = jnp.asarray(context, jnp.int32)
    return jnp.broadcast_to(ids, logits.shape[:-1] + ids.shape[-1:])


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
