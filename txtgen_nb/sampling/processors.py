"""Processors, before the truncation rules: logit bias, penalties that read the ids seen so far
(repetition, presence and frequency, no-repeat n-grams, banned words, DRY) and ``min_new_tokens``.
``context [..., T]`` is right-aligned: newest token last, padding (negative ids) only on the left.

Usage: ``apply_repetition_penalty(logits, ids, 1.2)``
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from txtgen_nb.sampling.base import NEG_INF, Array, ArrayLike, column, context_ids, per_row


DRY_DEFAULT_BREAKERS = ("\n", ":", '"', "*")
"""llama.cpp's default DRY sequence breakers (strings; see :func:`breaker_ids`)."""


def breaker_ids(tokenizer, breakers: Sequence[str] = DRY_DEFAULT_BREAKERS) -> tuple[int, ...]:
    """Ids of the tokens whose text contains a breaker string (llama.cpp's single-token breakers).

    Usage: ``SamplingSettings(dry_multiplier=0.8, dry_sequence_breakers=breaker_ids(tok))``
    """
    vocab = tokenizer.get_vocab_size()
    texts = [tokenizer.decode([i], skip_special_tokens=False) for i in range(vocab)]
    return tuple(i for i, text in enumerate(texts) if any(b in text for b in breakers if b))


def token_counts(context: ArrayLike, vocab: int) -> Array:
    """How often each token id occurs in ``context [..., T]`` (negative ids ignored): ``[..., vocab]``.

    Usage: ``token_counts(ids, 2048)``
    """
    ids = jnp.asarray(context, jnp.int32)
    flat = ids.reshape(-1, ids.shape[-1])
    valid = (flat >= 0) & (flat < vocab)
    rows = jnp.arange(flat.shape[0])[:, None]
    counts = jnp.zeros((flat.shape[0], vocab + 1), jnp.float32).at[rows, jnp.where(valid, flat, vocab)].add(1.0)
    return counts[:, :vocab].reshape(*ids.shape[:-1], vocab)


def apply_repetition_penalty(logits: Array, context: ArrayLike, penalty: ArrayLike) -> Array:
    """Hugging Face ``RepetitionPenaltyLogitsProcessor`` (Keskar et al. 2019, CTRL): each token id in
    ``context`` (prompt and generated) has its logit divided by ``penalty`` if positive, multiplied
    if negative; 1 disables.

    Usage: ``apply_repetition_penalty(logits, ids, 1.2)``
    """
    seen = token_counts(context_ids(context, logits), logits.shape[-1]) > 0
    p = column(penalty, logits)
    return jnp.where(seen & (p != 1), jnp.where(logits < 0, logits * p, logits / p), logits)


def apply_presence_frequency(logits: Array, context: ArrayLike, presence: ArrayLike, frequency: ArrayLike) -> Array:
    """OpenAI's penalties: ``logit -= frequency * count + presence * (count > 0)`` over the generated
    ids in ``context``; 0 disables each.

    Usage: ``apply_presence_frequency(logits, generated_ids, presence=0.5, frequency=0.3)``
    """
    counts = token_counts(context_ids(context, logits), logits.shape[-1])
    return logits - column(frequency, logits) * counts - column(presence, logits) * (counts > 0)


def _suffix_matches(ids: Array) -> tuple[Array, Array, Array]:
    """For right-aligned ``ids [..., T]``: ``r`` (reversed, newest first), ``m`` where ``m[..., k-1]``
    is how many newest tokens also appear ending ``k`` tokens back (``r[n] == r[n+k]``), and the
    valid length ``[...]``. The token that followed that earlier occurrence is ``r[..., k-1]``.

    One pass per matched length for all shifts at once, stopping when no shift still matches."""
    size = ids.shape[-1]
    r = ids[..., ::-1]
    padded = jnp.concatenate([r, jnp.full_like(r, -1)], axis=-1)  # [..., 2T]

    def cond(carry):
        n, alive, _ = carry
        return (n < size) & jnp.any(alive)

    def body(carry):
        n, alive, m = carry
        shifted = jax.lax.dynamic_slice_in_dim(padded, n + 1, size, axis=-1)  # r[n + k] for k = 1..T
        alive = alive & (shifted == jax.lax.dynamic_slice_in_dim(r, n, 1, axis=-1)) & (shifted >= 0)
        return n + 1, alive, m + alive

    start = (jnp.int32(0), jnp.ones(r.shape, bool), jnp.zeros(r.shape, jnp.int32))
    _, _, m = jax.lax.while_loop(cond, body, start)
    return r, m, jnp.sum(ids >= 0, axis=-1)


