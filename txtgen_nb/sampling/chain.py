"""The sampling chain: each rule of :data:`~txtgen_nb.sampling.RULES` in the settings' order, every
intermediate result kept (``Stages``), and a draw from the result.

Usage: ``filter_stages(logits, SamplingSettings(0.8, 50, 0.9)).top_k``
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from txtgen_nb import rng
from txtgen_nb.sampling.base import NEG_INF, Array, ArrayLike, context_ids, per_row
from txtgen_nb.sampling.classic import apply_temperature, effective_temperature, filter_logits_fast
from txtgen_nb.sampling.records import RULE, ChainInputs, Stages, chain, stage_before
from txtgen_nb.sampling.settings import SamplingSettings

VOCAB_BUCKET_MIN = 16


def _inputs(x: Array, s: SamplingSettings, context: Array | None, num_generated: Array | None,
            mu: Array | None, coin: Array | None, stop_ids: Array | None, adaptive: Array | None) -> ChainInputs:
    ids = generated = None
    steps = per_row(0 if num_generated is None else num_generated, x, jnp.int32)
    if context is not None:
        ids = generated = context_ids(context, x)  # by default every context token counts as generated
        if num_generated is not None:
            generated = jnp.where(jnp.arange(ids.shape[-1]) >= ids.shape[-1] - steps[..., None], ids, -1)
    return ChainInputs(ids, generated, None, mu, coin, by_rank=s.order != "hf",  # llama.cpp's and free orders
                       stop_ids=stop_ids, steps=steps, adaptive=adaptive)


def _classic_fused(x: Array, s: SamplingSettings, _inputs: ChainInputs) -> Array:
    """Temperature (dynamic too) → min-p in one sort-free step (the decode loop's way; greedy keeps
    the same argmax)."""
    t = effective_temperature(x, s.temperature, s.dynatemp_range, s.dynatemp_exponent)[..., 0]
    return filter_logits_fast(x, temperature=t, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p)


@functools.partial(jax.jit, static_argnames="fused")
def _run_stages(logits: Array, s: SamplingSettings, context: Array | None, num_generated: Array | None,
                mu: Array | None, coin: Array | None, stop_ids: Array | None, adaptive: Array | None = None,
                fused: bool = False) -> Stages:
    x = jnp.asarray(logits, jnp.float32)
    inputs = _inputs(x, s, context, num_generated, mu, coin, stop_ids, adaptive)
    fused = fused and s.order == "hf"  # the classic four are adjacent in Hugging Face's order only
    out = {"raw": x}
    for name in chain(s.order):
        rule = RULE[name]
        if rule.context and inputs.ids is None:
            out[name] = x  # no context: nothing to penalise
            continue
        if not rule.processor and inputs.processed is None:
            inputs = inputs._replace(processed=x)
        if fused and rule.classic:
            run = _classic_fused if name == "temperature" else (lambda v, _s, _c: v)
            x = out[name] = run(x, s, inputs)
            continue
        # a rule no row turns on is skipped (one lax.cond); off, each returns its input anyway
        x = out[name] = jax.lax.cond(rule.any_on(s), lambda v: rule.run(v, s, inputs), lambda v: v, x)
    for previous, name in zip(Stages._fields, Stages._fields[1:]):  # a stage a free order leaves out (off)
        out.setdefault(name, out[previous])  # repeats the one before it in Hugging Face's order
    return Stages(**out)


def before_cuts(stages: Stages, s: SamplingSettings) -> Array:
    """The distribution the settings' cuts start from, at their temperature: what the views call "before
    filtering". The temperature stage itself where it comes before every cut that is on (Hugging Face's
    order, usually); otherwise (llama.cpp's order, temperature last; top-nσ on) the logits before the first
    cut that is on, divided by the temperature, so that no cut shows in it.

    Usage: ``probabilities(before_cuts(filter_stages(logits, s), s))``
    """
    names = chain(s.order)
    cuts = [n for n in names if not RULE[n].processor and n != "temperature" and RULE[n].is_on(s)]
    if not cuts or ("temperature" in names and names.index("temperature") < names.index(cuts[0])):
        return stages.temperature
    return apply_temperature(getattr(stages, stage_before(cuts[0], s.order)), s.temperature)


def _settings_from(settings: SamplingSettings | None, fields: dict[str, Any]) -> SamplingSettings:
    if settings is None:
        return SamplingSettings.off(**fields)
    if fields:
        raise ValueError(f"give settings or keyword settings, not both (got {', '.join(sorted(fields))})")
    return settings


def filter_stages(
    logits: ArrayLike,
    settings: SamplingSettings | None = None,
    context: ArrayLike | None = None,
    *,
    num_generated: ArrayLike | None = None,
    mu: ArrayLike | None = None,
    xtc_coin: ArrayLike | None = None,
    stop_ids: ArrayLike | None = None,
    adaptive: ArrayLike | None = None,
    fused: bool = False,
    **fields: Any,
) -> Stages:
    """Run the sampling chain and keep every intermediate result (for visualisation).

    ``context [..., T]``: right-aligned ids seen so far (needed by the penalties, no-repeat n-grams,
    banned words and DRY; without it they are skipped); its last ``num_generated`` entries are the
    generated ones (presence and frequency penalties; default: all; ``min_new_tokens`` counts
    ``num_generated``, default 0). ``mu``: Mirostat's current μ (default ``2 τ``). ``xtc_coin``: a
    uniform draw per row deciding whether XTC fires (default: it fires). ``adaptive [..., 2]``:
    adaptive-p's history (default its start). ``stop_ids [S]``: the ids
that end a row (``min_new_tokens`` removes them; -1 unused). ``fused``: in the Hugging
    Face order, compute temperature → min-p in one sort-free step (the decode loop's way: the same
    final result, but ``.temperature`` … ``.min_p`` are then not separate). Instead of ``settings``,
    keyword fields of :class:`SamplingSettings` may be given; unnamed rules are then off.

    Usage: ``stages = filter_stages(logits, SamplingSettings(0.8, 50, 0.9))``
    """
    s = _settings_from(settings, fields)
    logits = jnp.asarray(logits, jnp.float32)
    vocab = logits.shape[-1]
    if isinstance(logits, jax.core.Tracer):
        return _run_stages(logits, s, context, num_generated, mu, xtc_coin, stop_ids, adaptive, fused)
    # pad the vocabulary with removed tokens to a power of two: few shapes, few compiles
    bucket = max(VOCAB_BUCKET_MIN, 1 << (vocab - 1).bit_length())
    padded = jnp.pad(logits, [(0, 0)] * (logits.ndim - 1) + [(0, bucket - vocab)], constant_values=NEG_INF)
    stages = _run_stages(padded, s, context, num_generated, mu, xtc_coin, stop_ids, adaptive, fused)
    return Stages(*(stage[..., :vocab] for stage in stages))


def filter_logits(
    logits: ArrayLike,
    settings: SamplingSettings | None = None,
    context: ArrayLike | None = None,
    **kwargs: Any,
) -> Array:
    """Logits after the whole chain (:func:`filter_stages`); removed tokens are ``-inf``.

    ``temperature=0`` is greedy (one token stays: see the package docstring for each order).

    Usage: ``filter_logits(logits, SamplingSettings(0.8, 50), context=ids)`` or
    ``filter_logits(logits, temperature=0.8, top_k=50)``
    """
    return filter_stages(logits, settings, context, **kwargs).final


def sample_token(
    key: Array,
    logits: ArrayLike,
    settings: SamplingSettings | None = None,
    context: ArrayLike | None = None,
    *,
    num_generated: ArrayLike | None = None,
    mu: ArrayLike | None = None,
    stop_ids: ArrayLike | None = None,
    **fields: Any,
) -> Array:
    """Draw token ids of shape ``logits.shape[:-1]`` from the filtered distribution (XTC's coin is
    drawn from ``fold_in(key, 1)``).

    Usage: ``sample_token(jax.random.key(42), logits, SamplingSettings(0.8, 50), context=ids)``
    """
    logits = jnp.asarray(logits, jnp.float32)
    coin = rng.coin_of(key, logits.shape[:-1])
    filtered = filter_logits(logits, settings, context, num_generated=num_generated, mu=mu, xtc_coin=coin,
                             stop_ids=stop_ids, **fields)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
