"""Batched text generation: a compiled prefill chunk, then a compiled KV-cache decode loop.

The sampling settings (a :class:`~txtgen_nb.sampling.SamplingSettings` pytree), the seeds and the
number of new tokens are traced arguments, so changing them never recompiles. Prompts are left-padded to
at least ``PROMPT_BUCKET_MIN`` slots (a power of two) and run through the cache in chunks by one program, and
batches are padded to powers of two, so a new prompt compiles nothing unless it is longer than 128 tokens. Each row
stops at end-of-sequence, at ``max_new_tokens``, at the model's context or at a ``stop`` string,
whichever is first. :func:`generate_stream` runs the same compiled loop in chunks of steps,
carrying its cache between chunks, and yields the text as it grows.

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
import itertools
import time
import warnings
from typing import Callable, Collection, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import io_callback
from tokenizers import Tokenizer

from txtgen_nb import rng, sampling
from txtgen_nb.config import ModelConfig
from txtgen_nb.model import Transformer, as_decoder, init_cache
from txtgen_nb.sampling import SamplingSettings
from txtgen_nb.tokenizer import decode, encode_prompt, special_tokens
from txtgen_nb.trace import MIN_SLOTS, TRACE_TOP_K, Trace, TraceLayout, allowed_mask, record_step, trace_buffers

PROMPT_BUCKET_MIN = MIN_SLOTS  # prompt slots: a power of two, at least 128 (every prompt of up to 128 tokens shares one cache shape)
PREFILL_TOKENS = 64  # tokens one prefill call runs over the whole batch (a Stop waits for one call at most)
DECODE_BUCKET_MIN = 128  # the decode loop (and the cache after the prompt) is at least this long, if the context allows
STOP_CHUNK_SECONDS = 0.25  # with stop strings, generate() checks the text this often and ends the loop early
STOP_SLOTS = 8  # stop ids the loop compares each token with (the model's EOS and end-of-turn tokens; -1 unused)


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
    stop_reasons: list[str]  # "eos", "max_new_tokens", "context", "stop" (a stop string) or "interrupted"
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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LoopInputs:
    """What every decode step reads and none changes (made once per call by :func:`_start`)."""

    prompt: jax.Array  # [B, P] int32 prompt ids, -1 at left padding (the penalties' context)
    pad: jax.Array  # [B] int32: first real slot of each row
    limit: jax.Array  # [B] int32: new tokens allowed per row
    keys: jax.Array  # [B] PRNG keys, one per row (from its seed)
    settings: SamplingSettings  # of [B] arrays: traced, so a slider never recompiles
    stop_ids: jax.Array  # [STOP_SLOTS] int32: ids that end a row (EOS, end of turn), -1 unused
    constraint: jax.Array  # [] int32: the request's key in _CONSTRAINTS (constrained decoding), -1 none


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LoopState:
    """What the decode loop carries from step to step, and from one chunk of steps to the next."""

    step: jax.Array  # [] int32: steps taken
    cache: list  # per layer {"k", "v"}: [B, H_kv, P + max_steps, Dh]
    logits: jax.Array  # [B, V] raw logits of the next token
    tokens: jax.Array  # [B, max_steps] int32 drawn tokens (0 past a row's end)
    lengths: jax.Array  # [B] int32 new tokens per row
    done: jax.Array  # [B] bool: row ended (end-of-sequence, its limit, or a stop string)
    mu: jax.Array  # [B] float32 Mirostat's μ (the classic loop leaves it as it is)
    adaptive: jax.Array  # [B, 2] float32 adaptive-p's history: weighted sum, total weight (likewise)
    trace: dict | None  # trace buffers [B, trace steps, ...], or None


def _mask(slots: jax.Array, query_slots: jax.Array, pad: jax.Array) -> jax.Array:
    """[B, Q, S] causal mask over cache ``slots`` for queries at ``query_slots`` [1, Q, 1], left padding
    ``pad`` [B] excluded."""
    return (slots[None, None] <= query_slots) & (slots[None, None] >= pad[:, None, None])


@functools.partial(jax.jit, static_argnames=("config", "max_steps", "trace_layout"))
def _start(prompt, pad, limit, seeds, settings, stop_ids, constraint, *, config, max_steps: int,
           trace_layout: TraceLayout | None = None) -> tuple[LoopState, LoopInputs]:
    """The loop's inputs and an empty state (zeroed cache with ``P + max_steps`` slots) for the
    left-padded ``prompt`` [B, P]: ``pad`` [B] padding per row, ``limit`` [B] new tokens per row,
    ``seeds`` [B, 2] uint32. No model call: :func:`prefill` fills the cache chunk by chunk."""
    batch, prompt_len = prompt.shape
    inputs = LoopInputs(prompt=jnp.where(jnp.arange(prompt_len)[None] >= pad[:, None], prompt, -1), pad=pad,
                        limit=limit, keys=jax.vmap(rng.row_key)(seeds), settings=settings, stop_ids=stop_ids,
                        constraint=constraint)
    trace = None if trace_layout is None else trace_buffers(trace_layout, batch, config.vocab_size)
    state = LoopState(step=jnp.int32(0), cache=init_cache(config, batch, prompt_len + max_steps),
                      logits=jnp.zeros((batch, config.vocab_size), jnp.float32),
                      tokens=jnp.zeros((batch, max_steps), jnp.int32), lengths=jnp.zeros((batch,), jnp.int32),
                      done=limit <= 0, mu=sampling.mirostat_initial_mu(settings.mirostat_tau),
                      adaptive=sampling.adaptive_initial_state(settings.adaptive_target, settings.adaptive_decay),
                      trace=trace)
    return state, inputs


@functools.partial(jax.jit, static_argnames=("graphdef", "chunk"), donate_argnames=("state",))
def _prefill_chunk(graphdef, params, state: LoopState, prompt, pad, start, *, chunk: int) -> LoopState:
    """Run slots ``start .. start + chunk`` of the left-padded ``prompt`` [B, P] (``start`` a traced
    int: one program for every chunk of every prompt, whatever the settings) through the model into
    the cache; the state's logits become those after the chunk's last slot. A chunk may overlap the
    one before it: its slots are recomputed alike."""
    model: Transformer = nnx.merge(graphdef, params)
    prompt_len = prompt.shape[1]
    query_slots = start + jnp.arange(chunk)  # [C]
    tokens = jax.lax.dynamic_slice_in_dim(prompt, start, chunk, axis=1)  # [B, C]
    positions = jnp.maximum(query_slots[None] - pad[:, None], 0)  # [B, C]
    slots = jnp.arange(prompt_len + state.tokens.shape[1])
    logits, cache = model(tokens, positions=positions, mask=_mask(slots, query_slots[None, :, None], pad),
                          cache=state.cache, cache_index=start)
    return dataclasses.replace(state, cache=cache, logits=logits[:, -1])


def start_loop(config, arrays: dict, *, max_steps: int,
               trace_layout: TraceLayout | None = None) -> tuple[LoopState, LoopInputs]:
    """:func:`_start` of a batch laid out by :func:`_batch_arrays`: the loop's inputs and an empty
    state. Usage: ``state, inputs = start_loop(model.config, arrays, max_steps=128)``"""
    a = arrays
    return _start(a["prompt"], a["pad"], a["limit"], a["seeds"], a["settings"], a["stop_ids"],
                  a.get("constraint", np.int32(-1)), config=config, max_steps=max_steps, trace_layout=trace_layout)


def prefill_sizes(batch: int, prompt_len: int) -> tuple[int, int]:
    """Prompt slots of the two prefill programs, ``(small, large)``: ``PREFILL_TOKENS`` tokens in all
    over the batch for the bulk of a prompt (at least 8 per row, so a Stop waits for at most one
    call), a quarter of that for a short prompt or the head of a long one.
    Usage: ``prefill_sizes(1, 128)  # (16, 64)``"""
    large = min(prompt_len, max(8, PREFILL_TOKENS // batch))
    return min(large, max(8, PREFILL_TOKENS // 4 // batch)), large


def prefill_plan(prompt_len: int, first_slot: int, sizes: tuple[int, int]) -> list[tuple[int, int]]:
    """``(start, size)`` of each prefill call, in order: large chunks up to the prompt's end, small
    ones (at most two, else one more large) before them back to ``first_slot``, the first real token
    of the longest row; a chunk that would start before slot 0 starts there, overlapping the next.
    Usage: ``prefill_plan(128, 100, (16, 64))  # [(96, 16), (112, 16)]``"""
    small, large = sizes
    rest = prompt_len - first_slot
    count = rest // large
    smalls = -(-(rest - count * large) // small)
    if smalls > 2:
        count, smalls = count + 1, 0
    chunks, end = [], prompt_len
    for size in [large] * count + [small] * smalls:
        end -= size
        chunks.append((max(0, end), size))
    return chunks[::-1]


def prefill(graphdef, params, config, arrays: dict, *, max_steps: int, trace_layout: TraceLayout | None = None,
            should_stop=lambda: False) -> tuple[LoopState, LoopInputs, bool]:
    """The loop's state after the prompt ``arrays`` (:func:`_batch_arrays`), run in the chunks of
    :func:`prefill_plan` through two compiled programs, whatever the prompt's length; returns
    ``(state, inputs, finished)``. ``should_stop()`` is asked before each chunk: ``finished`` is
    ``False`` when it said yes (a Stop during a long prompt).

    Usage: ``state, inputs, _ = prefill(nnx.graphdef(model), params, model.config, a, max_steps=128)``
    """
    a = arrays
    state, inputs = start_loop(config, a, max_steps=max_steps, trace_layout=trace_layout)
    batch, prompt_len = a["prompt"].shape
    for start, size in prefill_plan(prompt_len, int(a["pad"].min()), prefill_sizes(batch, prompt_len)):
        if should_stop():
            return state, inputs, False
        state = _prefill_chunk(graphdef, params, state, a["prompt"], a["pad"], np.int32(start), chunk=size)
        state.logits.block_until_ready()  # one chunk at a time, so that should_stop is asked as it runs
    return state, inputs, True


def _categorical(inputs: LoopInputs, step: jax.Array, filtered: jax.Array) -> jax.Array:
    """One draw per row from ``filtered`` [B, V] with the row's key folded with the step."""
    return jax.vmap(lambda key, row: rng.draw(key, step, row))(inputs.keys, filtered).astype(jnp.int32)


def _draw_classic(inputs: LoopInputs, s: LoopState, top: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Temperature, top-k, top-p and min-p only: the whole batch filtered at once (no vmap, so
    ``filter_logits_fast`` skips the vocabulary sort with one ``lax.cond``), then one draw per row.
    ``top``: the ids of the 64 largest raw logits ``[B, 64]`` when the trace's window holds them."""
    t = inputs.settings
    filtered = sampling.filter_logits_fast(s.logits, temperature=t.temperature, top_k=t.top_k, top_p=t.top_p,
                                           min_p=t.min_p, top_ids=top)
    return _categorical(inputs, s.step, filtered), s.mu, s.adaptive


def _draw_full(inputs: LoopInputs, s: LoopState, top: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Every rule, with the context right-aligned (``[-1 ..., prompt, generated so far]``) for the
    penalties, and Mirostat's μ and adaptive-p's history updated per row (``top`` is unused: this
    chain sorts the row)."""
    max_steps = s.tokens.shape[1]
    generated = jnp.where(jnp.arange(max_steps)[None] < s.step, s.tokens, -1)  # [B, S]
    context = jnp.roll(jnp.concatenate([inputs.prompt, generated], axis=1), max_steps - s.step, axis=1)
    coins = jax.vmap(lambda key: rng.coin(key, s.step))(inputs.keys)
    t = inputs.settings
    stages = sampling.filter_stages(s.logits, t, context, num_generated=s.step, mu=s.mu, xtc_coin=coins,
                                    stop_ids=inputs.stop_ids, adaptive=s.adaptive, fused=True)
    token = _categorical(inputs, s.step, stages.final)
    mu, _ = sampling.mirostat_update(s.mu, stages.final, token, t.mirostat_tau, t.mirostat_eta)
    before = getattr(stages, sampling.stage_before("adaptive_p", t.order))
    adaptive = sampling.adaptive_update(s.adaptive, before, token, t.adaptive_target, t.adaptive_decay)
    return token, mu, adaptive


_CONSTRAINTS: dict[int, tuple[Callable[[list[int]], Collection[int]], int]] = {}
"""Constrained requests while they run: key -> (the ids allowed after a context's ids, vocabulary size)."""
_CONSTRAINT_KEYS = itertools.count()


def _allowed_on_host(key, prompt, tokens, step, done) -> np.ndarray:
    """``[B, V]`` bool: the tokens the request's constraint allows next in each unfinished row (its
    prompt without the left padding, then the tokens generated so far); every token in a finished row."""
    allowed_after, vocab = _CONSTRAINTS[int(key)]
    prompt, tokens, step = np.asarray(prompt), np.asarray(tokens), int(step)
    out = np.ones((prompt.shape[0], vocab), bool)
    for b in np.flatnonzero(~np.asarray(done)):
        out[b] = allowed_mask(allowed_after, prompt[b][prompt[b] >= 0].tolist() + tokens[b, :step].tolist(), vocab)
    return out


def _constrain(inputs: LoopInputs, s: LoopState) -> LoopState:
    """The state with its logits masked to the tokens the constraint allows (asked of the host each step)."""
    allowed = io_callback(_allowed_on_host, jax.ShapeDtypeStruct(s.logits.shape, jnp.bool_), inputs.constraint,
                          inputs.prompt, s.tokens, s.step, s.done)
    return dataclasses.replace(s, logits=jnp.where(allowed, s.logits, sampling.NEG_INF))


def _step(model: Transformer, inputs: LoopInputs, s: LoopState, draw, constrained: bool = False) -> LoopState:
    """Draw each unfinished row's next token, record the trace, and run the tokens through the model
    (``constrained``: from the tokens the request's constraint allows; the trace records those logits)."""
    s = _constrain(inputs, s) if constrained else s
    top = None if s.trace is None else jax.lax.top_k(s.logits, s.trace["top_ids"].shape[-1])  # ([B, K], [B, K])
    # the classic sampler reuses the window when it is exactly its own top_k (a slice of a larger
    # top_k makes XLA:CPU sort the whole row instead: measured 2x slower on the GPT-2-small shape)
    shared = top is not None and top[1].shape[-1] == min(sampling.TOP_K_CAP, s.logits.shape[-1])
    token, mu, adaptive = draw(inputs, s, top[1] if shared else None)
    token = jnp.where(s.done, 0, token)
    lengths = s.lengths + (~s.done).astype(jnp.int32)
    done = s.done | jnp.any(token[:, None] == inputs.stop_ids[None], axis=-1) | (lengths >= inputs.limit)
    trace = None if s.trace is None else record_step(s.trace, s.step, s.logits, top)
    prompt_len = inputs.prompt.shape[1]
    slots = jnp.arange(prompt_len + s.tokens.shape[1])
    slot = prompt_len + s.step
    position = jnp.minimum(prompt_len - inputs.pad + s.step, model.config.max_len - 1)[:, None]  # [B, 1]
    logits, cache = model(token[:, None], positions=position, mask=_mask(slots, slot, inputs.pad), cache=s.cache,
                          cache_index=slot)
    return LoopState(step=s.step + 1, cache=cache, logits=logits[:, -1], tokens=s.tokens.at[:, s.step].set(token),
                     lengths=lengths, done=done, mu=mu, adaptive=adaptive, trace=trace)


def _decode(graphdef, params, state: LoopState, inputs: LoopInputs, until, *, full: bool = False,
            constrained: bool = False) -> LoopState:
    """Decode from ``state`` until ``until`` steps (a traced int: any chunk size, one compile) or every
    row is done. The cache and buffers of ``state`` are donated: the next chunk reuses them in place.

    ``full``: the chain with every rule (:func:`_draw_full`), else the classic one. Two programs, not
    one with both loops: a run with classic settings never compiles or holds the full chain (on
    SmolLM2 that is about 170 MB of peak memory and 5 s of its first call). ``constrained``: each step
    masks the logits to what the request's constraint allows (:func:`_constrain`), a program of its own.
    (The flags go to the compiled loop by position, so every caller shares its cache, however it passes them.)"""
    return _decode_loop(graphdef, params, state, inputs, until, bool(full), bool(constrained))


@functools.partial(jax.jit, static_argnums=(0, 5, 6), donate_argnums=(2,))
def _decode_loop(graphdef, params, state: LoopState, inputs: LoopInputs, until, full: bool,
                 constrained: bool) -> LoopState:
    """:func:`_decode`'s compiled loop."""
    draw = _draw_full if full else _draw_classic

    reduced = any(leaf.dtype != jnp.float32 for leaf in jax.tree.leaves(params))

    def body(s: LoopState) -> LoopState:
        # in reduced precision the barrier makes the weights loop-variant: XLA cannot hoist their
        # conversions to float32 (XLA:CPU's dots) out of the loop and keep copies of all (model._tie)
        weights, s = jax.lax.optimization_barrier((params, s)) if reduced else (params, s)
        return _step(nnx.merge(graphdef, weights), inputs, s, draw, constrained)

    keep_going = lambda s: (s.step < until) & ~jnp.all(s.done)  # noqa: E731
    return jax.lax.while_loop(keep_going, body, state)


def compiled_programs() -> int:
    """How many generation programs are compiled so far (prefill and decode loop): a test of
    "moving a slider never recompiles". Usage: ``before = compiled_programs()``"""
    return _start._cache_size() + _prefill_chunk._cache_size() + _decode_loop._cache_size()


def warm_up(model: Transformer, params: nnx.State, *, batch: int = 1, max_new_tokens: int = 100,
            trace: bool | str = False, trace_k: int | None = None) -> int:
    """Compile now what a generation of ``batch`` rows and ``max_new_tokens`` will need, for any
    prompt of up to ``PROMPT_BUCKET_MIN`` tokens and any numeric settings: the loop's start, both
    prefill chunk sizes and every sampler chain (classic; every rule in Hugging Face's order and in
    llama.cpp's, Mirostat included). A free order or a new value of another static field (logit
    bias, banned words, DRY breakers) compiles once when first used. Returns how many programs it compiled
    (0 the second time). Explorers run it in the background when they load a model.

    Usage: ``warm_up(model, params, max_new_tokens=40, trace=True)``
    """
    if not isinstance(model, Transformer):
        return 0
    before, config, graphdef = compiled_programs(), model.config, nnx.graphdef(model)
    for settings, full in [(SamplingSettings(), False), (SamplingSettings(), True),
                           (SamplingSettings(order="llama.cpp"), True)]:
        a = _batch_arrays([[0]] * batch, [0] * batch, [settings] * batch, max_new_tokens, config.max_len, stop_ids=())
        longest = int(a["limit"].max())
        layout = _trace_layout(trace, trace_k, longest, config) if trace else None
        steps = decode_steps(longest, config.max_len)
        start = functools.partial(start_loop, config, a, max_steps=steps, trace_layout=layout)
        if not full:
            for size in sorted(set(prefill_sizes(*a["prompt"].shape))):
                state, _ = start()
                _prefill_chunk(graphdef, params, state, a["prompt"], a["pad"], np.int32(0),
                               chunk=size).logits.block_until_ready()
        state, inputs = start()
        _decode(graphdef, params, state, inputs, np.int32(1), full=full).tokens.block_until_ready()
        _PREPARED.add(_shape_key(graphdef, a["prompt"].shape, steps, layout, full, a["settings"].static_key()))
    return compiled_programs() - before


def default_trace_k(vocab_size: int) -> int:
    """The window a compact trace keeps: 256 candidates, fewer for a small vocabulary (a 2,048-token
    vocabulary keeps 64, so that ``lax.top_k`` stays a small part of a decode step)."""
    return min(TRACE_TOP_K, max(64, vocab_size // 32))


def _trace_layout(trace: bool | str, trace_k: int | None, steps: int, config: ModelConfig) -> TraceLayout:
    """Trace buffers for ``steps`` new tokens, as many steps as the decode loop (:func:`decode_steps`):
    every length up to 128 shares one compiled program, longer ones one per power of two."""
    k = min(default_trace_k(config.vocab_size) if trace_k is None else trace_k, config.vocab_size)
    return TraceLayout(steps=decode_steps(steps, config.max_len), top_k=k,
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


def _shape_key(graphdef, prompt_shape: tuple[int, int], max_steps: int, layout: TraceLayout | None, full: bool,
               static: tuple, constrained: bool = False) -> tuple:
    """What the compiled programs depend on: the model, the batch and prompt slots, the loop's
    length, the trace layout, the chain, the settings' static fields (``static_key()``: order,
    DRY breakers, logit bias, banned words) and a constraint; one key, one set of programs."""
    return graphdef, tuple(prompt_shape), max_steps, layout, full, static, constrained


@dataclasses.dataclass(frozen=True)
class _Request:
    """A batch laid out for the compiled programs: rows, padded arrays and static shapes."""

    rows_prompts: list[str]  # one prompt per row (``num_samples`` repeats each)
    prompt_ids: list[list[int]]  # [batch] prompt token ids, cut to the context
    seeds: list[int]
    settings: list[SamplingSettings]
    stops: list[str]
    max_new_tokens: int
    arrays: dict  # prompt [Bp, P], pad [Bp], limit [Bp], seeds [Bp, 2], settings [Bp], stop_ids [STOP_SLOTS]: Bp a power of two
    max_steps: int  # decode loop length (cache slots after the prompt)
    layout: TraceLayout | None
    chat: bool  # each prompt is the user's message in the model's chat template
    full: bool  # a row uses a rule beyond temperature, top-k, top-p and min-p: the full chain's program
    allowed_after: Callable[[list[int]], Collection[int]] | None = None  # constrained: ids allowed after a context

    def shape_key(self, graphdef) -> tuple:
        """What the compiled programs depend on (:func:`_shape_key`)."""
        return _shape_key(graphdef, self.arrays["prompt"].shape, self.max_steps, self.layout, self.full,
                          self.arrays["settings"].static_key(), self.allowed_after is not None)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """The ids that end a row, as the compiled loop was given them (``arrays["stop_ids"]``)."""
        return tuple(int(i) for i in self.arrays["stop_ids"] if i >= 0)


def _prepare(model, params, tokenizer, prompts, *, max_new_tokens=100, temperature=0.8, top_k=50, top_p=1.0,
             min_p=0.0, seed=42, num_samples=1, trace=False, trace_k=None, settings=None, stop=None, chat=False,
             constrain=None):
    """Check the arguments of :func:`generate` and lay out the batch; returns ``(model, params, request)``."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    _check_arguments(prompts, max_new_tokens, num_samples, trace, trace_k)
    if not isinstance(model, Transformer):  # any NNX module: its forward pass recomputed at each step
        context = max(len(encode_prompt(tokenizer, p, chat)) for p in prompts) + max_new_tokens
        model, params = as_decoder(model, params, context)
    rows_prompts, seeds, settings = _rows(prompts, num_samples, seed, settings, temperature, top_k, top_p, min_p)
    stops = _stop_strings(stop)
    encoded = {text: encode_prompt(tokenizer, text, chat) for text in dict.fromkeys(rows_prompts)}
    prompt_ids = [_fit_prompt(encoded[text], model.config.max_len) for text in rows_prompts]
    arrays = _batch_arrays(prompt_ids, seeds, settings, max_new_tokens, model.config.max_len,
                           special_tokens(tokenizer).stop)
    longest = int(arrays["limit"].max())
    layout = _trace_layout(trace, trace_k, longest, model.config) if trace else None
    allowed_after = _constraint(constrain, tokenizer, rows_prompts, prompt_ids)
    if allowed_after is not None:
        arrays["constraint"] = np.int32(next(_CONSTRAINT_KEYS))
    request = _Request(rows_prompts, prompt_ids, seeds, settings, stops, max_new_tokens, arrays,
                       decode_steps(longest, model.config.max_len), layout, chat,
                       sampling.uses_extras(arrays["settings"]), allowed_after)
    return model, params, request


def _constraint(constrain: str | None, tokenizer: Tokenizer, rows_prompts: list[str],
                prompt_ids: list[list[int]]) -> Callable[[list[int]], Collection[int]] | None:
    """The ids a ``constrain`` allows after a context's ids (``"grammar"``: the story grammar's prefix
    oracle), checked on every prompt; ``None`` without one."""
    if constrain is None:
        return None
    if constrain != "grammar":
        raise ValueError(f"constrain must be None or 'grammar', got {constrain!r}")
    from txtgen_nb.corpus import valid_next_tokens

    def allowed_after(ids: list[int]) -> Collection[int]:
        return valid_next_tokens(tokenizer, decode(tokenizer, ids))

    for text, ids in zip(rows_prompts, prompt_ids):
        if not allowed_after(ids):
            raise ValueError(f"constrain='grammar': no grammatical story starts with {text!r}, so no token may "
                             "follow it; give a prompt the story grammar can continue, such as 'Once upon a time'")
    return allowed_after


def _check_arguments(prompts: list[str], max_new_tokens, num_samples, trace, trace_k) -> None:
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


def _rows(prompts: list[str], num_samples: int, seed, settings, temperature, top_k, top_p,
          min_p) -> tuple[list[str], list[int], list[SamplingSettings]]:
    """One prompt, seed and :class:`SamplingSettings` per row: ``num_samples`` rows per prompt (seeds
    ``seed, seed+1, ...``), or one row per given setting or seed when one prompt is given."""
    per_row = [len(v) for v in (temperature, top_k, top_p, min_p, seed, settings) if _is_per_row(v)]
    if len(prompts) == 1 and num_samples == 1 and per_row:
        prompts = prompts * max(per_row)
    rows_prompts = [p for p in prompts for _ in range(num_samples)]
    batch = len(rows_prompts)
    if _is_per_row(seed):
        seeds = [int(s) for s in _as_rows(seed, batch, "seed")]
    else:
        seeds = [int(seed) + i for _ in prompts for i in range(num_samples)]
    if settings is not None:
        settings = _as_rows(settings, batch, "settings")
        if not all(isinstance(row, SamplingSettings) for row in settings):
            raise ValueError("settings must be SamplingSettings objects")
    else:
        settings = [SamplingSettings(t, k, p, m) for t, k, p, m in zip(
            _as_rows(temperature, batch, "temperature"), _as_rows(top_k, batch, "top_k"),
            _as_rows(top_p, batch, "top_p"), _as_rows(min_p, batch, "min_p"))]
    return rows_prompts, seeds, settings


def _fit_prompt(ids: list[int], max_len: int) -> list[int]:
    if len(ids) >= max_len:
        warnings.warn(f"prompt has {len(ids)} tokens but the model's context is {max_len}; keeping the last "
                      f"{max_len - 1} (the first {len(ids) - max_len + 1} were cut)", stacklevel=4)
        ids = ids[-(max_len - 1):]
    return ids


def _batch_arrays(prompt_ids: list[list[int]], seeds: list[int], settings: list[SamplingSettings], max_new_tokens: int,
                  max_len: int, stop_ids: Sequence[int]) -> dict:
    """Left-padded prompts in a few length buckets, the batch padded to a power of two (padding rows
    copy row 0's settings and generate nothing)."""
    batch = len(prompt_ids)
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
    words[:batch] = [rng.seed_words(s) for s in seeds]
    stacked = SamplingSettings.stack(settings + settings[:1] * (padded_batch - batch))  # [padded_batch] per field
    if len(stop_ids) > STOP_SLOTS:
        raise ValueError(f"the model has {len(stop_ids)} stop tokens; at most {STOP_SLOTS} are supported")
    stops = np.full((STOP_SLOTS,), -1, np.int32)
    stops[: len(stop_ids)] = list(stop_ids)
    return dict(prompt=prompt, pad=pad, limit=limit, seeds=words, settings=stacked, stop_ids=stops)


def _ends_with_stop(ids: list[int], stop_ids: Sequence[int]) -> bool:
    """Whether a row's ids end with one of the model's stop tokens (EOS, end of turn)."""
    return bool(ids) and ids[-1] in stop_ids


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` may still change: an unfinished UTF-8 character
    (decoded as U+FFFD) or the start of a stop string."""
    keep = len(text) - len(text.rstrip("\ufffd"))
    partial = [n for s in stops for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])]
    return max([keep, *partial])


_STEP_SECONDS: dict[tuple, float] = {}  # the last measured seconds per decode step, per model and shape
_PREPARED: set[tuple] = set()  # the model and shape keys (_Request.shape_key) that have run: compiled


class Stream:
    """Generation as it happens: iterate for each row's new text after every chunk of steps.

    The chunks run the same compiled decode loop, carrying its cache from one chunk to the next
    (a chunk's length is a traced number: nothing recompiles). Chunks last about ``chunk_seconds`` at
    the last measured speed of this model and shape; the very first is ``FIRST_CHUNK`` steps, so text
    shows at once. ``stop()`` (from another thread, a Stop
    button) ends generation after the current chunk of decode steps or of the prompt's prefill; rows
    cut short get the stop reason ``"interrupted"``. A stream runs once. ``result`` is the :class:`GenerationResult` once the stream is exhausted.

    Usage::

        stream = generate_stream(model, params, tok, "Once upon a time", max_new_tokens=200)
        for pieces in stream:              # one new piece of text per row
            print(pieces[0], end="", flush=True)
        stream.result.stop_reasons[0]
    """

    FIRST_CHUNK = 4  # steps before the first text shows

    def __init__(self, model: Transformer, params: nnx.State, tokenizer: Tokenizer, request: _Request,
                 chunk_seconds: float | None = 0.1) -> None:
        self.tokenizer, self.request, self.chunk_seconds = tokenizer, request, chunk_seconds
        self._graphdef, self._params, self._config = nnx.graphdef(model), params, model.config
        self._vocab_size = model.config.vocab_size
        self._stopped = self._iterated = False
        self._result: GenerationResult | None = None
        batch = len(request.rows_prompts)
        self.steps_done = 0  # steps decoded so far (of at most ``request.max_steps``)
        self._emitted = [""] * batch
        self._ended_by_stop = np.zeros(batch, bool)

    @property
    def batch(self) -> int:
        """Number of rows."""
        return len(self.request.rows_prompts)

    @property
    def texts(self) -> list[str]:
        """Each row's new text shown so far (the pieces yielded, joined)."""
        return list(self._emitted)

    @property
    def total_steps(self) -> int:
        """The most steps any row may take (for a progress bar)."""
        return int(self.request.arrays["limit"].max(initial=0))

    def stop(self) -> None:
        """End generation after the current chunk (safe to call from another thread)."""
        self._stopped = True

    @property
    def result(self) -> GenerationResult:
        """The finished generation (iterate the stream first)."""
        if self._result is None:
            raise ValueError("the stream is not finished: iterate it first")
        return self._result

    def run(self, progress: bool = False, desc: str = "generating") -> GenerationResult:
        """Generate to the end, with a progress bar of steps if ``progress`` (a widget in a notebook,
        text on a terminal), and return the result.

        Usage: ``generate_stream(model, params, tok, prompts, max_new_tokens=80).run(progress=True)``
        """
        from tqdm.auto import tqdm

        with tqdm(total=self.total_steps, desc=desc, unit="step", disable=not progress, leave=False) as bar:
            for _pieces in self:
                bar.update(min(self.steps_done, self.total_steps) - bar.n)
        return self.result

    def __iter__(self) -> Iterator[list[str]]:
        if self._iterated:
            raise ValueError("a Stream runs once: iterate it once and read .result (or call generate_stream again)")
        self._iterated = True
        key = int(self.request.arrays.get("constraint", -1))
        if key >= 0:
            _CONSTRAINTS[key] = (self.request.allowed_after, self._vocab_size)
        try:
            yield from self._run()
        finally:
            _CONSTRAINTS.pop(key, None)

    def _run(self) -> Iterator[list[str]]:
        """The prefill, then chunks of decode steps until every row is done, the limit or a stop."""
        state, inputs, prefilled = prefill(self._graphdef, self._params, self._config, self.request.arrays,
                                           max_steps=self.request.max_steps, trace_layout=self.request.layout,
                                           should_stop=lambda: self._stopped)
        speed_key = self.request.shape_key(self._graphdef)
        if not prefilled:  # stopped while the prompt ran: nothing decoded
            tokens, lengths, done = (np.asarray(x) for x in jax.device_get((state.tokens, state.lengths, state.done)))
            finished = done[: self.batch]
        while prefilled:
            state, tokens, lengths, done = self._decode_chunk(state, inputs, speed_key)
            pieces, stopped_now = self._pieces(tokens, lengths, done)
            if stopped_now.any():  # a stop string: the row ends in the loop too
                state = dataclasses.replace(state, done=state.done | np.pad(stopped_now, (0, len(done) - self.batch)))
            finished = done[: self.batch] | self._ended_by_stop
            yield pieces
            if finished.all() or self.steps_done >= self.request.max_steps or self._stopped:
                break
        if prefilled:
            _PREPARED.add(speed_key)
        self._result = _finish(self.tokenizer, self.request, tokens, lengths, state.trace, self._vocab_size,
                               self._graphdef, self._params, interrupted=~finished)

    @property
    def prepared(self) -> bool:
        """Whether this model has run this batch and cache shape before (``False``: the first chunk
        compiles, a few seconds on a large model)."""
        return self.request.shape_key(self._graphdef) in _PREPARED

    def _decode_chunk(self, state: LoopState, inputs: LoopInputs, speed_key: tuple):
        """Decode one chunk of steps, sized by this model's last measured speed, and measure it;
        returns the new state and its tokens, lengths and done flags on the host."""
        start, taken, programs = time.perf_counter(), self.steps_done, compiled_programs()
        until = min(taken + self._chunk_size(_STEP_SECONDS.get(speed_key)), self.request.max_steps)
        state = _decode(self._graphdef, self._params, state, inputs, np.int32(until), full=self.request.full,
                        constrained=self.request.allowed_after is not None)
        tokens, lengths, done = (np.asarray(x) for x in jax.device_get((state.tokens, state.lengths, state.done)))
        self.steps_done = int(state.step)
        if self.steps_done > taken and compiled_programs() == programs:  # a chunk that compiled says nothing of speed
            _STEP_SECONDS[speed_key] = (time.perf_counter() - start) / (self.steps_done - taken)
        return state, tokens, lengths, done

    def _chunk_size(self, step_seconds: float | None) -> int:
        """Steps in the next chunk: about ``chunk_seconds`` at the last measured speed of this model and
        shape, ``FIRST_CHUNK`` before any, the whole loop with ``chunk_seconds=None``."""
        if self.chunk_seconds is None:
            return self.request.max_steps
        return self.FIRST_CHUNK if step_seconds is None else max(1, int(self.chunk_seconds / step_seconds))

    def _pieces(self, tokens: np.ndarray, lengths: np.ndarray, done: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Each row's text added since the last chunk, and which rows a stop string ended just now."""
        pieces, stopped_now = [], np.zeros(self.batch, bool)
        stops = self.request.stop_ids
        for b in range(self.batch):
            ids = tokens[b, : lengths[b]].tolist()
            if self._ended_by_stop[b]:
                pieces.append("")
                continue
            text = decode(self.tokenizer, ids[:-1] if _ends_with_stop(ids, stops) else ids)
            cut = _first_stop(text, self.request.stops)
            if cut is not None:
                text, stopped_now[b] = text[:cut], True
            elif not done[b]:
                text = text[: len(text) - _held_back(text, self.request.stops)]
            piece = text[len(self._emitted[b]):] if text.startswith(self._emitted[b]) else ""
            self._emitted[b] += piece
            pieces.append(piece)
        self._ended_by_stop |= stopped_now
        return pieces, stopped_now


def _finish(tokenizer: Tokenizer, request: _Request, tokens: np.ndarray, lengths: np.ndarray, buffers: dict | None,
            vocab_size: int, graphdef, params, interrupted: np.ndarray) -> GenerationResult:
    """Texts, stop reasons and the trace from the decode loop's final tokens [Bp, max_steps]."""
    batch = len(request.rows_prompts)
    tokens, lengths = tokens[:batch], lengths[:batch].copy()
    stop_ids = request.stop_ids
    new_ids, continuations, reasons = [], [], []
    for b in range(batch):
        ids = tokens[b, : lengths[b]].tolist()
        ended = _ends_with_stop(ids, stop_ids)
        reason = ("eos" if ended else "max_new_tokens" if lengths[b] >= request.max_new_tokens
                  else "interrupted" if interrupted[b] else "context")
        text = decode(tokenizer, ids[:-1] if ended else ids)
        cut = _first_stop(text, request.stops)
        if cut is not None:
            text, ids, reason = text[:cut], _ids_through_stop(tokenizer, ids, request.stops), "stop"
            lengths[b] = len(ids)
        new_ids.append(ids)
        continuations.append(text)
        reasons.append(reason)
    trace = None if buffers is None else _trace(request, tokens, lengths, buffers, vocab_size, graphdef, params,
                                                stop_ids)
    return GenerationResult(texts=[p + c for p, c in zip(request.rows_prompts, continuations)],
                            continuations=continuations, new_token_ids=new_ids,
                            prompt_token_counts=[len(ids) for ids in request.prompt_ids], stop_reasons=reasons,
                            trace=trace)


def _trace(request: _Request, tokens: np.ndarray, lengths: np.ndarray, buffers: dict, vocab_size: int, graphdef,
           params, stop_ids: tuple[int, ...]) -> Trace:
    batch, steps = len(request.rows_prompts), int(lengths.max(initial=0))
    kept = {name: np.array(buffer[:batch, :steps]) for name, buffer in buffers.items()}
    for values in kept.values():
        values[np.arange(steps)[None] >= lengths[:, None]] = 0  # padding steps read as zeros
    return Trace(prompt_ids=request.prompt_ids, token_ids=tokens[:, :steps], lengths=lengths,
                 settings=request.settings, seeds=request.seeds, eos_id=stop_ids[0] if stop_ids else None,
                 stop_ids=tuple(stop_ids), vocab_size=vocab_size, templated=request.chat,
                 top_ids=kept["top_ids"], top_logits=kept["top_logits"], logsumexp=kept["logsumexp"],
                 entropy=kept["entropy"], full_logits=kept.get("logits"), graphdef=graphdef, params=params,
                 allowed_after=request.allowed_after)


def generate_stream(model: Transformer, params: nnx.State, tokenizer: Tokenizer, prompts: str | Sequence[str], *,
                    chunk_seconds: float = 0.1, **kwargs) -> Stream:
    """:func:`generate` as a :class:`Stream` of text pieces per row, one list after each chunk of
    about ``chunk_seconds``; ``kwargs`` are :func:`generate`'s.

    Usage: ``for pieces in generate_stream(model, params, tok, "Hello", max_new_tokens=200): print(pieces[0], end="")``
    """
    model, params, request = _prepare(model, params, tokenizer, prompts, **kwargs)
    return Stream(model, params, tokenizer, request, chunk_seconds)


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
    chat: bool = False,
    constrain: str | None = None,
) -> GenerationResult:
    """Generate continuations for one or more prompts in one compiled call.

    ``num_samples`` repeats each prompt with seeds ``seed, seed+1, ...``. Settings and seeds may
    also be given per row (a sequence as long as the batch; one prompt is repeated to match), or as
    ``settings`` (one :class:`SamplingSettings` or one per row) in place of the four separate
    arguments. Row ``b`` depends only on its own prompt, settings and seed, so a batch of one equals
    a single call. ``stop``: strings that end a row's text (cut before the first one to appear;
    stop reason ``"stop"``). ``chat``: each prompt is the user's message in the model's chat template
    (the text is the prompt followed by the assistant's reply, which ends at the end of its turn).
    ``constrain="grammar"``: every token is drawn from those the story grammar allows next
    (``corpus.valid_next_tokens``, asked at each step from inside the compiled loop), so every story is
    grammatical; the trace keeps the masked logits the sampler saw (``Trace.allowed_after``,
    :meth:`Trace.constraint_mass`: how much of the model's probability the grammar kept).

    ``trace=True`` keeps a compact :class:`Trace` per step (the ``trace_k`` largest raw logits, by
    default :func:`default_trace_k`, with their ids, the whole row's log-sum-exp and entropy; full
    logits are recomputed on demand);
    ``trace="full"`` (or ``trace_k`` >= vocabulary) also keeps every raw logit.

    Usage: ``generate(model, params, tok, "Once upon a time", num_samples=4, trace=True)``
    """
    model, params, request = _prepare(model, params, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                      temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed,
                                      num_samples=num_samples, trace=trace, trace_k=trace_k, settings=settings,
                                      stop=stop, chat=chat, constrain=constrain)
    return Stream(model, params, tokenizer, request, chunk_seconds=STOP_CHUNK_SECONDS if request.stops else None).run()


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
