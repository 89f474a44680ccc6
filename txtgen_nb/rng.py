"""The decode loop's random-number rule, in one place: a row's key from its seed, one key per step,
the token drawn with it and XTC's coin drawn beside it.

Every draw of a row depends only on its seed and the step, never on the batch it ran in or on the
other rows, so a row replays alone (``Trace.mirostat``, XTC's coins, the tests' redraws) and a
setting compares with another on the same draws (common random numbers).

Usage::

    key = row_key(jnp.asarray(seed_words(42)))
    token = draw(key, step, filtered_logits)          # the token the loop draws at ``step``
    u = coin(key, step)                               # XTC's uniform draw at that step
"""

from __future__ import annotations

import jax
import numpy as np


def seed_words(seed: int) -> np.ndarray:
    """Any Python int as two uint32 words (low, high of ``seed mod 2**64``)."""
    value = int(seed) % (1 << 64)
    return np.array([value & 0xFFFFFFFF, value >> 32], dtype=np.uint32)


def row_key(words: jax.Array) -> jax.Array:
    """A row's PRNG key from its :func:`seed_words` ``[2]`` (vmap it for a batch)."""
    return jax.random.fold_in(jax.random.key(words[0]), words[1])


def step_key(key: jax.Array, step: jax.Array | int) -> jax.Array:
    """The key of one step of a row: every draw at that step comes from it."""
    return jax.random.fold_in(key, step)


def draw(key: jax.Array, step: jax.Array | int, logits: jax.Array) -> jax.Array:
    """The token id drawn at ``step`` from filtered ``logits [V]`` (``-inf`` where removed)."""
    return jax.random.categorical(step_key(key, step), logits, axis=-1)


def coin_of(key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
    """XTC's uniform draw (of ``shape``) beside the token drawn with ``key`` (a step's key)."""
    return jax.random.uniform(jax.random.fold_in(key, 1), shape)


def coin(key: jax.Array, step: jax.Array | int) -> jax.Array:
    """XTC's uniform draw at ``step`` of the row with ``key``."""
    return coin_of(step_key(key, step))
