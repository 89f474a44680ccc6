"""Samplers beyond top-p: the settings object, Hugging Face's processors token for token, llama.cpp's
samplers against references written here from its algorithm, their statistics, and the decode loop."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    EpsilonLogitsWarper, EtaLogitsWarper, LogitsProcessorList, MinPLogitsWarper, NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TypicalLogitsWarper,
)

from txtgen_nb import SamplingSettings, generate, sampling
from txtgen_nb.generation import compiled_programs
from txtgen_nb.sampling import filter_logits, filter_stages, sample_token

Off = SamplingSettings.off
VOCAB = 48


def random_case(seed: int, rows: int = 3, length: int = 14, id_range: int = 6):
    """Distinct random logits [rows, VOCAB] and context ids [rows, length] with many repeats."""
    rng = np.random.default_rng(seed)
    logits = (rng.permutation(rows * VOCAB).reshape(rows, VOCAB) / 7.0 + rng.normal(size=(rows, VOCAB))).astype(
        np.float32)
    ids = rng.integers(0, id_range, size=(rows, length)).astype(np.int32)
    return logits, ids


def assert_same(ours, theirs) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
    np.testing.assert_allclose(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)], rtol=1e-5, atol=1e-5)


def hf(processors, logits, ids):
    return LogitsProcessorList(processors)(torch.tensor(ids, dtype=torch.long), torch.tensor(logits)).numpy()


# ------------------------------------------------------------------ the settings object

@pytest.mark.parametrize("fields,message", [
    (dict(repetition_penalty=0.0), "repetition_penalty must be > 0"),
    (dict(typical_p=0.0), "typical_p must be > 0 and <= 1"),
    (dict(dry_base=0.5), "dry_base must be >= 1"),
    (dict(dry_allowed_length=1.5), "dry_allowed_length must be an integer >= 1"),
    (dict(presence_penalty=3.0), "presence_penalty must be between -2 and 2"),
    (dict(epsilon_cutoff=1.0), "epsilon_cutoff must be >= 0 and < 1"),
    (dict(mirostat_tau=float("nan")), "mirostat_tau must be >= 0"),
    (dict(top_k=True), "top_k must be an integer >= 0"),
    (dict(order="vllm"), "order must be one of hf, llama.cpp"),
    (dict(dry_sequence_breakers=[1, 2]), "dry_sequence_breakers must be a tuple"),
])
def test_settings_validated_with_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message) as err:
        SamplingSettings(**fields)
    assert "\n" not in str(err.value)


def test_settings_keep_positional_order_label_and_stack():
    s = SamplingSettings(0.8, 50, 0.9)
    assert (s.temperature, s.top_k, s.top_p, s.min_p) == (0.8, 50, 0.9, 0.0)
    assert s.label() == "T=0.8 · top-k 50 · top-p 0.9"
    assert SamplingSettings(0.0, 0, repetition_penalty=1.3).label() == "greedy · rep 1.3"
    assert "llama.cpp order" in SamplingSettings(order="llama.cpp", xtc_probability=0.5).label()
    stacked = SamplingSettings.stack([s, SamplingSettings(1.2, 0, mirostat_tau=5.0)])
    assert stacked.top_k.tolist() == [50, 0] and stacked.mirostat_tau.dtype == np.float32
    with pytest.raises(ValueError, match="must share .*order"):
        SamplingSettings.stack([s, SamplingSettings(order="llama.cpp")])
    leaves, tree = jax.tree.flatten(s)
    assert len(leaves) == len(sampling.NUMERIC_FIELDS) and jax.tree.unflatten(tree, leaves) == s


def test_moving_any_setting_never_recompiles():
    f = jax.jit(lambda key, logits, s, ids: sample_token(key, logits, s, ids))
    logits, ids = random_case(0)
    for s in [Off(), Off(temperature=0.0, repetition_penalty=1.5, dry_multiplier=0.8, no_repeat_ngram_size=2),
              Off(typical_p=0.5, epsilon_cutoff=0.01, eta_cutoff=0.02, top_n_sigma=1.0, xtc_probability=0.7),
              Off(mirostat_tau=3.0, presence_penalty=0.5, frequency_penalty=-0.5, dry_penalty_last_n=5)]:
        f(jax.random.key(0), logits, jax.tree.map(np.float32, s), ids)
    assert f._cache_size() == 1


# ------------------------------------------------------------------ properties of every rule

EVERYTHING = st.fixed_dictionaries({
    "temperature": st.sampled_from([0.0, 0.5, 1.0, 2.0]), "top_k": st.integers(0, 10),
    "top_p": st.floats(0.0, 1.0), "min_p": st.floats(0.0, 0.5), "repetition_penalty": st.floats(0.5, 2.0),
    "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
    "no_repeat_ngram_size": st.integers(0, 4), "typical_p": st.floats(0.01, 1.0),
    "epsilon_cutoff": st.floats(0.0, 0.5), "eta_cutoff": st.floats(0.0, 0.5), "top_n_sigma": st.floats(0.0, 3.0),
    "xtc_threshold": st.floats(0.0, 0.6), "xtc_probability": st.floats(0.0, 1.0),
    "dry_multiplier": st.floats(0.0, 2.0), "dry_allowed_length": st.integers(1, 3),
    "dry_penalty_last_n": st.integers(-1, 14), "mirostat_tau": st.floats(0.0, 6.0),
    "order": st.sampled_from(sampling.ORDERS),
})


@settings(max_examples=30, deadline=None)
@given(EVERYTHING, st.integers(0, 10**6))
def test_at_least_one_token_always_stays(fields, seed):
    logits, ids = random_case(seed, id_range=4)
    s = SamplingSettings(**fields, dry_sequence_breakers=(3,))
    stages = filter_stages(logits, s, ids, num_generated=5)
    for name in sampling.stage_names(s.order):
        assert np.isfinite(np.asarray(getattr(stages, name))).any(axis=-1).all(), name


@pytest.mark.parametrize("fields", [
    dict(repetition_penalty=1.0), dict(presence_penalty=0.0, frequency_penalty=0.0), dict(no_repeat_ngram_size=0),
    dict(typical_p=1.0), dict(epsilon_cutoff=0.0), dict(eta_cutoff=0.0), dict(top_n_sigma=0.0),
    dict(xtc_probability=0.0, xtc_threshold=0.05), dict(xtc_probability=1.0, xtc_threshold=0.6),
    dict(dry_multiplier=0.0, dry_base=3.0, dry_allowed_length=1), dict(dry_multiplier=1.0, dry_penalty_last_n=0),
    dict(mirostat_tau=0.0, mirostat_eta=1.0),
], ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_off_means_identity(fields):
    logits, ids = random_case(1, id_range=3)
    stages = filter_stages(logits, Off(**fields), ids)
    for name in sampling.stage_names():
        np.testing.assert_array_equal(np.asarray(getattr(stages, name)), logits)


def test_per_row_settings_equal_single_row_calls():
    logits, ids = random_case(2, rows=4, id_range=4)
    rows = [SamplingSettings(0.7, 5, repetition_penalty=1.4, no_repeat_ngram_size=2),
            SamplingSettings(1.3, 0, 0.9, typical_p=0.8, dry_multiplier=1.0, dry_penalty_last_n=8),
            SamplingSettings(0.0, 0, presence_penalty=1.0, frequency_penalty=0.5, top_n_sigma=1.0),
            SamplingSettings(1.0, 0, eta_cutoff=0.05, epsilon_cutoff=0.01, xtc_probability=1.0, mirostat_tau=2.0)]
    batch = np.asarray(filter_logits(logits, SamplingSettings.stack(rows), ids, num_generated=6))
    for b, row in enumerate(rows):
        np.testing.assert_array_equal(batch[b], np.asarray(filter_logits(logits[b], row, ids[b], num_generated=6)))


def test_left_padding_of_the_context_is_ignored():
    logits, ids = random_case(3, id_range=4)
    s = Off(repetition_penalty=1.5, frequency_penalty=0.5, no_repeat_ngram_size=2, dry_multiplier=1.0)
    padded = np.concatenate([np.full((3, 5), -1, np.int32), ids], axis=1)
    np.testing.assert_array_equal(np.asarray(filter_logits(logits, s, padded)), np.asarray(filter_logits(logits, s, ids)))


# ------------------------------------------------------------------ Hugging Face, token for token

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fields,processor", [
    (dict(repetition_penalty=1.3), lambda: RepetitionPenaltyLogitsProcessor(penalty=1.3)),
    (dict(repetition_penalty=0.7), lambda: RepetitionPenaltyLogitsProcessor(penalty=0.7)),
    (dict(no_repeat_ngram_size=1), lambda: NoRepeatNGramLogitsProcessor(1)),
    (dict(no_repeat_ngram_size=2), lambda: NoRepeatNGramLogitsProcessor(2)),
    (dict(no_repeat_ngram_size=3), lambda: NoRepeatNGramLogitsProcessor(3)),
    (dict(typical_p=0.3), lambda: TypicalLogitsWarper(mass=0.3)),
    (dict(typical_p=0.9), lambda: TypicalLogitsWarper(mass=0.9)),
    (dict(epsilon_cutoff=0.02), lambda: EpsilonLogitsWarper(epsilon=0.02)),
    (dict(eta_cutoff=0.05), lambda: EtaLogitsWarper(epsilon=0.05)),
])
def test_each_hf_sampler_equals_its_processor(seed, fields, processor):
    logits, ids = random_case(seed, id_range=[6, VOCAB][seed % 2])
    assert_same(filter_logits(logits, Off(**fields), ids), hf([processor()], logits, ids))


@pytest.mark.parametrize("mass", [0.05, 0.5, 0.9, 0.999])
def test_typical_equals_hf_with_ties_and_removed_tokens(mass):
    rng = np.random.default_rng(int(mass * 1000))
    logits = rng.integers(-4, 4, size=(6, VOCAB)).astype(np.float32)  # many tied surprises
    logits[:, ::7] = -np.inf  # tokens an earlier rule removed
    assert_same(filter_logits(logits, Off(typical_p=mass)), hf([TypicalLogitsWarper(mass=mass)], logits,
                                                                np.zeros((6, 1), np.int32)))


@pytest.mark.parametrize("seed", range(3))
def test_hf_chain_in_hf_order(seed):
    logits, ids = random_case(seed, id_range=8)
    s = SamplingSettings(temperature=0.7, top_k=30, min_p=0.01, repetition_penalty=1.2, no_repeat_ngram_size=2,
                         typical_p=0.95, epsilon_cutoff=0.003, eta_cutoff=0.004)
    theirs = hf([RepetitionPenaltyLogitsProcessor(1.2), NoRepeatNGramLogitsProcessor(2), TemperatureLogitsWarper(0.7),
                 TopKLogitsWarper(30), MinPLogitsWarper(0.01), TypicalLogitsWarper(0.95), EpsilonLogitsWarper(0.003),
                 EtaLogitsWarper(0.004)], logits, ids)
    assert_same(filter_logits(logits, s, ids), theirs)


def test_presence_and_frequency_penalties_count_generated_ids_only():
    logits, ids = random_case(4, rows=1, id_range=5)
    out = np.asarray(filter_logits(logits, Off(presence_penalty=0.5, frequency_penalty=0.25), ids, num_generated=4))
    counts = np.bincount(ids[0, -4:], minlength=VOCAB)
    np.testing.assert_allclose(out[0], logits[0] - 0.25 * counts - 0.5 * (counts > 0), rtol=1e-6)


# ------------------------------------------------------------------ llama.cpp, against references written here

def ref_top_n_sigma(logits: np.ndarray, n: float) -> np.ndarray:
    finite = logits[np.isfinite(logits)]
    threshold = finite.max() - n * np.sqrt(np.mean((finite - finite.mean()) ** 2))
    return np.where(logits < threshold, -np.inf, logits)


def ref_xtc(logits: np.ndarray, threshold: float, probability: float, coin: float) -> np.ndarray:
    if probability <= 0 or threshold > 0.5 or coin > probability:
        return logits
    order = np.argsort(-logits, kind="stable")
    p = np.exp(logits[order] - logits.max())
    p /= p.sum()
    last = 0
    for i in range(len(p)):
        if p[i] < threshold:
            break
        last = i
    out = logits.copy()
    if last > 0:
        out[order[:last]] = -np.inf  # every top choice but the least likely
    return out


def ref_dry(logits, tokens, multiplier, base, allowed, last_n, breakers):
    """llama.cpp's llama_sampler_dry_apply with single-token breakers, by its definition (no Z-algorithm)."""
    window = len(tokens) if last_n == -1 else min(last_n, len(tokens))
    if multiplier == 0 or base < 1 or last_n == 0 or window <= allowed:
        return logits
    rat = lambda i: tokens[len(tokens) - 1 - i]  # noqa: E731 (i-th newest)
    rep_limit = next((i for i in range(window) if rat(i) in breakers), window)
    if rep_limit < allowed:
        return logits
    longest: dict[int, int] = {}
    for k in range(1, window):
        n = 0
        while n + k < window and rat(n) == rat(n + k):
            n += 1
        n = min(n, rep_limit)
        if n >= allowed:
            longest[rat(k - 1)] = max(longest.get(rat(k - 1), 0), n)
    out = logits.copy()
    max_exponent = int(88.7228391 / np.log(base)) if base > 1.000001 else 0
    for token, n in longest.items():
        if token not in breakers:
            exponent = n - allowed if not (max_exponent > 0 and n - allowed > max_exponent) else max_exponent
            out[token] -= multiplier * base ** exponent
    return out


