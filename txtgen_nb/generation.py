"""Batched text generation: prefill and KV-cache decoding in one compiled XLA program.

The sampling settings (a :class:`~txtgen_nb.sampling.SamplingSettings` pytree), the seeds and the
number of new tokens are traced arguments, so changing them never recompiles. Prompts are left-padded to a
few length buckets and batches to powers of two, so new prompts rarely compile either. Each row
stops at end-of-sequence, at ``max_new_tokens`` or at the model's context, whichever is first;
``stop`` strings cut the text after generation.

Usage::

    result = generate(model, params, tok, ["Once upon a time"], max_new_tokens=50, seed=0)
    print(result.texts[0])
    result = generate(model, params, tok, "Hello", num_samples=4, trace=True)
    result.trace.top_ids.shape     # [4, steps, 256]: the largest raw logits' ids before each chosen token
    result.trace.step_logits(0, 2) # [vocab]: exact raw logits of row 0, step 2 (recomputed, cached)
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb import sampling
from txtgen_nb.config import ModelConfig
from txtgen_nb.model import Transformer, as_decoder, init_cache
from txtgen_nb.sampling import SamplingSettings
from txtgen_nb.tokenizer import decode, encode_prompt, special_ids
from txtgen_nb.trace import TRACE_TOP_K, Trace, TraceLayout, record_step, trace_buffers

PROMPT_BUCKET_MIN = 16
DECODE_BUCKET_MIN = 128  # the decode loop (and the cache after the prompt) is at least this long, if the context allows


def validate_settings(temperature: float, top_k: int, top_p: float, min_p: float = 0.0) -> None:
    """Raise ``ValueError`` naming the first bad setting. Usage: ``validate_settings(0.8, 50, 1.0)``"""
    SamplingSettings(temperature, top_k, top_p, min_p)


RECOMMENDED = {
    "conservative": SamplingSettings(temperature=0.3, top_k=30, top_p=0.8),
    "balanced": SamplingSettings(temperature=0.8, top_k=50, top_p=0.9),
    "creative": SamplingSettings(temperature=1.2, top_k=60, top_p=0.95),
    "experimental": SamplingSettings(temperature=1.5, top_k=0, top_p=1.0),
}
"""The user guide's recommended combinations (facts and code; general; stories; maximum diversity)."""


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """Texts (prompt plus continuation), the new token ids per row and the optional trace."""

    texts: list[str]
    continuations: list[str]
    new_token_ids: list[list[int]]
    prompt_token_counts: list[int]
    stop_reasons: list[str]  # "eos", "max_new_tokens", "context" or "stop"
    trace: Trace | None = None


def _bucket(n: int, limit: int, minimum: int = 1) -> int:
    """Smallest power of two >= ``n`` (at least ``minimum``), capped at ``limit``."""
    size = max(minimum, 1 << max(0, (n - 1).bit_length()))
    return min(size, max(limit, n))


def decode_steps(new_tokens: int, max_len: int) -> int:
    """Length of the decode loop, and cache slots after the prompt, for ``new_tokens``: a power of two,
    at least ``DECODE_BUCKET_MIN``, capped at the context. A cache sized for the whole context makes
    every step attend to (and XLA:CPU copy) all of it; buckets keep a new ``max_new_tokens`` from
    recompiling except past a bucket. Usage: ``decode_steps(32, max_len=1024)  # 128``"""
    return _bucket(min(max(new_tokens, 1), max_len), limit=max_len, minimum=DECODE_BUCKET_MIN)


def seed_words(seed: int) -> np.ndarray:
    """Any Python int as two uint32 words (low, high of ``seed mod 2**64``)."""
    value = int(seed) % (1 << 64)
    return np.array([value & 0xFFFFFFFF, value >> 32], dtype=np.uint32)


def _row_key(words: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.key(words[0]), words[1])


