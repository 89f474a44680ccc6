"""The compact trace: its window, exact recomputed logits, window exactness and bucketed lengths."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import given, settings as hyp_settings, strategies as st

from txtgen_nb import SamplingSettings, generate, load_model_and_tokenizer, sampling
from txtgen_nb.generation import (
    _decode_loop, _prefill_chunk, _start, _trace_layout, compiled_programs, default_trace_k,
)
from txtgen_nb.trace import Trace, TraceLayout, record_step, trace_buffers

from conftest import assert_the_loop_drew_from

PROMPTS = ["", "Once upon a time", "The little dog ran to the park and saw a big red ball. Then"]
ROW_SETTINGS = [SamplingSettings(0.0, 0), SamplingSettings(0.8, 50, 0.9), SamplingSettings(1.0, 0, 0.9),
                SamplingSettings(1.5, 0, 1.0, 0.05), SamplingSettings(1.2, 0, 1.0), SamplingSettings(0.7, 300, 0.95)]


@pytest.fixture(scope="module")
def demo():
    return load_model_and_tokenizer()


@pytest.fixture(scope="module")
def traces(demo):
    """The same batch (prompts of different lengths, so left padding) traced compact and full."""
    model, params, tok, _ = demo
    prompts = [PROMPTS[i % 3] for i in range(len(ROW_SETTINGS))]
    kwargs = dict(settings=ROW_SETTINGS, seed=list(range(len(ROW_SETTINGS))), max_new_tokens=40)
    compact = generate(model, params, tok, prompts, trace=True, **kwargs)
    full = generate(model, params, tok, prompts, trace="full", **kwargs)
    assert compact.new_token_ids == full.new_token_ids
    return compact.trace, full.trace


def reference(logits: np.ndarray, s: SamplingSettings) -> np.ndarray:
    """Probabilities ``[V]`` after filtering, straight from the sampler's own functions."""
    return np.asarray(sampling.probabilities(sampling.filter_stages(logits, s).min_p))


def as_dense(ids: np.ndarray, probs: np.ndarray, vocab: int) -> np.ndarray:
    dense = np.zeros(vocab, np.float32)
    dense[ids] = probs
    return dense


def test_window_holds_the_largest_logits_log_sum_exp_and_entropy(traces):
    compact, full = traces
    k = default_trace_k(compact.vocab_size)
    assert compact.full_logits is None and compact.top_ids.shape == (*compact.token_ids.shape, k)
    for row in range(compact.num_rows):
        for step in range(int(compact.lengths[row])):
            logits = full.full_logits[row, step]
            ids = compact.top_ids[row, step]
            np.testing.assert_allclose(compact.top_logits[row, step], logits[ids], atol=1e-5)
            assert compact.top_logits[row, step][-1] >= np.sort(logits)[-k] - 1e-5
            lse = np.logaddexp.reduce(logits.astype(np.float64))
            assert compact.logsumexp[row, step] == pytest.approx(lse, abs=1e-4)
            assert compact.entropy[row, step] == pytest.approx(float(sampling.entropy(logits)), abs=1e-4)


