"""The generation trace: what the sampler saw at each step, in memory that grows with the tokens generated.

Per step the compiled loop keeps a window of the ``K`` largest raw logits with their ids, the
log-sum-exp of the whole raw row (so probabilities at temperature 1 stay exact) and the raw entropy;
``trace="full"`` also keeps every logit. Full logits of a compact trace are recomputed on demand with
one model forward over a row's stored context (prompt + generated tokens give every step at once) and
cached, so no view ever shows a number computed from a truncated row.

Usage::

    trace = generate(model, params, tok, "Once upon a time", trace=True).trace
    trace.top_ids[0, 3], trace.top_logits[0, 3]      # the window of step 3: ids, raw logits [K]
    trace.window_is_exact(0, 3, SamplingSettings(0.8, 50))   # kept set inside the window?
    ids, probs = trace.kept_distribution(0, 3)        # exact final distribution (window or recompute)
    trace.step_logits(0, 3)                           # exact raw logits [V]
    trace.row_stages(0).final                         # every step's filtered logits [L, V], as the loop had them
    trace.mirostat(0).mu                              # Mirostat's μ before each step, replayed [L]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Callable, Collection

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from txtgen_nb import rng, sampling

if TYPE_CHECKING:
    from txtgen_nb.generation import SamplingSettings

TRACE_TOP_K = 256
MIN_SLOTS = 128  # contexts pad to a power of two of at least this many slots, the decode loop's prompt too: one shape for every short prompt
"""Default window: the number of largest raw logits kept per step."""


@dataclasses.dataclass(frozen=True)
class TraceLayout:
    """Static shape of the trace buffers inside the compiled loop (one compile per layout)."""

    steps: int  # a power of two >= the new tokens requested (capped by the context)
    top_k: int  # window size K, <= vocab
    full: bool  # also keep every raw logit [B, steps, V]


def trace_buffers(layout: TraceLayout, batch: int, vocab: int) -> dict[str, jax.Array]:
    """Zeroed trace buffers for the compiled loop's carry."""
    shape = (batch, layout.steps)
    buffers = dict(top_logits=jnp.zeros((*shape, layout.top_k), jnp.float32),
                   top_ids=jnp.zeros((*shape, layout.top_k), jnp.int32),
                   logsumexp=jnp.zeros(shape, jnp.float32), entropy=jnp.zeros(shape, jnp.float32))
    if layout.full:
        buffers["logits"] = jnp.zeros((*shape, vocab), jnp.float32)
    return buffers


def record_step(buffers: dict[str, jax.Array], step: jax.Array, logits: jax.Array,
                top: tuple[jax.Array, jax.Array] | None = None) -> dict[str, jax.Array]:
    """Write step ``step`` of the raw logits ``[B, V]`` into the trace buffers; ``top``: the step's
    ``lax.top_k(logits, K)`` (values, ids) ``[B, K]`` when the caller has it (shared with the sampler)."""
    top_logits, top_ids = jax.lax.top_k(logits, buffers["top_ids"].shape[-1]) if top is None else top  # [B, K]
    peak = jnp.max(logits, axis=-1, keepdims=True)  # [B, 1]; not top_logits: keeps XLA's fusions apart
    weights = jnp.exp(logits - peak)  # [B, V], one exp pass for both sums
    total = jnp.sum(weights, axis=-1)  # [B]
    lse = peak[:, 0] + jnp.log(total)
    mean_logit = jnp.sum(weights * logits, axis=-1) / total  # expected raw logit
    values = dict(top_logits=top_logits, top_ids=top_ids, logsumexp=lse, entropy=jnp.maximum(lse - mean_logit, 0.0),
                  logits=logits)
    return {name: jax.lax.dynamic_update_index_in_dim(buffer, values[name].astype(buffer.dtype), step, axis=1)
            for name, buffer in buffers.items()}


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _context_logits(graphdef, params, tokens, pad):
    """Raw logits ``[B, S, V]`` of left-padded ``tokens [B, S]`` (``pad [B]`` leading pad slots), with
    the positions and mask generation's prefill uses."""
    model = nnx.merge(graphdef, params)
    slots = jnp.arange(tokens.shape[1])
    mask = (slots[None, None, :] <= slots[None, :, None]) & (slots[None, None, :] >= pad[:, None, None])
    positions = jnp.maximum(slots[None] - pad[:, None], 0)
    return model(tokens, positions=positions, mask=mask)