def _scatter_max(tokens: Array, values: Array, vocab: int) -> Array:
    """Per row, the largest ``value`` for each token id (negative ids ignored); 0 where none."""
    flat_t = tokens.reshape(-1, tokens.shape[-1])
    flat_v = values.reshape(flat_t.shape)
    rows = jnp.arange(flat_t.shape[0])[:, None]
    col = jnp.where((flat_t >= 0) & (flat_t < vocab), flat_t, vocab)
    out = jnp.zeros((flat_t.shape[0], vocab + 1), flat_v.dtype).at[rows, col].max(flat_v)
    return out[:, :vocab].reshape(*tokens.shape[:-1], vocab)


def apply_no_repeat_ngram(logits: Array, context: ArrayLike, size: ArrayLike) -> Array:
    """Hugging Face ``NoRepeatNGramLogitsProcessor`` (from fairseq): ban every token that would
    complete an n-gram already in ``context``; 0 disables.

    Usage: ``apply_no_repeat_ngram(logits, ids, 3)``
    """
    r, m, length = _suffix_matches(context_ids(context, logits))
    n = per_row(size, logits, jnp.int32)[..., None]
    k = jnp.arange(1, r.shape[-1] + 1)
    complete = (n > 0) & (m >= n - 1) & (r >= 0) & (k + n - 2 < length[..., None])
    banned = _scatter_max(jnp.where(complete, r, -1), complete.astype(jnp.int32), logits.shape[-1]) > 0
    return jnp.where(banned, NEG_INF, logits)


DRY_FLOAT_MAX_LOG = 88.7228391  # llama.cpp clamps base ** exponent below float32's maximum


def apply_dry(logits: Array, context: ArrayLike, multiplier: ArrayLike, base: ArrayLike = 1.75,
              allowed_length: ArrayLike = 2, penalty_last_n: ArrayLike = -1,
              breakers: Sequence[int] = ()) -> Array:
    """llama.cpp's DRY ("Don't Repeat Yourself", from koboldcpp, by pi6am): a token that would extend
    a repeat of the context's newest tokens by more than ``allowed_length`` loses
    ``multiplier * base ** (repeat length - allowed_length)`` from its logit. Repeats stop at the
    newest sequence breaker (token ids; breaker tokens are never penalised); only the last
    ``penalty_last_n`` tokens are scanned (-1 = all). ``multiplier`` 0 or ``penalty_last_n`` 0 disables.

    Usage: ``apply_dry(logits, ids, 0.8, 1.75, 2, -1, breakers=breaker_ids(tok))``
    """
    r, m, length = _suffix_matches(context_ids(context, logits))
    vocab, size = logits.shape[-1], r.shape[-1]
    mult, base_ = per_row(multiplier, logits), per_row(base, logits)
    allowed, last_n = per_row(allowed_length, logits, jnp.int32), per_row(penalty_last_n, logits, jnp.int32)
    window = jnp.where(last_n < 0, length, jnp.minimum(last_n, length))  # [...]
    is_breaker = jnp.isin(r, jnp.asarray(breakers, jnp.int32)) if breakers else jnp.zeros(r.shape, bool)
    position = jnp.arange(size)
    newest_breaker = jnp.min(jnp.where(is_breaker & (position < window[..., None]), position, size), axis=-1)
    rep_limit = jnp.minimum(newest_breaker, window)
    on = (mult > 0) & (base_ >= 1) & (last_n != 0) & (window > allowed) & (rep_limit >= allowed)
    k = position + 1
    repeat = jnp.minimum(jnp.minimum(m, window[..., None] - k), rep_limit[..., None])
    counted = on[..., None] & (k < window[..., None]) & (repeat >= allowed[..., None])
    longest = _scatter_max(jnp.where(counted, r, -1), jnp.where(counted, repeat, 0), vocab)  # [..., V]
    max_exponent = jnp.where(base_ > 1.000001, jnp.floor(DRY_FLOAT_MAX_LOG / jnp.log(base_)), 0)[..., None]
    exponent = (longest - allowed[..., None]).astype(jnp.float32)
    exponent = jnp.where((max_exponent > 0) & (exponent > max_exponent), max_exponent, exponent)
    penalty = mult[..., None] * jnp.power(base_[..., None], exponent)
    breaker_token = jnp.isin(jnp.arange(vocab), jnp.asarray(breakers, jnp.int32)) if breakers else False
    return jnp.where((longest >= allowed[..., None]) & ~breaker_token, logits - penalty, logits)