@pytest.mark.parametrize("temperature", [0.0, 0.8, 1.3])
def test_one_top_k_for_the_window_and_the_sampler_stays_exact(temperature):
    """The decode step takes one ``lax.top_k`` of the raw row for the trace's window and the classic
    sampler (``top_ids``); both stay exact, ties by lower id, greedy included."""
    logits = np.round(np.random.default_rng(0).normal(size=(3, 500)), 1).astype(np.float32)  # many ties

    def step(x, k, shared=True):
        top = jax.lax.top_k(x, k)
        filtered = sampling.filter_logits_fast(x, temperature=temperature, top_k=50, top_p=0.9,
                                               top_ids=top[1] if shared else None)
        return filtered, record_step(trace_buffers(TraceLayout(steps=2, top_k=k, full=False), 3, 500), 1, x, top)

    k = sampling.TOP_K_CAP  # the demo's window: the sampler's own top_k
    top_ks = [jax.jit(step, static_argnums=(1, 2)).lower(logits, k, shared).as_text().count("chlo.top_k")
              for shared in (True, False)]
    assert top_ks[0] == top_ks[1] - 1  # one top_k fewer in the step (the other is the sorting fallback's)
    filtered, buffers = jax.jit(step, static_argnums=1)(logits, k)
    order = np.argsort(-logits, axis=-1, kind="stable")[:, :k]  # [3, k]
    np.testing.assert_array_equal(np.asarray(buffers["top_ids"][:, 1]), order)
    np.testing.assert_array_equal(np.asarray(buffers["top_logits"][:, 1]), np.take_along_axis(logits, order, -1))
    np.testing.assert_array_equal(np.asarray(filtered), np.asarray(sampling.filter_logits(
        logits, temperature=temperature, top_k=50, top_p=0.9)))


def test_recomputed_logits_equal_the_ones_drawn_from(traces):
    compact, full = traces
    recomputed = compact.logits  # one batched forward over every row's context
    assert recomputed.shape == full.full_logits.shape == (compact.num_rows, compact.num_steps, compact.vocab_size)
    for row in range(compact.num_rows):
        n = int(compact.lengths[row])
        assert n > 0
        np.testing.assert_allclose(recomputed[row, :n], full.full_logits[row, :n], atol=2e-4, rtol=1e-4)
        np.testing.assert_array_equal(recomputed[row, :n].argmax(-1), full.full_logits[row, :n].argmax(-1))
        assert (recomputed[row, n:] == 0).all() and (full.full_logits[row, n:] == 0).all()
    greedy = int(compact.lengths[0])
    np.testing.assert_array_equal(compact.token_ids[0, :greedy], recomputed[0, :greedy].argmax(-1))


def test_one_row_recomputes_alone_and_is_cached(demo):
    model, params, tok, _ = demo
    trace = generate(model, params, tok, ["Once upon a time", "Hi"], max_new_tokens=10, seed=[1, 2], trace=True).trace
    row = trace.row_logits(1)
    assert row is trace.row_logits(1) and 1 in trace._cache and "all" not in trace._cache
    np.testing.assert_allclose(trace.step_logits(1, 3), row[3])
    np.testing.assert_allclose(trace.logits[1], row, atol=2e-4)
    with pytest.raises(ValueError, match="step must be between 0 and"):
        trace.step_logits(0, int(trace.lengths[0]))


def test_kept_distribution_is_exact_from_window_or_recompute(traces):
    compact, full = traces
    exact_seen = {True: 0, False: 0}
    model_free = dataclasses.replace(compact, graphdef=None, params=None)
    for row in range(compact.num_rows):
        for step in range(0, int(compact.lengths[row]), 3):
            for s in [None, *ROW_SETTINGS]:
                want = reference(full.full_logits[row, step], s or compact.settings[row])
                ids, probs = compact.kept_distribution(row, step, s)
                np.testing.assert_allclose(as_dense(ids, probs, compact.vocab_size), want, atol=1e-5)
                assert (np.diff(probs) <= 1e-7).all()
                exact = compact.window_is_exact(row, step, s)
                exact_seen[exact] += 1
                if exact:  # the window alone decides: no model needed
                    ids2, _ = model_free.kept_distribution(row, step, s)
                    np.testing.assert_array_equal(ids, ids2)
    assert exact_seen[True] > 0 and exact_seen[False] > 0
    assert not compact.window_is_exact(1, 0, SamplingSettings(1.2, 0, 1.0))  # whole vocabulary kept
    assert compact.window_is_exact(1, 0, SamplingSettings(0.8, 50, 0.9))
    with pytest.raises(ValueError, match="no model to recompute"):
        model_free.kept_distribution(1, 0, SamplingSettings(1.2, 0, 1.0))


