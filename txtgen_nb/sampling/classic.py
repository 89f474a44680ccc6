"""The four classic rules (temperature, top-k, top-p, min-p), llama.cpp's by-rank cuts, and
:func:`filter_logits_fast`: the same four without sorting the vocabulary, beside the rules it must equal.

Usage: ``apply_top_p(apply_temperature(logits, 0.8), 0.9)``
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from txtgen_nb.sampling.base import NEG_INF, Array, ArrayLike, column, sort_descending


def apply_temperature(logits: Array, temperature: ArrayLike) -> Array:
    """Divide by ``temperature``; ``temperature <= 0`` keeps only the argmax (greedy).

    Usage: ``apply_temperature(logits, 0.7)``
    """
    logits = jnp.asarray(logits, jnp.float32)
    t = column(temperature, logits)
    scaled = logits / jnp.where(t > 0, t, 1.0)
    is_max = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=bool)
    return jnp.where((t > 0) | is_max, scaled, NEG_INF)


def effective_temperature(logits: Array, temperature: ArrayLike, delta: ArrayLike = 0.0,
                          exponent: ArrayLike = 1.0) -> Array:
    """The temperature ``[..., 1]`` each row is divided by: ``temperature``, or with ``delta > 0``
    llama.cpp's dynamic temperature (``temp-ext``, from koboldcpp): from ``max(0, T - delta)`` to
    ``T + delta`` as the normalised entropy ``H / ln n`` of the ``n`` tokens still in play, raised
    to ``exponent``, goes from 0 to 1 (a row with one token in play is left as it is: 1). Rows
    with ``temperature <= 0`` keep it (greedy).

    Usage: ``logits / effective_temperature(logits, 1.0, delta=0.5)``
    """
    t, d, e = column(temperature, logits), column(delta, logits), column(exponent, logits)

    def dynamic() -> Array:
        probs = jax.nn.softmax(logits, axis=-1)
        h = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0), -1, keepdims=True)
        n = jnp.sum(jnp.isfinite(logits), axis=-1, keepdims=True)
        low = jnp.maximum(0.0, t - d)
        scaled = low + (t + d - low) * jnp.power(h / jnp.log(jnp.maximum(n, 2).astype(jnp.float32)), e)
        return jnp.where((d > 0) & (t > 0), jnp.where(n > 1, scaled, 1.0), t)

    return jax.lax.cond(jnp.any(d > 0), dynamic, lambda: t)  # no softmax over the row when no row is dynamic


TOP_K_CAP = 64


def apply_top_k(logits: Array, top_k: ArrayLike) -> Array:
    """Keep every token whose logit is at least the k-th largest; ``top_k <= 0`` disables.

    Usage: ``apply_top_k(logits, 50)``
    """
    vocab = logits.shape[-1]
    k = jnp.broadcast_to(jnp.asarray(top_k, jnp.int32), logits.shape[:-1])[..., None]
    k_index = jnp.clip(k, 1, vocab) - 1
    cap = min(TOP_K_CAP, vocab)
    kth = jax.lax.cond(  # the k-th largest without sorting the vocabulary when every k is small
        jnp.all(k_index < cap),
        lambda: jnp.take_along_axis(jax.lax.top_k(logits, cap)[0], jnp.minimum(k_index, cap - 1), axis=-1),
        lambda: jnp.take_along_axis(sort_descending(logits), k_index, axis=-1))
    return jnp.where((k <= 0) | (logits >= kth), logits, NEG_INF)


def apply_top_p(logits: Array, top_p: ArrayLike) -> Array:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p``.

    The token that crosses the threshold is kept, so at least one token always stays; tokens
    tied with the last kept logit are kept too. ``top_p >= 1`` disables the filter.

    Usage: ``apply_top_p(logits, 0.9)``
    """
    p = column(top_p, logits)
    sorted_desc, keep_sorted = _nucleus(logits, p)
    threshold = jnp.min(jnp.where(keep_sorted, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    return jnp.where((p >= 1.0) | (logits >= threshold), logits, NEG_INF)


def _nucleus(logits: Array, p: Array) -> tuple[Array, Array]:
    """The row sorted largest first, and which of its ranks top-p ``p`` keeps (the mass before a rank
    is below ``p``; rank 0 always)."""
    sorted_desc = sort_descending(logits)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    keep_sorted = (jnp.cumsum(probs, axis=-1) - probs < p).at[..., 0].set(True)
    return sorted_desc, keep_sorted


def _keep_first(logits: Array, count: Array, sorted_desc: Array | None = None) -> Array:
    """Exactly ``count [..., 1]`` tokens by rank (descending logit, ties to the lower id) kept, the
    rest removed: llama.cpp's cut, which keeps no more tokens than its rank allows. ``sorted_desc``:
    the row already sorted, when the caller has it."""
    vocab = logits.shape[-1]
    count = jnp.clip(count, 1, vocab)
    sorted_desc = sort_descending(logits) if sorted_desc is None else sorted_desc
    last = jnp.take_along_axis(sorted_desc, count - 1, axis=-1)  # the count-th largest
    above = logits > last
    tied = logits == last
    room = count - jnp.sum(above, axis=-1, keepdims=True)
    return jnp.where(above | (tied & (jnp.cumsum(tied, axis=-1) <= room)), logits, NEG_INF)


def apply_top_k_by_rank(logits: Array, top_k: ArrayLike) -> Array:
    """llama.cpp's top-k: exactly ``min(k, n)`` tokens (ties at the k-th to the lower ids); ``top_k
    <= 0`` disables. Usage: ``apply_top_k_by_rank(logits, 40)``"""
    k = jnp.broadcast_to(jnp.asarray(top_k, jnp.int32), logits.shape[:-1])[..., None]
    return jnp.where((k <= 0) | (k >= logits.shape[-1]), logits, _keep_first(logits, k))


def apply_top_p_by_rank(logits: Array, top_p: ArrayLike) -> Array:
    """llama.cpp's top-p: the first tokens by rank until their probability reaches ``top_p`` (the
    same count as :func:`apply_top_p`, but tokens tied with the last one are not all kept).
    Usage: ``apply_top_p_by_rank(logits, 0.9)``"""
    p = column(top_p, logits)
    sorted_desc, keep_sorted = _nucleus(logits, p)
    count = jnp.sum(keep_sorted, axis=-1, keepdims=True)
    return jnp.where(p >= 1.0, logits, _keep_first(logits, count, sorted_desc))


def apply_min_p(logits: Array, min_p: ArrayLike) -> Array:
    """Keep tokens whose probability is at least ``min_p`` times the top token's; 0 disables.

    Usage: ``apply_min_p(logits, 0.05)``
    """
    m = column(min_p, logits)
    top = jnp.max(logits, axis=-1, keepdims=True)
    relative = jnp.exp(logits - top)
    return jnp.where((m <= 0) | (relative >= m), logits, NEG_INF)


def filter_logits_fast(
    logits: ArrayLike,
    *,
    temperature: ArrayLike,
    top_k: ArrayLike = 0,
    top_p: ArrayLike = 1.0,
    min_p: ArrayLike = 0.0,
    cap: int = TOP_K_CAP,
    top_ids: Array | None = None,
) -> Array:
    """The four classic rules of :func:`filter_logits` (same result) without sorting the vocabulary each call.

    ``top_ids``: the ids of the ``cap`` (or more) largest raw logits ``[..., >= cap]``, in descending
    order, when the caller already has them (the decode loop shares one ``lax.top_k`` with the
    generation trace's window).

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
    p = column(top_p, raw)
    k_on = (k > 0) & (k < vocab)  # k >= vocab keeps every token, like k == 0
    small_k = k_on & (k <= cap)
    # the cap largest of the scaled row are those of the raw row (temperature keeps the order); gathered
    # from after_t, so that they compare equal to after_t's own values
    ids = jax.lax.top_k(raw, cap)[1] if top_ids is None else top_ids[..., :cap]
    top_vals = jnp.take_along_axis(after_t, ids, axis=-1)  # [..., cap], descending
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
        lambda: apply_min_p(apply_top_p(apply_top_k(after_t, top_k), top_p), min_p),
    )