@jax.jit
def _mirostat_replay(pre: jax.Array, tokens: jax.Array, tau: jax.Array, eta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """μ before each step and the observed surprise ``[L]`` (bits), from the logits entering Mirostat
    ``pre [L, V]`` and the sampled ``tokens [L]``: the decode loop's update, one step after another."""
    def step(mu, xs):
        logits, token = xs
        final = sampling.apply_mirostat(logits, tau, mu)
        new_mu, surprise = sampling.mirostat_update(mu, final, token, tau, eta)
        return new_mu, (mu, surprise)

    _, (mu, surprise) = jax.lax.scan(step, sampling.mirostat_initial_mu(tau), (pre, tokens))
    return mu, surprise


@jax.jit
def _adaptive_replay(before: jax.Array, tokens: jax.Array, target: jax.Array, decay: jax.Array) -> jax.Array:
    """Adaptive-p's history before each step ``[L, 2]`` from its input ``before [L, V]`` and the sampled
    ``tokens [L]``: the decode loop's update, one step after another."""
    def step(state, xs):
        logits, token = xs
        return sampling.adaptive_update(state, logits, token, target, decay), state

    _, states = jax.lax.scan(step, sampling.adaptive_initial_state(target, decay), (before, tokens))
    return states


@dataclasses.dataclass(frozen=True)
class MirostatReplay:
    """Mirostat v2 at every step of one row, replayed from the trace with the sampler's own functions."""

    mu: np.ndarray  # [L] μ before each step: the largest surprise (bits) the truncation kept
    surprise: np.ndarray  # [L] -log2 p of the sampled token in the distribution Mirostat sampled from
    tau: float  # target surprise (bits): μ moves by eta * (tau - surprise) after each token
    eta: float


def _pow2(n: int, minimum: int = 1) -> int:
    return max(minimum, 1 << max(0, (n - 1).bit_length()))


def _window_kept(top: np.ndarray, lse: float, vocab: int, s: SamplingSettings) -> np.ndarray | None:
    """Mask over a window ``top [K]`` (descending raw logits) of the tokens ``s`` keeps, or ``None``
    when the window cannot decide it (a setting needs the normaliser or tokens beyond the window)."""
    if sampling.uses_extras(s):
        return None  # the penalties and the other samplers need the whole row (and the context)
    if s.temperature <= 0:
        return np.arange(top.size) == 0  # greedy: the argmax, first in the window
    scaled = top.astype(np.float32) / np.float32(s.temperature)
    keep = np.ones(top.size, bool)
    k_on = 0 < s.top_k < vocab
    if k_on:
        if s.top_k > top.size or top[s.top_k - 1] <= top[-1]:
            return None  # the top-k set may reach past the window (a token beyond it could tie the k-th)
        keep &= scaled >= scaled[s.top_k - 1]
    if s.top_p < 1:
        if k_on:
            probs = np.where(keep, np.exp(scaled - scaled[0]), 0.0)
            probs /= probs.sum()
        elif s.temperature == 1:
            probs = np.exp(top.astype(np.float64) - lse)  # the whole row's normaliser, from the log-sum-exp
        else:
            return None  # the normaliser at this temperature needs the whole row
        mass_before = np.cumsum(probs) - probs
        keep_p = mass_before < s.top_p
        keep_p[0] = True
        if not k_on and keep_p.all():
            return None  # the nucleus may reach past the window
        keep &= scaled >= scaled[keep & keep_p].min()
    if s.min_p > 0:
        keep &= np.exp(scaled - scaled[0]) >= s.min_p
    elif not k_on and s.top_p >= 1:
        return None  # every token of the vocabulary stays
    return keep


@dataclasses.dataclass(frozen=True)
class Trace:
    """What the sampler saw at each step of each row; steps ``i >= lengths[b]`` are padding.

    The window (``top_ids``, ``top_logits``, ``logsumexp``, ``entropy``) is always stored. Full raw
    logits come from :meth:`step_logits`, :meth:`row_logits` or :attr:`logits`: stored for a full
    trace, otherwise recomputed exactly with one model forward (``graphdef`` + ``params``) and cached.
    Settings are per row. ``params`` is a reference, not a copy: keep the weights unchanged while
    the trace is in use. Build one from full logits with :meth:`from_logits`. Of a constrained
    generation (``allowed_after``) every logit is the masked one the sampler saw (``-inf`` where the
    constraint forbade a token); :meth:`constraint_mass` says how much of the model's own probability
    that kept.
    """

    prompt_ids: list[list[int]]  # B prompts' token ids (BOS first)
    token_ids: np.ndarray  # [B, N] int32, the chosen tokens
    lengths: np.ndarray  # [B] int32, real steps per row
    settings: list[SamplingSettings]  # [B]
    seeds: list[int]  # [B]
    eos_id: int | None
    vocab_size: int
    top_ids: np.ndarray  # [B, N, K] int32, by descending raw logit (ties: lower id first)
    top_logits: np.ndarray  # [B, N, K] float32, raw logits of top_ids
    logsumexp: np.ndarray  # [B, N] float32, log-sum-exp of the whole raw row
    entropy: np.ndarray  # [B, N] float32, entropy (nats) of the raw row: temperature 1, no filter
    full_logits: np.ndarray | None = None  # [B, N, V] float32, only for trace="full"
    stop_ids: tuple[int, ...] = ()  # every id that ends a row (EOS and end-of-turn tokens); () means (eos_id,)
    templated: bool = False  # the prompts are the model's chat template around the user's messages
    graphdef: nnx.GraphDef | None = None  # with params: the model that recomputes full logits
    params: nnx.State | None = None
    allowed_after: Callable[[list[int]], Collection[int]] | None = None  # constrained: the ids allowed after a context
    _cache: dict[Any, np.ndarray] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_logits(cls, prompt_ids: list[list[int]], token_ids: np.ndarray, lengths: np.ndarray, logits: np.ndarray,
                    settings: list[SamplingSettings], seeds: list[int], eos_id: int | None,
                    top_k: int = TRACE_TOP_K) -> Trace:
        """A full trace from raw logits ``[B, N, V]`` (synthetic traces, tests).

        Usage: ``Trace.from_logits([[2]], ids, np.array([n]), logits, [SamplingSettings()], [0], eos_id=3)``
        """
        logits = np.asarray(logits, np.float32)
        order = np.argsort(-logits, axis=-1, kind="stable")[..., :min(top_k, logits.shape[-1])]
        lse = np.asarray(jax.nn.logsumexp(logits, axis=-1))
        entropy = np.asarray(sampling.entropy(logits))
        return cls(prompt_ids=prompt_ids, token_ids=np.asarray(token_ids), lengths=np.asarray(lengths),
                   settings=list(settings), seeds=list(seeds), eos_id=eos_id, vocab_size=logits.shape[-1],
                   top_ids=order.astype(np.int32), top_logits=np.take_along_axis(logits, order, axis=-1),
                   logsumexp=lse, entropy=entropy, full_logits=logits)

    @property
    def stops(self) -> tuple[int, ...]:
        """Every id that ends a row: ``stop_ids``, else the EOS alone (none without one)."""
        return self.stop_ids or (() if self.eos_id is None else (self.eos_id,))

    def is_stop(self, token_id: int) -> bool:
        """Whether ``token_id`` ends a row (the model's EOS or an end-of-turn token)."""
        return int(token_id) in self.stops

    @property
    def num_rows(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_steps(self) -> int:
        """N, the stored steps (the longest row)."""
        return self.token_ids.shape[1]

    @property
    def window_size(self) -> int:
        """K, the raw logits kept per step."""
        return self.top_ids.shape[-1]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored per-step arrays (window, log-sum-exp, entropy, tokens, full logits)."""
        arrays = (self.token_ids, self.top_ids, self.top_logits, self.logsumexp, self.entropy, self.full_logits)
        return sum(a.nbytes for a in arrays if a is not None)

    def context_ids(self, row: int, step: int) -> list[int]:
        """Token ids the model had seen before choosing ``token_ids[row, step]``."""
        return [*self.prompt_ids[row], *self.token_ids[row, :step].tolist()]

    def _check_step(self, row: int, step: int) -> None:
        if not 0 <= step < int(self.lengths[row]):
            raise ValueError(f"step must be between 0 and {int(self.lengths[row]) - 1} for row {row}, got {step}")

    def step_logits(self, row: int, step: int) -> np.ndarray:
        """Exact raw logits ``[V]`` from which ``token_ids[row, step]`` was drawn.

        Usage: ``trace.step_logits(0, 3).argmax()``
        """
        self._check_step(row, step)
        return self.row_logits(row)[step]

    def row_logits(self, row: int) -> np.ndarray:
        """Exact raw logits ``[N, V]`` of every step of ``row`` (padding steps are zeros); one model
        forward over the row's context for a compact trace, cached. Usage: ``trace.row_logits(1)``"""
        if self.full_logits is not None:
            return self.full_logits[row]
        if "all" in self._cache:
            return self._cache["all"][row]
        if row not in self._cache:
            self._cache[row] = self._recompute([row])[0]
        return self._cache[row]

    @property
    def logits(self) -> np.ndarray:
        """Exact raw logits ``[B, N, V]`` of every step (padding steps are zeros), for back-compat and
        small models: stored for a full trace, else one batched model forward, cached. Memory grows
        with the vocabulary: prefer :meth:`step_logits` or the window for large models."""
        if self.full_logits is not None:
            return self.full_logits
        if "all" not in self._cache:
            self._cache["all"] = self._recompute(list(range(self.num_rows)))
        return self._cache["all"]

    def constraint_mass(self, row: int) -> np.ndarray:
        """How much of the model's own probability (temperature 1, before any rule) the constraint
        allowed at each step of ``row`` ``[L]``: 1 minus it is what renormalising cost. One forward.

        Usage: ``1 - trace.constraint_mass(0)  # the probability the grammar took away at each step``
        """
        if self.allowed_after is None:
            raise ValueError("this trace is not of a constrained generation (generate(..., constrain='grammar'))")
        key = ("constraint_mass", row)
        if key not in self._cache:
            n = int(self.lengths[row])
            raw = self._recompute([row], constrained=False)[0][:n]
            probs = np.exp(raw - raw.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            self._cache[key] = (probs * self._allowed(row)[:n]).sum(-1)
        return self._cache[key]

    def _allowed(self, row: int) -> np.ndarray:
        """``[N, V]`` bool: what the constraint allowed at each step of ``row`` (everything past its end), cached."""
        key = ("allowed", row)
        if key not in self._cache:
            mask = np.ones((self.num_steps, self.vocab_size), bool)
            for step in range(int(self.lengths[row])):
                mask[step] = allowed_mask(self.allowed_after, self.context_ids(row, step), self.vocab_size)
            self._cache[key] = mask
        return self._cache[key]

    def _recompute(self, rows: list[int], constrained: bool = True) -> np.ndarray:
        """Raw logits ``[len(rows), N, V]``: one forward over the rows' contexts, left-padded as in
        prefill; masked as the sampler saw them in a constrained generation (unless ``constrained=False``)."""
        if self.graphdef is None or self.params is None:
            raise ValueError("this trace keeps only the top-K window and no model to recompute full logits")
        contexts = [self.context_ids(r, max(int(self.lengths[r]) - 1, 0)) for r in rows]
        size = _pow2(max(len(c) for c in contexts), minimum=MIN_SLOTS)
        tokens = np.zeros((_pow2(len(rows)), size), np.int32)  # [B', S]
        pad = np.full((tokens.shape[0],), size, np.int32)
        for i, ids in enumerate(contexts):
            tokens[i, size - len(ids):] = ids
            pad[i] = size - len(ids)
        logits = np.asarray(_context_logits(self.graphdef, self.params, tokens, pad))  # [B', S, V]
        out = np.zeros((len(rows), self.num_steps, self.vocab_size), np.float32)
        for i, r in enumerate(rows):
            n = int(self.lengths[r])
            out[i, :n] = logits[i, size - n:] if n else 0.0  # step j's logits sit after context token P + j - 1
            if constrained and self.allowed_after is not None:
                out[i] = np.where(self._allowed(r), out[i], sampling.NEG_INF)
        return out

    def stages(self, row: int, step: int, settings: SamplingSettings | None = None) -> sampling.Stages:
        """The sampling stages at one step over the exact full logits, with the row's settings or others,
        as the decode loop ran them: with the context, XTC's coin and (Mirostat) the replayed μ."""
        s = settings or self.settings[row]
        return sampling.filter_stages(self.step_logits(row, step), s, self._context(row, step), num_generated=step,
                                      **self._step_state(row, [step], s, scalar=True))

    def row_stages(self, row: int, settings: SamplingSettings | None = None) -> sampling.Stages:
        """The sampling stages ``[L, V]`` of every step of ``row`` in one call, each step with its
        context, XTC's coin and (Mirostat) the replayed μ: what :meth:`stages` gives step by step.

        Usage: ``np.isfinite(trace.row_stages(0).final).sum(-1)  # tokens kept per step``
        """
        s = settings or self.settings[row]
        n = int(self.lengths[row])
        steps = np.arange(_pow2(n))  # padded to a power of two: few shapes, few compiles; dropped below
        last = max(n - 1, 0)  # padding steps reuse the last real step's context (it fits the slots)
        contexts = np.stack([self._context(row, min(i, last), size=self._context_size(row)) for i in steps])  # [L', T]
        logits = np.zeros((steps.size, self.vocab_size), np.float32)
        logits[:n] = self.row_logits(row)[:n]
        padded = sampling.filter_stages(logits, s, contexts, num_generated=steps, xtc_coin=self._xtc_coins(row, steps),
                                        stop_ids=self._stop_array())
        stages = sampling.Stages(*(stage[:n] for stage in padded))
        if s.adaptive_target > 0 and n:
            shaped = sampling.apply_adaptive_p(_adaptive_input(stages, s), s.adaptive_target,
                                               self.adaptive_states(row, s, stages), s.adaptive_decay)
            stages = stages._replace(adaptive_p=shaped, mirostat=shaped)
        if s.mirostat_tau <= 0 or not n:
            return stages
        mu = self._mirostat(row, s, stages).mu
        pre = _mirostat_input(stages, s)
        return stages._replace(mirostat=sampling.apply_mirostat(pre, s.mirostat_tau, mu))

    def mirostat(self, row: int, settings: SamplingSettings | None = None) -> MirostatReplay:
        """Mirostat v2 replayed over ``row``: μ before each step and the sampled token's surprise, as
        the decode loop computed them (the loop keeps no μ; the chain and its update are rerun here).

        Usage: ``m = trace.mirostat(0); m.surprise.mean()  # near m.tau over a long run``
        """
        s = settings or self.settings[row]
        if s.mirostat_tau <= 0:
            raise ValueError(f"row {row} does not use Mirostat (mirostat_tau is {s.mirostat_tau:g})")
        key = ("mirostat", row, s)
        if key not in self._cache:
            self._cache[key] = self._mirostat(row, s, self.row_stages(row, dataclasses.replace(s, mirostat_tau=0.0)))
        return self._cache[key]

    def adaptive_states(self, row: int, settings: SamplingSettings | None = None,
                        stages: sampling.Stages | None = None) -> np.ndarray:
        """Adaptive-p's history ``(weighted sum, total weight)`` before each step of ``row`` ``[L, 2]``, as
        the decode loop carried it (replayed: the loop keeps none); ``stages``: the row's, if at hand.

        Usage: ``w, t = trace.adaptive_states(0).T; 2 * target - w / t  # the adapted target at each step``
        """
        s = settings or self.settings[row]
        if s.adaptive_target <= 0:
            raise ValueError(f"row {row} does not use adaptive-p (adaptive_target is {s.adaptive_target:g})")
        key = ("adaptive", row, s)
        if key not in self._cache:
            n = int(self.lengths[row])
            stages = self.row_stages(row, dataclasses.replace(s, adaptive_target=0.0)) if stages is None else stages
            size = _pow2(n)  # few lengths, few compiles; the padded steps are dropped
            before = np.zeros((size, self.vocab_size), np.float32)
            before[:n] = np.asarray(_adaptive_input(stages, s))
            tokens = np.zeros(size, np.int32)
            tokens[:n] = self.token_ids[row, :n]
            self._cache[key] = np.asarray(_adaptive_replay(before, tokens, jnp.float32(s.adaptive_target),
                                                           jnp.float32(s.adaptive_decay)))[:n]
        return self._cache[key]

    def _mirostat(self, row: int, s: SamplingSettings, stages: sampling.Stages | None) -> MirostatReplay:
        """The replay from the stages of every step (Mirostat's input is the same whatever its μ)."""
        n = int(self.lengths[row])
        mu = surprise = np.zeros(0, np.float32)
        if n:
            size = _pow2(n)  # few lengths, few compiles; the padded steps are dropped
            pre = np.full((size, self.vocab_size), 0.0, np.float32)
            pre[:n] = np.asarray(_mirostat_input(stages, s))
            tokens = np.zeros(size, np.int32)
            tokens[:n] = self.token_ids[row, :n]
            mu, surprise = (np.asarray(a)[:n] for a in _mirostat_replay(pre, tokens, jnp.float32(s.mirostat_tau),
                                                                        jnp.float32(s.mirostat_eta)))
        return MirostatReplay(mu=mu, surprise=surprise, tau=float(s.mirostat_tau), eta=float(s.mirostat_eta))

    def _step_state(self, row: int, steps: list[int], s: SamplingSettings, scalar: bool = False) -> dict[str, Any]:
        """The random and carried inputs of ``steps``: XTC's coin, Mirostat's μ and adaptive-p's history
        where they are on, and the stop ids."""
        state = dict(xtc_coin=self._xtc_coins(row, np.asarray(steps)))
        if s.mirostat_tau > 0:
            state["mu"] = self.mirostat(row, s).mu[steps]
        if s.adaptive_target > 0:
            state["adaptive"] = self.adaptive_states(row, s)[steps]
        return {**{k: v[0] if scalar else v for k, v in state.items()}, "stop_ids": self._stop_array()}

    def _stop_array(self) -> np.ndarray:
        """:attr:`stops` as the ``[S]`` array the chain takes (``min_new_tokens`` removes them until then)."""
        return np.asarray(self.stops, np.int32).reshape(-1)

    def _xtc_coins(self, row: int, steps: np.ndarray) -> np.ndarray:
        """XTC's uniform draw at each of ``steps`` ``[n]``: the decode loop's, from the row's seed."""
        key = rng.row_key(jnp.asarray(rng.seed_words(self.seeds[row])))
        draw = jax.vmap(lambda i: rng.coin(key, i))
        return np.asarray(draw(jnp.asarray(steps, jnp.int32))).reshape(-1)

    def _context_size(self, row: int) -> int:
        """Slots of every padded context of ``row``: a power of two, so that few shapes compile."""
        return _pow2(len(self.prompt_ids[row]) + max(int(self.lengths[row]) - 1, 0), minimum=MIN_SLOTS)

    def _context(self, row: int, step: int, size: int | None = None) -> np.ndarray:
        """The ids seen before step ``step`` of ``row``, right-aligned in ``size`` slots after ``-1``
        padding (the loop's layout; the penalties ignore negative ids)."""
        ids = self.context_ids(row, step)
        out = np.full(size or self._context_size(row), -1, np.int32)
        out[out.size - len(ids):] = ids
        return out

    def window_is_exact(self, row: int, step: int, settings: SamplingSettings | None = None) -> bool:
        """Whether ``settings`` (default: the row's) keep only tokens inside the stored window, in a
        set the window decides: then :meth:`kept_distribution` needs no model call.

        True for a window of the whole vocabulary, greedy, top-k below K, and top-p at temperature 1 or
        min-p whose kept set ends inside the window; never when the last kept logit ties the window's
        last (a token beyond the window could tie it too).

        Usage: ``trace.window_is_exact(0, 3, SamplingSettings(0.8, 50))``
        """
        self._check_step(row, step)
        return self.window_size >= self.vocab_size or self._window_mask(row, step, settings) is not None

    def _window_mask(self, row: int, step: int, settings: SamplingSettings | None) -> np.ndarray | None:
        """The kept tokens as a mask over the window ``[K]``, or ``None`` when the window cannot decide."""
        s = settings or self.settings[row]
        top = self.top_logits[row, step]
        keep = _window_kept(top, float(self.logsumexp[row, step]), self.vocab_size, s)
        if keep is None or (s.temperature > 0 and top[keep].min() <= top[-1]):
            return None
        return keep

    def kept_distribution(self, row: int, step: int,
                          settings: SamplingSettings | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``(ids [n], probs [n])`` of the tokens ``settings`` keep, by descending probability:
        from the window when :meth:`window_is_exact`, else from :meth:`step_logits`.

        Usage: ``ids, probs = trace.kept_distribution(0, 3, SamplingSettings(1.2, 0, 0.9))``
        """
        self._check_step(row, step)
        s = settings or self.settings[row]
        if self.window_size >= self.vocab_size:  # the window is the whole row, reordered
            logits = np.empty(self.vocab_size, np.float32)
            logits[self.top_ids[row, step]] = self.top_logits[row, step]
            return _kept(sampling.filter_stages(logits, s, self._context(row, step), num_generated=step,
                                                **self._step_state(row, [step], s, scalar=True)).final)
        keep = self._window_mask(row, step, s)
        if keep is None:
            return _kept(self.stages(row, step, s).final)
        scaled = self.top_logits[row, step][keep] / s.temperature if s.temperature > 0 else np.zeros(1, np.float32)
        return self.top_ids[row, step][keep].astype(np.int32), _softmax(scaled)


def allowed_mask(allowed_after: Callable[[list[int]], Collection[int]], ids: list[int], vocab: int) -> np.ndarray:
    """``[vocab]`` bool: the tokens a constraint allows after the context ``ids`` (ids past the vocabulary
    dropped); the decode loop's mask and the trace's replay of it.

    Usage: ``allowed_mask(allowed_after, [1, 17, 42], 2048)``
    """
    mask = np.zeros(vocab, bool)
    mask[[i for i in allowed_after(ids) if i < vocab]] = True
    return mask


def _adaptive_input(stages: sampling.Stages, s: SamplingSettings) -> jax.Array:
    """The logits entering adaptive-p (the stage before it)."""
    return getattr(stages, sampling.stage_before("adaptive_p", s.order))


def _mirostat_input(stages: sampling.Stages, s: SamplingSettings) -> jax.Array:
    """The logits entering Mirostat (the stage before it: it is last in every chain)."""
    return getattr(stages, sampling.stage_before("mirostat", s.order))


def _kept(final: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, probs)`` of the tokens kept in filtered logits ``final [V]``, by descending probability."""
    final = np.asarray(final)
    order = np.flatnonzero(np.isfinite(final))
    order = order[np.argsort(-final[order], kind="stable")]
    return order.astype(np.int32), _softmax(final[order])


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities of finite logits ``[n]`` (NumPy: no compile per kept-set size)."""
    weights = np.exp(logits.astype(np.float64) - logits.max())
    return (weights / weights.sum()).astype(np.float32)