@st.composite
def window_cases(draw):
    vocab = 24  # one shape: no compile per example
    k = draw(st.sampled_from([1, 3, 8, 23, 24]))
    ties = draw(st.booleans())  # integer logits: many ties at the window's edge
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = np.round(rng.normal(size=vocab) * 2) if ties else rng.normal(size=vocab) * draw(st.sampled_from([0.5, 3.0]))
    s = SamplingSettings(temperature=draw(st.sampled_from([0.0, 0.5, 1.0, 1.7])), top_k=draw(st.integers(0, vocab + 2)),
                         top_p=draw(st.sampled_from([1.0, 0.99, 0.9, 0.5, 0.1])),
                         min_p=draw(st.sampled_from([0.0, 0.05, 0.3])))
    return logits.astype(np.float32), k, s


@hyp_settings(max_examples=200, deadline=None)
@given(window_cases())
def test_window_exact_means_equal_to_full_filtering(case):
    logits, k, s = case
    full = Trace.from_logits([[1]], np.array([[int(logits.argmax())]]), np.array([1]), logits[None, None], [s], [0],
                             eos_id=None, top_k=k)
    compact = dataclasses.replace(full, full_logits=None)  # window only, no model
    want = reference(logits, s)
    if k == logits.size:
        assert compact.window_is_exact(0, 0)
    if compact.window_is_exact(0, 0):
        ids, probs = compact.kept_distribution(0, 0)
        np.testing.assert_allclose(as_dense(ids, probs, logits.size), want, atol=1e-5)
    ids, probs = full.kept_distribution(0, 0)
    np.testing.assert_allclose(as_dense(ids, probs, logits.size), want, atol=1e-5)


def test_trace_buffer_follows_new_tokens_in_power_of_two_buckets(demo):
    model, params, tok, config = demo
    _start.clear_cache()  # count compiles from here, whatever earlier tests compiled
    _prefill_chunk.clear_cache()
    _decode_loop.clear_cache()
    generate(model, params, tok, "Once upon", max_new_tokens=9, trace=True)
    compiled = compiled_programs()
    for n in (1, 10, 17, 100):  # every length up to 128 steps: one bucket, as the decode loop
        trace = generate(model, params, tok, "Once upon", max_new_tokens=n, seed=n, trace=True).trace
        assert trace.top_ids.shape[1] <= n and trace.window_size == default_trace_k(config.vocab_size)
        assert trace.vocab_size == config.vocab_size
    assert compiled_programs() == compiled
    long_context = dataclasses.replace(config, max_len=1024)
    assert [_trace_layout(True, None, n, long_context).steps for n in (5, 128, 129, 300, 2000)] == [
        128, 128, 256, 512, 1024]
    small = generate(model, params, tok, ["Hi"] * 4, max_new_tokens=20, trace=True).trace
    assert small.nbytes < 4 * 20 * (default_trace_k(config.vocab_size) * 8 + 16)
    assert small.nbytes * 10 < 4 * config.max_len * config.vocab_size * 4


def test_full_trace_by_name_or_by_window_size(tiny_model, tiny_tok):
    model, params, config = tiny_model
    by_name = generate(model, params, tiny_tok, "Hello", max_new_tokens=5, trace="full", trace_k=8).trace
    by_k = generate(model, params, tiny_tok, "Hello", max_new_tokens=5, trace=True, trace_k=10**6).trace
    assert by_name.full_logits.shape[-1] == config.vocab_size and by_name.window_size == 8
    assert by_k.window_size == config.vocab_size
    np.testing.assert_allclose(by_name.logits, by_k.logits)
    for bad, fragment in [(dict(trace="yes"), "trace must be True, False or 'full'"),
                          (dict(trace=True, trace_k=0), "trace_k must be an integer >= 1")]:
        with pytest.raises(ValueError, match=fragment):
            generate(model, params, tiny_tok, "Hello", **bad)


# ------------------------------------------------------------------ Mirostat replayed from the trace