@functools.partial(jax.jit, static_argnames=("graphdef", "max_steps", "trace_layout"))
def _generate_compiled(graphdef, params, prompt, pad, limit, seeds, settings, eos_id, *, max_steps: int,
                       trace_layout: TraceLayout | None = None):
    """prompt [B, P] left-padded by pad [B]; limit [B] new tokens per row (<= trace_layout.steps);
    seeds [B, 2] uint32; settings: SamplingSettings of [B] arrays. Returns tokens [B, max_steps],
    lengths [B] and the trace buffers or None."""
    model: Transformer = nnx.merge(graphdef, params)
    batch, prompt_len = prompt.shape
    cache_size = prompt_len + max_steps
    slots = jnp.arange(cache_size)
    valid_from = pad[:, None, None]  # [B, 1, 1]: first real slot of each row

    query_slots = jnp.arange(prompt_len)[None, :, None]
    mask = (slots[None, None] <= query_slots) & (slots[None, None] >= valid_from)
    positions = jnp.maximum(jnp.arange(prompt_len)[None] - pad[:, None], 0)
    logits, cache = model(prompt, positions=positions, mask=mask, cache=init_cache(model.config, batch, cache_size),
                          cache_index=0)
    keys = jax.vmap(_row_key)(seeds)

    history_prompt = jnp.where(jnp.arange(prompt_len)[None] >= pad[:, None], prompt, -1)  # [B, P], -1 = padding
    extras = sampling.uses_extras(settings)  # once per call: any row beyond temperature/top-k/top-p/min-p

    def categorical(step, filtered):
        return jax.vmap(lambda key, row: jax.random.categorical(jax.random.fold_in(key, step), row, axis=-1))(
            keys, filtered).astype(jnp.int32)

    def draw_classic(step, logits, tokens, mu):  # mu is None: the classic loop carries none
        # filter the whole batch at once (no vmap: filter_logits_fast skips the vocabulary sort
        # with one lax.cond for the batch), then one categorical draw per row with its own key
        filtered = sampling.filter_logits_fast(logits, temperature=settings.temperature, top_k=settings.top_k,
                                               top_p=settings.top_p, min_p=settings.min_p)
        return categorical(step, filtered), mu

    def draw_full(step, logits, tokens, mu):
        # the context right-aligned: [-1 ..., prompt, generated so far]
        generated = jnp.where(jnp.arange(max_steps)[None] < step, tokens, -1)  # [B, S]
        context = jnp.roll(jnp.concatenate([history_prompt, generated], axis=1), max_steps - step, axis=1)
        coins = jax.vmap(lambda key: jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, step), 1)))(keys)
        filtered = sampling.filter_logits(logits, settings, context, num_generated=step, mu=mu, xtc_coin=coins,
                                          fused=True)
        token = categorical(step, filtered)
        mu, _ = sampling.mirostat_update(mu, filtered, token, settings.mirostat_tau, settings.mirostat_eta)
        return token, mu

    trace = None if trace_layout is None else trace_buffers(trace_layout, batch, logits.shape[-1])
    state = dict(step=jnp.int32(0), cache=cache, logits=logits[:, -1], tokens=jnp.zeros((batch, max_steps), jnp.int32),
                 lengths=jnp.zeros((batch,), jnp.int32), done=limit <= 0, trace=trace)

    def cond(s):
        return (s["step"] < max_steps) & ~jnp.all(s["done"])

    def body(s, draw):
        step = s["step"]
        token, mu = draw(step, s["logits"], s["tokens"], s.get("mu"))
        token = jnp.where(s["done"], 0, token)
        lengths = s["lengths"] + (~s["done"]).astype(jnp.int32)
        done = s["done"] | (token == eos_id) | (lengths >= limit)
        tokens = s["tokens"].at[:, step].set(token)
        trace = s["trace"] if trace_layout is None else record_step(s["trace"], step, s["logits"])
        slot = prompt_len + step
        step_mask = (slots[None, None] <= slot) & (slots[None, None] >= valid_from)
        position = (prompt_len - pad + step)[:, None]
        new_logits, cache = model(token[:, None], positions=jnp.minimum(position, model.config.max_len - 1),
                                  mask=step_mask, cache=s["cache"], cache_index=slot)
        return dict(step=step + 1, cache=cache, logits=new_logits[:, -1], tokens=tokens, lengths=lengths, done=done,
                    trace=trace, **({} if mu is None else {"mu": mu}))

    def decode(draw, initial):
        final = jax.lax.while_loop(cond, functools.partial(body, draw=draw), initial)
        return final["tokens"], final["lengths"], final["trace"]

    # two loops, one chosen once per call: with every extra rule off, the classic one (no per-step cost;
    # only the full one carries Mirostat's mu per row)
    full_state = dict(state, mu=sampling.mirostat_initial_mu(settings.mirostat_tau))
    return jax.lax.cond(extras, lambda: decode(draw_full, full_state), lambda: decode(draw_classic, state))


