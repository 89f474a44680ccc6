"""Truncation rules beyond the classic four: top-nσ, typical, epsilon, eta, XTC, Mirostat v2 and adaptive-p.

Usage: ``apply_typical(logits, 0.9)``
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from txtgen_nb.sampling.base import NEG_INF, Array, ArrayLike, column, entropy, per_row


def apply_top_n_sigma(logits: Array, n: ArrayLike) -> Array:
    """llama.cpp's top-nσ (Tang et al. 2024): keep logits at least ``max - n * std`` (mean and std
    over the tokens still in play); 0 disables.

    Usage: ``apply_top_n_sigma(logits, 1.0)``
    """
    finite = jnp.isfinite(logits)
    count = jnp.sum(finite, axis=-1, keepdims=True)
    mean = jnp.sum(jnp.where(finite, logits, 0.0), axis=-1, keepdims=True) / jnp.maximum(count, 1)
    std = jnp.sqrt(jnp.sum(jnp.where(finite, (logits - mean) ** 2, 0.0), axis=-1, keepdims=True)
                   / jnp.maximum(count, 1))
    threshold = jnp.max(logits, axis=-1, keepdims=True) - column(n, logits) * std
    off = (column(n, logits) <= 0) | (count <= 1)
    return jnp.where(off | (logits >= threshold), logits, NEG_INF)


def apply_typical(logits: Array, mass: ArrayLike) -> Array:
    """Hugging Face ``TypicalLogitsWarper`` (Meister et al. 2022, locally typical sampling): keep the
    tokens whose surprise is closest to the entropy until they hold ``mass``; 1 disables.

    Usage: ``apply_typical(logits, 0.9)``
    """
    normalized = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(normalized)
    ent = -jnp.nansum(normalized * p, axis=-1, keepdims=True)
    shifted = jnp.abs(-normalized - ent)
    mass_ = column(mass, logits)
    threshold = _smallest_reaching(shifted, p, mass_)
    return jnp.where((mass_ >= 1) | ~(shifted > threshold), logits, NEG_INF)


def _smallest_reaching(scores: Array, p: Array, mass: Array) -> Array:
    """``[..., 1]``: the smallest of the non-negative ``scores`` whose tokens at or below it hold
    ``mass`` of ``p`` (the largest score when none does). The threshold Hugging Face reads off
    ``cumsum`` over ``argsort(scores)``, found without sorting: a binary search over the scores'
    int32 bit patterns (ordered like the floats), 31 masked sums over the row (about 10x faster than
    XLA:CPU's argsort)."""
    bits = jax.lax.bitcast_convert_type(scores, jnp.int32)
    low = jnp.zeros(scores.shape[:-1] + (1,), jnp.int32)
    high = jnp.max(bits, axis=-1, keepdims=True)

    def halve(_, bounds):
        low, high = bounds
        mid = low + (high - low) // 2
        reached = jnp.sum(jnp.where(bits <= mid, p, 0.0), axis=-1, keepdims=True) >= mass
        return jnp.where(reached, low, mid + 1), jnp.where(reached, mid, high)

    _, high = jax.lax.fori_loop(0, 31, halve, (low, high))
    return jax.lax.bitcast_convert_type(high, jnp.float32)


def _cutoff(logits: Array, cutoff: Array) -> Array:
    """Remove tokens with probability below ``cutoff [..., 1]``, always keeping the top one (HF's rule)."""
    remove = (jax.nn.softmax(logits, axis=-1) < cutoff) & (logits < jnp.max(logits, axis=-1, keepdims=True))
    return jnp.where(remove, NEG_INF, logits)


def apply_epsilon(logits: Array, epsilon: ArrayLike) -> Array:
    """Hugging Face ``EpsilonLogitsWarper`` (Hewitt et al. 2022, truncation sampling): drop tokens with
    probability below ``epsilon``; 0 disables.

    Usage: ``apply_epsilon(logits, 3e-4)``
    """
    eps = column(epsilon, logits)
    return jnp.where(eps > 0, _cutoff(logits, eps), logits)


def apply_eta(logits: Array, epsilon: ArrayLike) -> Array:
    """Hugging Face ``EtaLogitsWarper`` (Hewitt et al. 2022): drop tokens with probability below
    ``min(epsilon, sqrt(epsilon) * exp(-entropy))``; 0 disables.

    Usage: ``apply_eta(logits, 1e-3)``
    """
    eps = column(epsilon, logits)
    eta = jnp.minimum(eps, jnp.sqrt(eps) * jnp.exp(-entropy(logits)[..., None]))
    return jnp.where(eps > 0, _cutoff(logits, eta), logits)


def apply_xtc(logits: Array, threshold: ArrayLike, probability: ArrayLike, coin: ArrayLike | None = None,
              by_rank: bool = False) -> Array:
    """llama.cpp's XTC ("exclude top choices", by p-e-w): when it fires (``coin <= probability``; no
    coin = fires), remove every token with probability at least ``threshold`` except the least
    likely of them, if there are two or more. ``probability`` 0 or ``threshold > 0.5`` disables.
    Ties with the least likely top choice are all kept, unless ``by_rank`` (llama.cpp: only the last
    of them by rank, ties ranked by id).

    Usage: ``apply_xtc(logits, 0.1, 0.5, coin=jax.random.uniform(key))``
    """
    t, prob = column(threshold, logits), column(probability, logits)
    fires = (prob > 0) & (t <= 0.5)
    if coin is not None:
        fires &= column(coin, logits) <= prob
    probs = jax.nn.softmax(logits, axis=-1)
    top = (probs >= t) & jnp.isfinite(logits)  # removed tokens are not candidates, even at threshold 0
    least = jnp.min(jnp.where(top, probs, jnp.inf), axis=-1, keepdims=True)
    enough = jnp.sum(top, axis=-1, keepdims=True) >= 2
    removed = top & (probs > least)
    if by_rank:  # llama.cpp: of the tokens tied with the least likely top choice, only the last by rank stays
        tied = top & (probs == least)
        removed |= tied & (jnp.cumsum(tied, axis=-1) < jnp.sum(tied, axis=-1, keepdims=True))
    return jnp.where(fires & enough & removed, NEG_INF, logits)


def mirostat_initial_mu(tau: ArrayLike) -> Array:
    """Mirostat's starting μ, ``2 τ`` (llama.cpp). Usage: ``mu = mirostat_initial_mu(5.0)``"""
    return 2.0 * jnp.asarray(tau, jnp.float32)


def apply_mirostat(logits: Array, tau: ArrayLike, mu: ArrayLike | None = None) -> Array:
    """llama.cpp's Mirostat v2 (Basu et al. 2021) truncation: keep the tokens whose surprise
    ``-log2 p`` is at most ``mu`` (at least the top one); ``tau`` 0 disables. ``mu`` defaults to its
    start, ``2 tau``; update it after each draw with :func:`mirostat_update`.

    Usage: ``apply_mirostat(logits, tau=5.0, mu=mu)``
    """
    tau_ = column(tau, logits)
    mu_ = 2.0 * tau_ if mu is None else column(mu, logits)
    surprise = -jax.nn.log_softmax(logits, axis=-1) / jnp.log(2.0)
    is_max = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=bool)
    return jnp.where((tau_ <= 0) | (surprise <= mu_) | is_max, logits, NEG_INF)