def ref_mirostat(logits: np.ndarray, mu: float) -> np.ndarray:
    order = np.argsort(-logits, kind="stable")
    p = np.exp(logits[order] - logits.max())
    p /= p.sum()
    keep = max(1, int(np.sum(np.cumprod(-np.log2(p) <= mu))))
    out = np.full_like(logits, -np.inf)
    out[order[:keep]] = logits[order[:keep]]
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [0.5, 1.0, 2.5])
def test_top_n_sigma_equals_reference(seed, n):
    logits, _ = random_case(seed)
    logits[:, :5] = -np.inf  # already removed tokens do not count
    ours = np.asarray(filter_logits(logits, Off(top_n_sigma=n)))
    for b in range(len(logits)):
        assert_same(ours[b], ref_top_n_sigma(logits[b], n))


@pytest.mark.parametrize("threshold,probability,coin", [(0.05, 1.0, 0.3), (0.1, 0.5, 0.2), (0.1, 0.5, 0.7),
                                                        (0.02, 0.9, 0.0), (0.6, 1.0, 0.0), (0.3, 1.0, 0.5)])
def test_xtc_equals_reference(threshold, probability, coin):
    logits, _ = random_case(5)
    logits = logits * 0.6  # flat enough for several top choices
    ours = np.asarray(filter_logits(logits, Off(xtc_threshold=threshold, xtc_probability=probability),
                                    xtc_coin=np.full(3, coin, np.float32)))
    for b in range(len(logits)):
        assert_same(ours[b], ref_xtc(logits[b], threshold, probability, coin))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("multiplier,base,allowed,last_n,breakers", [
    (0.8, 1.75, 2, -1, ()), (1.0, 2.0, 1, -1, (2,)), (0.5, 1.5, 3, 9, ()), (2.0, 1.0, 2, 12, (0, 3)),
    (0.8, 1.75, 2, 0, ()),
])
def test_dry_equals_reference(seed, multiplier, base, allowed, last_n, breakers):
    logits, ids = random_case(seed, length=30, id_range=4)
    s = Off(dry_multiplier=multiplier, dry_base=base, dry_allowed_length=allowed, dry_penalty_last_n=last_n,
            dry_sequence_breakers=breakers)
    ours = np.asarray(filter_logits(logits, s, ids))
    for b in range(len(logits)):
        assert_same(ours[b], ref_dry(logits[b], ids[b].tolist(), multiplier, base, allowed, last_n, breakers))