def apply_min_new_tokens(logits: Array, stop_ids: ArrayLike | None, num_generated: ArrayLike,
                         min_new_tokens: ArrayLike) -> Array:
    """Hugging Face ``MinNewTokensLengthLogitsProcessor``: every stop id (EOS, end of turn; negative
    ids unused) removed while fewer than ``min_new_tokens`` tokens have been generated; 0 disables.

    Usage: ``apply_min_new_tokens(logits, stop_ids=[2], num_generated=3, min_new_tokens=10)``
    """
    if stop_ids is None:
        return logits  # no stop ids given: nothing could end the text
    stops = jnp.asarray(stop_ids, jnp.int32).reshape(-1)
    is_stop = jnp.any(jnp.arange(logits.shape[-1])[:, None] == stops[None, :], axis=-1)  # [V]
    early = per_row(num_generated, logits, jnp.int32) < per_row(min_new_tokens, logits, jnp.int32)
    return jnp.where(early[..., None] & is_stop, NEG_INF, logits)


def apply_logit_bias(logits: Array, bias: Sequence[tuple[int, float]]) -> Array:
    """OpenAI's / llama.cpp's ``logit_bias``: ``(token id, bias)`` pairs added to the raw logits (-100
    all but bans a token); ids beyond the vocabulary are ignored.

    Usage: ``apply_logit_bias(logits, [(42, -100.0)])``
    """
    if not bias:
        return logits
    ids = jnp.asarray([i for i, _ in bias], jnp.int32)
    add = jnp.zeros(logits.shape[-1], jnp.float32).at[ids].add(jnp.asarray([b for _, b in bias], jnp.float32),
                                                                 mode="drop")
    return logits + add


def apply_bad_words(logits: Array, context: ArrayLike, bad_words: Sequence[Sequence[int]]) -> Array:
    """Hugging Face ``NoBadWordsLogitsProcessor``: a banned sequence's last token is removed wherever the
    context ends with the rest of it (a one-token sequence always).

    Usage: ``apply_bad_words(logits, ids, [[7], [3, 9]])``
    """
    ids = context_ids(context, logits)
    banned = jnp.zeros(logits.shape, bool)
    for words in bad_words:
        *prefix, last = (int(w) for w in words)
        if last >= logits.shape[-1]:
            continue
        if prefix:
            size = len(prefix)
            ends = ids[..., -size:] if ids.shape[-1] >= size else None
            hit = jnp.zeros(logits.shape[:-1], bool) if ends is None else jnp.all(ends == jnp.asarray(prefix), -1)
        else:
            hit = jnp.ones(logits.shape[:-1], bool)
        banned = banned.at[..., last].set(banned[..., last] | hit)
    return jnp.where(banned, NEG_INF, logits)