def mirostat_update(mu: ArrayLike, final_logits: Array, token: ArrayLike, tau: ArrayLike,
                    eta: ArrayLike) -> tuple[Array, Array]:
    """``(new mu, observed surprise)`` after drawing ``token`` from ``final_logits``:
    ``mu - eta * (surprise - tau)`` where Mirostat is on (``tau > 0``), else ``mu`` unchanged.

    Usage: ``mu, surprise = mirostat_update(mu, filtered, token, tau=5.0, eta=0.1)``
    """
    logp = jax.nn.log_softmax(final_logits, axis=-1)
    surprise = -jnp.take_along_axis(logp, jnp.asarray(token, jnp.int32)[..., None], axis=-1)[..., 0] / jnp.log(2.0)
    tau_, mu_ = per_row(tau, final_logits), per_row(mu, final_logits)
    return jnp.where(tau_ > 0, mu_ - per_row(eta, final_logits) * (surprise - tau_), mu_), surprise


ADAPTIVE_WIDTH, ADAPTIVE_PEAK, ADAPTIVE_SHARPNESS = 0.3, 5.0, 10.0  # llama.cpp's constants (not settings)
ADAPTIVE_DECAY_MAX = 0.99  # llama.cpp clamps the decay to [0, 0.99]


def adaptive_initial_state(target: ArrayLike, decay: ArrayLike) -> Array:
    """Adaptive-p's starting history ``[..., 2]``: ``(weighted sum, total weight)`` primed as if the
    target had been met all along, ``(target / (1 - decay), 1 / (1 - decay))`` (llama.cpp).

    Usage: ``state = adaptive_initial_state(0.5, 0.9)``
    """
    target = jnp.asarray(target, jnp.float32)
    decay = jnp.clip(jnp.asarray(decay, jnp.float32), 0.0, ADAPTIVE_DECAY_MAX)
    return jnp.stack(jnp.broadcast_arrays(target / (1 - decay), 1 / (1 - decay)), axis=-1)