MIROSTAT_ROWS = [SamplingSettings(2.0, 0, mirostat_tau=3.0, mirostat_eta=0.2),
                 SamplingSettings(2.0, 0, mirostat_tau=4.0, mirostat_eta=0.2),
                 SamplingSettings(2.0, 0, mirostat_tau=3.0, mirostat_eta=0.3, xtc_threshold=0.1, xtc_probability=0.5,
                                  repetition_penalty=1.2)]


@pytest.fixture(scope="module")
def mirostat_traces(demo):
    """Mirostat rows (one with XTC's coin and a penalty too) at a temperature hot enough for it to act,
    two seeds each, traced compact and full."""
    model, params, tok, _ = demo
    rows = [s for s in MIROSTAT_ROWS for _ in range(2)]
    kwargs = dict(settings=rows, seed=[i % 2 for i in range(len(rows))], max_new_tokens=120)
    compact = generate(model, params, tok, [""] * len(rows), trace=True, **kwargs)
    full = generate(model, params, tok, [""] * len(rows), trace="full", **kwargs)
    assert compact.new_token_ids == full.new_token_ids
    return compact.trace, full.trace


def reference_mirostat(entering: np.ndarray, tokens: np.ndarray, tau: float, eta: float) -> tuple[list, list]:
    """μ before each step and the sampled tokens' surprise, from the documented algorithm in NumPy:
    keep surprise <= μ (and the top token), surprise of the draw, μ -= η (surprise - τ)."""
    mu, mus, surprises = 2 * tau, [], []
    for logits, token in zip(entering.astype(np.float64), tokens):
        bits = -(logits - np.logaddexp.reduce(logits)) / np.log(2)  # -inf logits: +inf surprise
        keep = (bits <= mu) | (np.arange(logits.size) == np.argmax(logits))
        assert keep[token], "the sampled token lies outside Mirostat's truncated set"
        kept = np.where(keep, logits, -np.inf)
        surprise = -(kept[token] - np.logaddexp.reduce(kept)) / np.log(2)
        mus.append(mu)
        surprises.append(surprise)
        mu -= eta * (surprise - tau)
    return mus, surprises


def test_replayed_mu_is_the_one_the_loop_used(mirostat_traces):
    _, trace = mirostat_traces
    for row, s in enumerate(trace.settings):
        n = int(trace.lengths[row])
        replay = trace.mirostat(row)
        entering = np.asarray(trace.row_stages(row, dataclasses.replace(s, mirostat_tau=0.0)).final)  # [L, V]
        mus, surprises = reference_mirostat(entering, trace.token_ids[row, :n], s.mirostat_tau, s.mirostat_eta)
        np.testing.assert_allclose(replay.mu, mus, atol=2e-3)
        np.testing.assert_allclose(replay.surprise, surprises, atol=2e-3)
        assert replay.mu[0] == 2 * s.mirostat_tau and np.ptp(replay.mu) > 1.0  # μ moved: the replay is not its start
        # the loop's own draw, redone with the row's key from the replayed distribution, picks the same token
        final = np.asarray(trace.row_stages(row).final)
        assert_the_loop_drew_from(trace, row, final)


def test_mean_surprise_settles_near_tau(mirostat_traces):
    compact, full = mirostat_traces
    means = {}
    for tau in (3.0, 4.0):
        rows = [r for r, s in enumerate(compact.settings) if s.mirostat_tau == tau and s.xtc_probability == 0]
        means[tau] = np.concatenate([compact.mirostat(r).surprise[20:] for r in rows]).mean()  # after μ settles
        assert means[tau] == pytest.approx(tau, abs=0.5)
        for r in rows:  # the compact trace recomputes the same logits, so the same replay
            np.testing.assert_allclose(compact.mirostat(r).mu, full.mirostat(r).mu, atol=2e-3)
    assert means[4.0] > means[3.0]


def test_mirostat_replay_needs_mirostat_settings(mirostat_traces):
    with pytest.raises(ValueError, match="row 0 does not use Mirostat"):
        mirostat_traces[0].mirostat(0, SamplingSettings(2.0, 0))
