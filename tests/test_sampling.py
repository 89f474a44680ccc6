"""The sampling rules: temperature → top-k → top-p → min-p, greedy at temperature 0."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from txtgen_nb.sampling import (entropy, filter_logits, filter_logits_fast, filter_stages, probabilities, sample_token,
                                 sort_descending)

# XLA on CPU flushes subnormals to zero, so keep them out of the generated logits
finite = st.floats(-20, 20, width=32, allow_subnormal=False)
logit_arrays = arrays(np.float32, st.integers(2, 40), elements=finite)


def kept(filtered) -> np.ndarray:
    return np.isfinite(np.asarray(filtered))


@settings(max_examples=60, deadline=None)
@given(logit_arrays, st.integers(0, 50))
def test_top_k_keeps_every_token_at_least_kth_largest(logits, k):
    mask = kept(filter_logits(logits, temperature=1.0, top_k=k))
    if k == 0 or k >= logits.size:
        assert mask.all()
    else:
        kth = np.sort(logits)[::-1][k - 1]
        np.testing.assert_array_equal(mask, logits >= kth)
        assert mask.sum() >= k


@settings(max_examples=60, deadline=None)
@given(logit_arrays, st.floats(0.0, 1.0))
def test_top_p_keeps_smallest_prefix_reaching_p(logits, p):
    mask = kept(filter_logits(logits, temperature=1.0, top_p=p))
    assert mask.any()
    if p >= 1.0:
        assert mask.all()
        return
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    order = np.argsort(-logits, kind="stable")
    # every kept token is at least as likely as every removed one
    if (~mask).any():
        assert logits[mask].min() > logits[~mask].max()
    kept_mass = probs[mask].sum()
    assert kept_mass >= p - 1e-5 or mask.all()
    # removing the least likely kept token (and its ties) drops below p: the set is smallest
    smallest_kept = logits[mask].min()
    without = probs[mask & (logits > smallest_kept)].sum()
    assert without < p + 1e-5
    assert mask[order[0]]


@settings(max_examples=60, deadline=None)
@given(logit_arrays, st.floats(0.0, 1.0))
def test_min_p_keeps_tokens_relative_to_top(logits, m):
    mask = kept(filter_logits(logits, temperature=1.0, min_p=m))
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    if m == 0:
        assert mask.all()
    else:
        expected = probs >= m * probs.max() * (1 - 1e-5)
        assert mask[np.argmax(logits)]
        assert (mask <= expected).all()


@settings(max_examples=40, deadline=None)
@given(logit_arrays, st.floats(0.05, 3.0), st.integers(0, 10), st.floats(0.0, 1.0), st.floats(0.0, 0.5))
def test_pipeline_order_and_at_least_one_token(logits, t, k, p, m):
    stages = filter_stages(logits, temperature=t, top_k=k, top_p=p, min_p=m)
    np.testing.assert_allclose(np.asarray(stages.temperature), logits / np.float32(t), rtol=1e-5, atol=1e-5)
    masks = [kept(s) for s in (stages.temperature, stages.top_k, stages.top_p, stages.min_p)]
    for before, after in zip(masks, masks[1:]):
        assert (after <= before).all()  # each stage only removes
    assert masks[-1].any()
    np.testing.assert_array_equal(np.asarray(filter_logits(logits, temperature=t, top_k=k, top_p=p, min_p=m)),
                                  np.asarray(stages.min_p))


def test_top_p_computed_after_temperature_and_top_k():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    # top-k 2 renormalises to [0.625, 0.375]; top-p 0.6 then keeps only the first
    assert kept(filter_logits(logits, temperature=1.0, top_k=2, top_p=0.6)).tolist() == [True, False, False, False]
    # without top-k, 0.6 needs two tokens (0.5 < 0.6 <= 0.8)
    assert kept(filter_logits(logits, temperature=1.0, top_p=0.6)).tolist() == [True, True, False, False]
    # a high temperature flattens the distribution, so top-p needs more tokens
    assert kept(filter_logits(logits, temperature=5.0, top_p=0.6)).sum() == 3


def test_temperature_zero_is_greedy():
    logits = np.array([[1.0, 3.0, 2.0], [5.0, -1.0, 4.9]], np.float32)
    filtered = filter_logits(logits, temperature=0.0, top_k=0, top_p=1.0)
    np.testing.assert_array_equal(kept(filtered), [[False, True, False], [True, False, False]])
    tokens = sample_token(jax.random.key(0), logits, temperature=0.0)
    np.testing.assert_array_equal(np.asarray(tokens), [1, 0])


def test_settings_broadcast_per_row():
    logits = np.tile(np.arange(10, dtype=np.float32), (3, 1))
    mask = kept(filter_logits(logits, temperature=1.0, top_k=np.array([1, 3, 0])))
    assert mask.sum(axis=-1).tolist() == [1, 3, 10]


def test_sample_token_draws_from_filtered_distribution():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1], np.float32))
    keys = jax.random.split(jax.random.key(1), 4000)
    draws = np.asarray(jax.vmap(lambda k: sample_token(k, logits, temperature=1.0, top_k=3))(keys))
    counts = np.bincount(draws, minlength=4) / draws.size
    assert counts[3] == 0
    np.testing.assert_allclose(counts[:3], np.array([0.4, 0.3, 0.2]) / 0.9, atol=0.03)


def test_changing_settings_never_recompiles():
    f = jax.jit(lambda key, logits, t, k, p, m: sample_token(key, logits, temperature=t, top_k=k, top_p=p, min_p=m))
    logits = np.random.default_rng(0).normal(size=(2, 50)).astype(np.float32)
    for t, k, p, m in [(0.8, 50, 1.0, 0.0), (0.0, 0, 0.5, 0.1), (1.7, 3, 0.9, 0.0), (0.3, 30, 0.8, 0.05)]:
        f(jax.random.key(0), logits, np.float32(t), np.int32(k), np.float32(p), np.float32(m))
    assert f._cache_size() == 1


def test_probabilities_and_entropy():
    filtered = filter_logits(np.zeros(4, np.float32), temperature=1.0, top_k=2)
    np.testing.assert_allclose(np.asarray(probabilities(filtered)), [0.25] * 4)  # ties are all kept
    filtered = np.array([0.0, 0.0, -np.inf, -np.inf], np.float32)
    np.testing.assert_allclose(np.asarray(probabilities(filtered)), [0.5, 0.5, 0, 0])
    assert float(entropy(filtered)) == pytest.approx(np.log(2), rel=1e-5)


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(2, 40)),
              elements=st.sampled_from([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0]) | finite),
       st.floats(0.0, 2.0), st.integers(0, 45), st.floats(0.0, 1.0), st.floats(0.0, 0.3), st.integers(1, 10))
def test_fast_filter_equals_reference(logits, t, k, p, m, cap):
    """The decode loop's sort-free filter gives exactly the reference result, ties included."""
    fast = filter_logits_fast(logits, temperature=t, top_k=k, top_p=p, min_p=m, cap=cap)
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(filter_logits(logits, temperature=t, top_k=k,
                                                                              top_p=p, min_p=m)))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 70)),
              elements=st.sampled_from([-np.inf, np.inf, -0.0, 0.0, -1e-38, 1e-38, -2.5, 2.5, -3e38, 3e38, 1.0])
              | st.floats(-1e6, 1e6, width=32)))
def test_sort_descending_gives_the_values_of_a_float_sort(x):
    got = np.asarray(sort_descending(x))
    assert np.array_equal(got, -np.sort(-x, axis=-1))  # equal values (-0.0 == 0.0), -inf and inf included
    assert np.array_equal(np.sort(got.view(np.int32), axis=-1), np.sort(x.view(np.int32), axis=-1))  # same bits