def test_dry_penalises_the_token_that_continues_a_repeat():
    ids = np.array([5, 6, 7, 8, 1, 5, 6, 7], np.int32)  # "5 6 7" repeats: 8 would continue it
    out = np.asarray(filter_logits(np.zeros(10, np.float32), Off(dry_multiplier=1.0, dry_base=2.0), ids))
    assert out[8] == pytest.approx(-2.0) and np.count_nonzero(out) == 1  # 1 * 2 ** (3 - 2)


@pytest.mark.parametrize("mu", [0.5, 2.0, 4.0, 8.0])
def test_mirostat_truncation_equals_reference(mu):
    logits, _ = random_case(6)
    ours = np.asarray(filter_logits(logits, Off(mirostat_tau=3.0), mu=np.full(3, mu, np.float32)))
    for b in range(len(logits)):
        assert_same(ours[b], ref_mirostat(logits[b], mu))


def test_llama_cpp_order_puts_temperature_last():
    logits = np.log(np.array([0.5, 0.25, 0.15, 0.06, 0.04], np.float32))
    hf_order = np.isfinite(np.asarray(filter_logits(logits, Off(temperature=3.0, min_p=0.2))))
    llama = np.isfinite(np.asarray(filter_logits(logits, Off(temperature=3.0, min_p=0.2, order="llama.cpp"))))
    assert llama.tolist() == [True, True, True, False, False]  # min-p on the T=1 probabilities
    assert hf_order.sum() > llama.sum()  # after T=3 the distribution is flatter: more tokens pass