def apply_adaptive_p(logits: Array, target: ArrayLike, state: ArrayLike | None = None,
                     decay: ArrayLike = 0.9) -> Array:
    """llama.cpp's adaptive-p (PR #17927): new logits that favour tokens whose probability is near an
    adapted target, ``5 - 10 d² / (1 + d)`` with ``d = |p - adapted| / 0.3``, where ``adapted = 2 target -
    (mean probability of the tokens drawn so far)`` (an exponential average; ``state``: its ``(weighted
    sum, total weight)``, default the start, see :func:`adaptive_initial_state`); removed tokens stay
    removed; ``target`` 0 disables (llama.cpp: a negative target). Update the state after each draw with
    :func:`adaptive_update`.

    Usage: ``apply_adaptive_p(logits, target=0.5, state=state)``
    """
    target_ = column(target, logits)
    state = adaptive_initial_state(target, decay) if state is None else jnp.asarray(state, jnp.float32)
    weighted, total = column(state[..., 0], logits), column(state[..., 1], logits)
    goal = jnp.clip(target_, 0.0, 1.0)
    adapted = jnp.clip(jnp.where(total == 0, goal, 2 * goal - weighted / jnp.where(total == 0, 1.0, total)), 0.0, 1.0)
    distance = jnp.abs(jax.nn.softmax(logits, axis=-1) - adapted) / ADAPTIVE_WIDTH
    shaped = ADAPTIVE_PEAK - ADAPTIVE_SHARPNESS * distance**2 / (1 + distance)
    return jnp.where((target_ > 0) & jnp.isfinite(logits), shaped, logits)


def adaptive_update(state: ArrayLike, before: Array, token: ArrayLike, target: ArrayLike,
                    decay: ArrayLike) -> Array:
    """Adaptive-p's history after drawing ``token``: ``(p + decay · sum, 1 + decay · weight)`` with ``p``
    the token's probability in ``before`` (adaptive-p's input, not its reshaped output), where it is on.

    Usage: ``state = adaptive_update(state, before, token, target=0.5, decay=0.9)``
    """
    state = jnp.asarray(state, jnp.float32)
    p = jnp.take_along_axis(jax.nn.softmax(before, axis=-1), jnp.asarray(token, jnp.int32)[..., None], axis=-1)[..., 0]
    d = jnp.clip(per_row(decay, before), 0.0, ADAPTIVE_DECAY_MAX)
    new = jnp.stack([p + d * state[..., 0], 1 + d * state[..., 1]], axis=-1)
    return jnp.where((per_row(target, before) > 0)[..., None], new, state)
