"""Adaptive-p (llama.cpp PR #17927): the rule against a NumPy restatement of ``llama_sampler_adaptive_p_apply``
and ``_accept``, and the decode loop's carried history against the trace's replay of it."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from txtgen_nb import SamplingSettings, generate, load_model_and_tokenizer, sampling

from conftest import assert_the_loop_drew_from

WIDTH, PEAK, SHARPNESS = 0.3, 5.0, 10.0  # llama-sampler.cpp's constants


def reference_adaptive(entering: np.ndarray, tokens: np.ndarray, target: float, decay: float) -> list[np.ndarray]:
    """llama.cpp's adaptive-p step by step: softmax of the candidates, adapted target 2·target − EMA
    (clamped), logits 5 − 10·d²/(1+d) with d = |p − adapted| / 0.3 (masked tokens untouched), then the EMA
    updated with the drawn token's original probability."""
    decay = min(max(decay, 0.0), 0.99)
    weighted, total = target / (1 - decay), 1 / (1 - decay)
    out = []
    for logits, token in zip(entering.astype(np.float64), tokens):
        p = np.exp(logits - np.logaddexp.reduce(logits))
        goal = min(max(target, 0.0), 1.0)
        adapted = min(max(goal if total == 0 else 2 * goal - weighted / total, 0.0), 1.0)
        d = np.abs(p - adapted) / WIDTH
        out.append(np.where(np.isfinite(logits), PEAK - SHARPNESS * d * d / (1 + d), -np.inf))
        weighted, total = p[token] + decay * weighted, 1 + decay * total
    return out


def test_the_rule_and_its_update_equal_llama_cpps():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(12, 40)) * 2).astype(np.float32)
    logits[:, 30:] = -np.inf  # removed by an earlier rule: adaptive-p leaves them removed
    tokens = rng.integers(0, 30, size=12).astype(np.int32)
    for target, decay in ((0.3, 0.9), (0.7, 0.5), (0.5, 1.5)):  # a decay above 0.99 is clamped, as llama.cpp does
        expected = reference_adaptive(logits, tokens, target, decay)
        state = sampling.adaptive_initial_state(target, decay)
        for step in range(len(tokens)):
            ours = np.asarray(sampling.apply_adaptive_p(jnp.asarray(logits[step]), target, state))
            np.testing.assert_allclose(ours[:30], expected[step][:30], rtol=1e-5, atol=1e-5)
            assert np.isneginf(ours[30:]).all()
            state = sampling.adaptive_update(state, jnp.asarray(logits[step]), tokens[step], target, decay)
    off = sampling.apply_adaptive_p(jnp.asarray(logits[0]), 0.0)
    np.testing.assert_array_equal(np.asarray(off), logits[0])  # target 0: off


def test_adaptive_p_is_last_in_every_order_and_refuses_bad_values():
    for order in ("hf", "llama.cpp", "top_k;adaptive-p;min_p;temperature"):
        assert sampling.chain(order)[-2:] == ("adaptive_p", "mirostat")
    with pytest.raises(ValueError, match="adaptive_decay must be between 0 and 0.99"):
        SamplingSettings(adaptive_target=0.5, adaptive_decay=1.2)
    assert SamplingSettings.off(adaptive_target=0.4, min_p=0.05).label() == "T=1 · min-p 0.05 · adaptive-p 0.4"


@pytest.fixture(scope="module")
def traced():
    """One trace per order (a batch shares one), each with a low and a high target."""
    model, params, tok, _ = load_model_and_tokenizer()
    traces = []
    for order in ("hf", "llama.cpp"):
        rows = [SamplingSettings.off(adaptive_target=t, min_p=0.05, order=order) for t in (0.2, 0.6)]
        traces.append(generate(model, params, tok, ["Once upon a time"] * 2, settings=rows, seed=[3, 3],
                               max_new_tokens=40, trace=True).trace)
    return traces


@pytest.mark.parametrize("order", [0, 1], ids=["hf", "llama.cpp"])
def test_the_loop_carries_the_history_the_trace_replays(traced, order):
    trace = traced[order]
    for row, s in enumerate(trace.settings):
        n = int(trace.lengths[row])
        entering = np.asarray(trace.row_stages(row, dataclasses.replace(s, adaptive_target=0.0)).final)
        expected = reference_adaptive(entering, trace.token_ids[row, :n], s.adaptive_target, s.adaptive_decay)
        final = np.asarray(trace.row_stages(row).final)
        kept = np.isfinite(entering)
        np.testing.assert_allclose(np.where(kept, final, 0), np.where(kept, np.stack(expected), 0), atol=1e-4)
        # the loop's own draw, redone with the row's key from the replayed distribution, picks the same token
        assert_the_loop_drew_from(trace, row, final)
    states = trace.adaptive_states(0)
    assert states[0].tolist() == pytest.approx([0.2 / 0.1, 1 / 0.1]) and np.ptp(states[:, 0]) > 0.1  # it moved


def test_a_higher_target_draws_likelier_tokens(traced):
    means = {}
    for trace, row in ((trace, row) for trace in traced for row in range(trace.num_rows)):
        s = trace.settings[row]
        n = int(trace.lengths[row])
        entering = np.asarray(trace.row_stages(row, dataclasses.replace(s, adaptive_target=0.0)).final)
        p = np.exp(entering - np.logaddexp.reduce(entering, axis=-1, keepdims=True))
        means.setdefault(s.adaptive_target, []).extend(p[np.arange(n), trace.token_ids[row, :n]])
    assert np.mean(means[0.6]) > np.mean(means[0.2])
    with pytest.raises(ValueError, match="row 0 does not use adaptive-p"):
        traced[0].adaptive_states(0, SamplingSettings(1.0, 0))