@pytest.mark.parametrize("fields,hf_kept,llama_kept", [
    (dict(top_k=2), [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]),  # llama.cpp: exactly 2, ties to the lower id
    (dict(top_p=0.5), [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]),  # the same count, no extra ties
    (dict(xtc_threshold=0.15, xtc_probability=1.0), [0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]),  # one tied choice stays
])
def test_llama_cpp_order_cuts_by_rank_where_hf_keeps_ties(fields, hf_kept, llama_kept):
    logits = np.array([2.0, 1.0, 1.0, 1.0, 0.0, -1.0], np.float32)  # p = .44, .16, .16, .16, .06, .02
    coin = np.zeros((), np.float32)
    for order, expected in (("hf", hf_kept), ("llama.cpp", llama_kept)):
        kept = np.isfinite(np.asarray(filter_logits(logits, Off(order=order, **fields), xtc_coin=coin)))
        assert kept.astype(int).tolist() == expected, order
    assert np.isfinite(np.asarray(filter_logits(logits, Off(order="llama.cpp", top_k=9)))).all()  # k >= n: all


@pytest.mark.parametrize("order,kept", [("hf", 1), ("llama.cpp", 3), ("penalties;xtc;temperature", 3)])
def test_greedy_is_the_argmax_after_penalties_or_of_the_tokens_left(order, kept):
    logits = np.array([3.0, 2.9, 1.0, 0.5], np.float32)  # token 0 penalised below token 1
    s = Off(temperature=0.0, repetition_penalty=2.0, xtc_probability=1.0, xtc_threshold=0.01, order=order)
    final = np.asarray(filter_logits(logits, s, np.array([0], np.int32)))
    # Hugging Face skips the warpers when greedy; llama.cpp's temperature 0 keeps the best token XTC left
    assert np.flatnonzero(np.isfinite(final)).tolist() == [kept]