def default_trace_k(vocab_size: int) -> int:
    """The window a compact trace keeps: 256 candidates, fewer for a small vocabulary (a 2,048-token
    vocabulary keeps 64, so that ``lax.top_k`` stays a small part of a decode step)."""
    return min(TRACE_TOP_K, max(64, vocab_size // 32))


def _trace_layout(trace: bool | str, trace_k: int | None, steps: int, config: ModelConfig) -> TraceLayout:
    """Trace buffers for ``steps`` new tokens, bucketed to a power of two so a new length compiles at
    most once per bucket."""
    k = min(default_trace_k(config.vocab_size) if trace_k is None else trace_k, config.vocab_size)
    return TraceLayout(steps=_bucket(max(steps, 1), limit=config.max_len), top_k=k,
                       full=trace == "full" or k == config.vocab_size)


def _is_per_row(value) -> bool:
    """Whether a setting or seed was given as one value per row."""
    return isinstance(value, (list, tuple, np.ndarray))


def _as_rows(value, batch: int, name: str) -> list:
    if _is_per_row(value):
        if len(value) != batch:
            raise ValueError(f"{name} has {len(value)} values for {batch} rows")
        return list(value)
    return [value] * batch


def _stop_strings(stop: str | Sequence[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if not all(isinstance(x, str) and x for x in stops):
        raise ValueError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    return stops


def _first_stop(text: str, stops: list[str]) -> int | None:
    """Where the first stop string to appear in ``text`` starts (``None``: none appears)."""
    found = [i for i in (text.find(x) for x in stops) if i >= 0]
    return min(found) if found else None


def _ids_through_stop(tokenizer: Tokenizer, ids: list[int], stops: list[str]) -> list[int]:
    """The shortest prefix of ``ids`` whose text contains a stop string (the row ended there)."""
    for n in range(1, len(ids) + 1):
        if _first_stop(decode(tokenizer, ids[:n]), stops) is not None:
            return ids[:n]
    return ids


def generate(
    model: Transformer,
    params: nnx.State,
    tokenizer: Tokenizer,
    prompts: str | Sequence[str],
    *,
    max_new_tokens: int = 100,
    temperature: float | Sequence[float] = 0.8,
    top_k: int | Sequence[int] = 50,
    top_p: float | Sequence[float] = 1.0,
    min_p: float | Sequence[float] = 0.0,
    seed: int | Sequence[int] = 42,
    num_samples: int = 1,
    trace: bool | str = False,
    trace_k: int | None = None,
    settings: SamplingSettings | Sequence[SamplingSettings] | None = None,
    stop: str | Sequence[str] | None = None,
) -> GenerationResult:
    """Generate continuations for one or more prompts in one compiled call.

    ``num_samples`` repeats each prompt with seeds ``seed, seed+1, ...``. Settings and seeds may
    also be given per row (a sequence as long as the batch; one prompt is repeated to match), or as
    ``settings`` (one :class:`SamplingSettings` or one per row) in place of the four separate
    arguments. Row ``b`` depends only on its own prompt, settings and seed, so a batch of one equals
    a single call. ``stop``: strings that end a row's text (cut before the first one to appear;
    stop reason ``"stop"``).

    ``trace=True`` keeps a compact :class:`Trace` per step (the ``trace_k`` largest raw logits, by
    default :func:`default_trace_k`, with their ids, the whole row's log-sum-exp and entropy; full
    logits are recomputed on demand);
    ``trace="full"`` (or ``trace_k`` >= vocabulary) also keeps every raw logit.

    Usage: ``generate(model, params, tok, "Once upon a time", num_samples=4, trace=True)``
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if not (trace is True or trace is False or trace == "full"):
        raise ValueError(f"trace must be True, False or 'full', got {trace!r}")
    if trace_k is not None and (isinstance(trace_k, bool) or not isinstance(trace_k, (int, np.integer)) or trace_k < 1):
        raise ValueError(f"trace_k must be an integer >= 1, got {trace_k!r}")
    if not isinstance(model, Transformer):  # any NNX module: its forward pass recomputed at each step
        context = max(len(encode_prompt(tokenizer, p)) for p in prompts) + max_new_tokens
        model, params = as_decoder(model, params, context)
    per_row = [len(v) for v in (temperature, top_k, top_p, min_p, seed, settings) if _is_per_row(v)]
    if len(prompts) == 1 and num_samples == 1 and per_row:
        prompts = prompts * max(per_row)  # one prompt, one row per given setting or seed
    rows_prompts = [p for p in prompts for _ in range(num_samples)]
    if _is_per_row(seed):
        seeds = _as_rows(seed, len(rows_prompts), "seed")
    else:
        seeds = [int(seed) + i for _ in prompts for i in range(num_samples)]
    batch = len(rows_prompts)
    if settings is not None:
        settings = _as_rows(settings, batch, "settings")
        if not all(isinstance(row, SamplingSettings) for row in settings):
            raise ValueError("settings must be SamplingSettings objects")
    else:
        settings = [SamplingSettings(t, k, p, m) for t, k, p, m in zip(
            _as_rows(temperature, batch, "temperature"), _as_rows(top_k, batch, "top_k"),
            _as_rows(top_p, batch, "top_p"), _as_rows(min_p, batch, "min_p"))]
    stops = _stop_strings(stop)

    config = model.config
    max_len = config.max_len
    prompt_ids = []
    for text in rows_prompts:
        ids = encode_prompt(tokenizer, text)
        if len(ids) >= max_len:
            warnings.warn(f"prompt has {len(ids)} tokens but the model's context is {max_len}; "
                          f"keeping the last {max_len - 1}", stacklevel=2)
            ids = ids[-(max_len - 1):]
        prompt_ids.append(ids)

    padded_batch = _bucket(batch, limit=1 << 30)
    prompt_len = _bucket(max(len(ids) for ids in prompt_ids), limit=max_len, minimum=PROMPT_BUCKET_MIN)
    prompt = np.zeros((padded_batch, prompt_len), np.int32)
    pad = np.full((padded_batch,), prompt_len - 1, np.int32)
    limit = np.zeros((padded_batch,), np.int32)
    for b, ids in enumerate(prompt_ids):
        prompt[b, prompt_len - len(ids):] = ids
        pad[b] = prompt_len - len(ids)
        limit[b] = min(max_new_tokens, max_len - len(ids))
    words = np.zeros((padded_batch, 2), np.uint32)
    words[:batch] = [seed_words(s) for s in seeds]

    stacked = SamplingSettings.stack(settings + settings[:1] * (padded_batch - batch))  # [padded_batch] per field
    eos_id = special_ids(tokenizer).eos
    layout = _trace_layout(trace, trace_k, int(limit.max()), config) if trace else None
    tokens, lengths, buffers = _generate_compiled(
        nnx.graphdef(model), params, prompt, pad, limit, words, stacked, np.int32(-1 if eos_id is None else eos_id),
        max_steps=decode_steps(int(limit.max()), max_len), trace_layout=layout)
    tokens, lengths = np.asarray(tokens)[:batch], np.array(lengths)[:batch]

    new_ids, continuations, reasons = [], [], []
    for b in range(batch):
        ids = tokens[b, : lengths[b]].tolist()
        ended = bool(ids) and eos_id is not None and ids[-1] == eos_id
        reasons.append("eos" if ended else "max_new_tokens" if lengths[b] >= max_new_tokens else "context")
        text = decode(tokenizer, ids[:-1] if ended else ids)
        cut = _first_stop(text, stops)
        if cut is not None:
            text, ids, reasons[-1] = text[:cut], _ids_through_stop(tokenizer, ids, stops), "stop"
            lengths[b] = len(ids)
        new_ids.append(ids)
        continuations.append(text)
    steps = int(lengths.max(initial=0))
    trace_obj = None
    if trace:
        kept = {name: np.array(buffer[:batch, :steps]) for name, buffer in buffers.items()}
        for values in kept.values():
            values[np.arange(steps)[None] >= lengths[:, None]] = 0  # padding steps read as zeros
        trace_obj = Trace(prompt_ids=prompt_ids, token_ids=tokens[:, :steps], lengths=lengths, settings=settings,
                          seeds=[int(s) for s in seeds], eos_id=eos_id, vocab_size=config.vocab_size,
                          top_ids=kept["top_ids"], top_logits=kept["top_logits"], logsumexp=kept["logsumexp"],
                          entropy=kept["entropy"], full_logits=kept.get("logits"), graphdef=nnx.graphdef(model),
                          params=params)
    return GenerationResult(texts=[p + c for p, c in zip(rows_prompts, continuations)], continuations=continuations,
                            new_token_ids=new_ids, prompt_token_counts=[len(ids) for ids in prompt_ids],
                            stop_reasons=reasons, trace=trace_obj)


def next_token_logits(model: Transformer, params: nnx.State, tokenizer: Tokenizer, prompt: str) -> np.ndarray:
    """Raw next-token logits ``[vocab]`` after ``prompt`` (one compiled step, no sampling choices).

    Usage: ``viz.temperature_view(next_token_logits(model, params, tok, "Once upon a"), tok)``
    """
    result = generate(model, params, tokenizer, prompt, max_new_tokens=1, temperature=0.0, top_k=0, trace="full")
    return result.trace.step_logits(0, 0)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _sequence_nll(graphdef, params, tokens, weights):
    model: Transformer = nnx.merge(graphdef, params)
    logits = model(tokens[:, :-1])
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(nll * weights[:, 1:]), jnp.sum(weights[:, 1:])


def evaluate_text(model: Transformer, params: nnx.State, tokenizer: Tokenizer, text: str) -> float:
    """Mean negative log-likelihood of ``text`` in nats per token (given a BOS start).

    Texts longer than the context are scored in consecutive windows.

    Usage: ``evaluate_text(model, params, tok, "Once upon a time, there was a cat.")``
    """
    ids = encode_prompt(tokenizer, text)
    if len(ids) < 2:
        raise ValueError("text is empty: nothing to score")
    model, params = as_decoder(model, params, context=len(ids))
    window = model.config.max_len
    total, count = 0.0, 0.0
    for start in range(0, len(ids) - 1, window - 1):
        chunk = ids[start: start + window]
        tokens = np.zeros((1, window), np.int32)
        weights = np.zeros((1, window), np.float32)
        tokens[0, : len(chunk)] = chunk
        weights[0, : len(chunk)] = 1.0
        nll, n = _sequence_nll(nnx.graphdef(model), params, tokens, weights)
        total, count = total + float(nll), count + float(n)
    return total / count