# ------------------------------------------------------------------ statistics

def chi_square_ok(counts: np.ndarray, expected_probs: np.ndarray) -> bool:
    """Pearson's test at the 0.1% level (Wilson–Hilferty approximation of the chi-square quantile)."""
    mask = expected_probs > 0
    assert counts[~mask].sum() == 0
    expected = expected_probs[mask] * counts.sum()
    stat = float(np.sum((counts[mask] - expected) ** 2 / expected))
    dof = mask.sum() - 1
    critical = dof * (1 - 2 / (9 * dof) + 3.09 * np.sqrt(2 / (9 * dof))) ** 3
    return stat < critical


def draws(logits, s, n=20000, **kwargs) -> np.ndarray:
    keys = jax.random.split(jax.random.key(7), n)
    tokens = jax.jit(jax.vmap(lambda k: sample_token(k, logits, s, **kwargs)))(keys)
    return np.bincount(np.asarray(tokens), minlength=logits.shape[-1])


def test_xtc_draws_mix_both_outcomes():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.06, 0.04], np.float32))
    probs = 0.4 * np.array([0.4, 0.3, 0.2, 0.06, 0.04]) + 0.6 * np.array([0, 0, 0.2, 0.06, 0.04]) / 0.3
    assert chi_square_ok(draws(logits, Off(xtc_threshold=0.15, xtc_probability=0.6)), probs)


def test_top_n_sigma_and_dry_draws_follow_the_filtered_distribution():
    logits, ids = random_case(8, rows=1, length=20, id_range=5)
    s = Off(temperature=0.8, top_n_sigma=1.5, dry_multiplier=1.0)
    expected = np.asarray(sampling.probabilities(filter_logits(logits[0], s, ids[0])))
    assert chi_square_ok(draws(logits[0], s, context=ids[0]), expected)


def test_mirostat_mean_surprise_tracks_tau():
    rng = np.random.default_rng(0)
    base = jnp.asarray(-1.1 * np.log(np.arange(1, 501)), jnp.float32)  # Zipf-like
    noise = jnp.asarray(rng.normal(scale=0.3, size=(3000, 500)), jnp.float32)
    for tau in (2.0, 4.0):
        s = Off(mirostat_tau=tau, mirostat_eta=0.1)

        def step(mu, xs):
            key, eps = xs
            filtered = filter_logits(base + eps, s, mu=mu)
            token = jax.random.categorical(key, filtered)
            mu, surprise = sampling.mirostat_update(mu, filtered, token, s.mirostat_tau, s.mirostat_eta)
            return mu, surprise

        keys = jax.random.split(jax.random.key(1), noise.shape[0])
        _, surprises = jax.lax.scan(step, sampling.mirostat_initial_mu(tau), (keys, noise))
        assert float(jnp.mean(surprises[500:])) == pytest.approx(tau, abs=0.25)


# ------------------------------------------------------------------ in the decode loop

def test_generation_never_recompiles_and_filters_with_its_context(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    for first in (SamplingSettings(), SamplingSettings(1.0, 0, repetition_penalty=1.1)):  # each chain compiles once
        generate(model, params, tiny_tok, "Once upon", settings=[first] * 3, max_new_tokens=20, trace=True)
    compiled = compiled_programs()  # the same shapes: other rules and values never compile again
    rows = [SamplingSettings(1.0, 0, repetition_penalty=1.5, no_repeat_ngram_size=2, presence_penalty=0.5),
            SamplingSettings(1.5, 0, dry_multiplier=2.0, dry_allowed_length=1, typical_p=0.9, top_n_sigma=2.0),
            SamplingSettings(1.2, 20, xtc_probability=0.5, mirostat_tau=3.0, eta_cutoff=0.01, dynatemp_range=0.6)]
    result = generate(model, params, tiny_tok, "Once upon", settings=rows, seed=[3, 3, 3], max_new_tokens=20,
                      trace=True)
    assert compiled_programs() == compiled
    trace = result.trace
    for b in (0, 1):  # deterministic rules: every chosen token survives the filter with its context
        for i in range(int(trace.lengths[b])):
            context = np.asarray(trace.context_ids(b, i), np.int32)
            final = np.asarray(filter_logits(trace.step_logits(b, i), rows[b], context, num_generated=i))
            assert np.isfinite(final[trace.token_ids[b, i]])
    ids = trace.prompt_ids[0] + result.new_token_ids[0]
    bigrams = list(zip(ids, ids[1:]))
    assert len(bigrams) == len(set(bigrams))  # no_repeat_ngram_size=2 over prompt and generated ids
    for b, row in enumerate(rows):  # each row equals its own single call
        single = generate(model, params, tiny_tok, "Once upon", settings=row, seed=3, max_new_tokens=20)
        assert single.new_token_ids[0] == result.new_token_ids[b]


def test_stop_strings_cut_the_text(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    full = generate(model, params, tiny_tok, "Once upon", max_new_tokens=20, seed=5, temperature=1.5, top_k=0)
    text = full.continuations[0]
    stop = text[len(text) // 2: len(text) // 2 + 2]
    cut = generate(model, params, tiny_tok, "Once upon", max_new_tokens=20, seed=5, temperature=1.5, top_k=0,
                   stop=[stop, "never appears"])
    assert cut.continuations[0] == text[: text.find(stop)] and cut.stop_reasons == ["stop"]
    assert len(cut.new_token_ids[0]) <= len(full.new_token_ids[0])
    with pytest.raises(ValueError, match="stop must be"):
        generate(model, params, tiny_tok, "Hi", stop=[""])


# ------------------------------------------------------------------ dynamic temperature (llama.cpp temp-ext)

def reference_temp_ext(logits: np.ndarray, temp: float, delta: float, exponent: float) -> np.ndarray:
    """llama.cpp's ``llama_sampler_temp_ext_apply`` restated on one row (the candidates are its finite logits)."""
    candidates = logits[np.isfinite(logits)].astype(np.float64)
    if delta <= 0:
        return logits / temp
    if candidates.size <= 1:
        return logits
    min_temp, max_temp = max(0.0, temp - delta), temp + delta
    max_entropy = -np.log(1.0 / candidates.size)
    p = np.exp(candidates - candidates.max())
    p /= p.sum()
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    return logits / (min_temp + (max_temp - min_temp) * (entropy / max_entropy) ** exponent)


@pytest.mark.parametrize("temp,delta,exponent", [(1.0, 0.5, 1.0), (0.7, 1.0, 2.0), (1.5, 0.3, 0.5), (0.4, 0.8, 1.0)])
def test_dynamic_temperature_equals_llama_cpp_on_the_tokens_left_in_play(temp, delta, exponent):
    logits, _ = random_case(4, rows=3)
    s = Off(temperature=temp, dynatemp_range=delta, dynatemp_exponent=exponent, min_p=0.05, order="llama.cpp")
    stages = filter_stages(logits, s)  # temperature last: its entropy is over min-p's survivors
    before, after = np.asarray(stages.min_p), np.asarray(stages.temperature)
    for row in range(before.shape[0]):
        expected = reference_temp_ext(before[row], temp, delta, exponent)
        np.testing.assert_allclose(after[row], expected, rtol=2e-5, atol=1e-6)
    assert not np.allclose(np.where(np.isfinite(after), after, 0), np.where(np.isfinite(before), before / temp, 0))


def test_dynamic_temperature_leaves_one_token_alone_and_greedy_greedy():
    one = np.full((1, 8), -np.inf, np.float32)
    one[0, 3] = 2.0
    np.testing.assert_array_equal(filter_stages(one, Off(temperature=0.5, dynatemp_range=0.4)).temperature, one)
    logits, _ = random_case(5, rows=2)
    greedy = np.asarray(filter_logits(logits, Off(temperature=0.0, dynatemp_range=1.0)))
    assert (np.isfinite(greedy).sum(-1) == 1).all()


def test_dynamic_temperature_in_the_decode_loops_fused_step_equals_the_chain():
    logits, ids = random_case(6, rows=4)
    rows = SamplingSettings.stack([SamplingSettings(t, k, p, m, dynatemp_range=d, dynatemp_exponent=e)
                                   for t, k, p, m, d, e in [(1.0, 0, 1.0, 0.0, 0.5, 1.0), (0.8, 10, 0.9, 0.0, 1.0, 2.0),
                                                            (1.3, 0, 0.95, 0.05, 0.3, 0.5), (0.0, 0, 1.0, 0.0, 0.5, 1.0)]])
    assert bool(sampling.uses_extras(rows))  # the fast classic loop cannot do it
    np.testing.assert_allclose(np.asarray(filter_logits(logits, rows, ids, fused=True)),
                               np.asarray(filter_logits(logits, rows, ids)), rtol=1e-5)


# ------------------------------------------------------------------ a free order (llama.cpp's --samplers)

def test_a_free_order_names_stages_by_ours_or_llama_cpps_names():
    assert sampling.chain("top_k;typ_p;temperature") == ("logit_bias", "top_k", "typical", "temperature",
                                                        "adaptive_p", "mirostat")  # the two that draw: last
    assert sampling.stage_names("min-p ; temp")[1:] == ("logit_bias", "min_p", "temperature", "adaptive_p", "mirostat")
    assert sampling.chain("temp;logit_bias")[:2] == ("temperature", "logit_bias")  # named: where it is named
    for bad in ("top_k;bogus", "", "top_k;top-k"):
        with pytest.raises(ValueError, match="order"):
            SamplingSettings(order=bad)
    with pytest.raises(ValueError, match="leaves out top_p"):
        SamplingSettings(1.0, 0, 0.9, order="temperature")


def test_a_free_order_runs_its_stages_in_its_order():
    logits, ids = random_case(7, rows=3)
    hot = dict(temperature=1.6, min_p=0.1)
    for free, named in (("temperature;min_p", "hf"), ("min_p;temperature", "llama.cpp")):
        np.testing.assert_array_equal(np.asarray(filter_logits(logits, Off(**hot, order=free))),
                                      np.asarray(filter_logits(logits, Off(**hot, order=named))))
    default = "penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature"  # llama.cpp's --samplers default
    s = dict(temperature=0.9, top_k=20, top_p=0.9, typical_p=0.8, repetition_penalty=1.3, xtc_probability=1.0)
    np.testing.assert_array_equal(np.asarray(filter_logits(logits, Off(**s, order=default), ids)),
                                  np.asarray(filter_logits(logits, Off(**s, order="llama.cpp"), ids)))


def test_generation_follows_a_free_order(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    s = SamplingSettings(1.4, 0, min_p=0.2, order="min_p;temperature")
    result = generate(model, params, tiny_tok, "Once upon", settings=s, seed=4, max_new_tokens=12, trace=True)
    same = generate(model, params, tiny_tok, "Once upon", settings=dataclasses.replace(s, order="llama.cpp"), seed=4,
                    max_new_tokens=12)
    assert result.new_token_ids == same.new_token_ids and "order min_p;temperature" in s.label()
    trace = result.trace
    for i in range(int(trace.lengths[0])):
        final = np.asarray(filter_logits(trace.step_logits(0, i), s))
        assert np.isfinite(final[trace.token_ids[0, i]])


def test_min_new_tokens_equals_hugging_face():
    from transformers import MinNewTokensLengthLogitsProcessor

    logits, ids = random_case(8, rows=2)
    prompt = 6  # the first 6 context ids are the prompt, the rest generated
    for generated in (3, 8):
        context = ids[:, :prompt + generated]
        hf = MinNewTokensLengthLogitsProcessor(prompt, 8, eos_token_id=[2, 5])(torch.tensor(context),
                                                                                 torch.tensor(logits)).numpy()
        ours = filter_stages(logits, Off(min_new_tokens=8), context, num_generated=generated, stop_ids=[2, 5, -1])
        assert_same(ours.min_new_tokens, hf)
        assert np.isfinite(np.asarray(ours.final)[:, [2, 5]]).all() == (generated >= 8)


# ------------------------------------------------------------------ logit bias and banned words (static settings)

def test_logit_bias_equals_hugging_faces_sequence_bias_on_single_tokens():
    from transformers import SequenceBiasLogitsProcessor

    logits, ids = random_case(9, rows=2)
    bias = {3: -100.0, 10: 4.5, VOCAB + 5: 1.0}  # an id beyond the vocabulary is ignored
    hf = SequenceBiasLogitsProcessor({(3,): -100.0, (10,): 4.5})(torch.tensor(ids), torch.tensor(logits)).numpy()
    ours = filter_stages(logits, Off(logit_bias=bias), ids)
    np.testing.assert_allclose(np.asarray(ours.logit_bias), hf, rtol=1e-6)
    greedy = Off(temperature=0.0, logit_bias={int(np.argmax(logits[0])): -100.0})  # bias acts before greedy's argmax
    assert int(np.argmax(np.asarray(filter_logits(logits, greedy))[0])) != int(np.argmax(logits[0]))


def test_bad_words_equal_hugging_face():
    from transformers import NoBadWordsLogitsProcessor

    logits, ids = random_case(10, rows=3, id_range=4)
    words = [[7], [ids[0, -1], 9], [ids[1, -2], ids[1, -1], 11], [1, 2, 3, 12]]
    hf = NoBadWordsLogitsProcessor([list(map(int, w)) for w in words], eos_token_id=VOCAB - 1)(
        torch.tensor(ids), torch.tensor(logits)).numpy()
    ours = np.asarray(filter_stages(logits, Off(bad_words=words), ids).bad_words)
    assert_same(ours, hf)
    assert np.isinf(ours[0, 9]) and np.isinf(ours[1, 11]) and np.isinf(ours[:, 7]).all()


def test_generation_never_emits_a_biased_away_or_banned_token(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    plain = generate(model, params, tiny_tok, "Once upon", temperature=0.0, max_new_tokens=12).new_token_ids[0]
    first = plain[0]
    rows = [SamplingSettings(0.0, 0, logit_bias={first: -100.0}), SamplingSettings(0.0, 0, bad_words=[[first]])]
    for s in rows:  # static settings: one call each (a batch shares them)
        ids = generate(model, params, tiny_tok, "Once upon", settings=s, max_new_tokens=12).new_token_ids[0]
        assert first not in ids and ids != plain
    with pytest.raises(ValueError, match="share"):
        SamplingSettings.stack(rows)
