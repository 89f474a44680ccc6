"""Compiled generation: cache equals full recompute, determinism, batching, stopping, no recompiles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from txtgen_nb import (
    RECOMMENDED, SamplingSettings, evaluate_text, generate, generate_text, load_model_and_tokenizer, next_token_logits,
)
from txtgen_nb.generation import (
    DECODE_BUCKET_MIN, compiled_programs, decode_steps, prefill_plan, prefill_sizes, warm_up,
)
from txtgen_nb.model import Transformer
from txtgen_nb.tokenizer import encode_prompt, special_ids

from conftest import assert_trace_equals_forward, tiny_config, tiny_tokenizer


def test_cached_decoding_equals_full_forward(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    result = generate(model, params, tiny_tok, ["Once upon", "The quick brown fox jumps"], max_new_tokens=12,
                      temperature=1.0, top_k=0, trace="full")
    assert_trace_equals_forward(model, result.trace)


def test_same_seed_same_text_and_batch_of_one_equals_single(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    prompts = ["Once upon a time", "Hello", "Person A: How are you?"]
    batch = generate(model, params, tiny_tok, prompts, max_new_tokens=15, seed=[3, 4, 5])
    for i, prompt in enumerate(prompts):
        single = generate(model, params, tiny_tok, prompt, max_new_tokens=15, seed=3 + i)
        assert single.new_token_ids[0] == batch.new_token_ids[i]
    again = generate(model, params, tiny_tok, prompts, max_new_tokens=15, seed=[3, 4, 5])
    assert again.texts == batch.texts


def test_num_samples_uses_consecutive_seeds(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    many = generate(model, params, tiny_tok, "Once", num_samples=4, seed=10, max_new_tokens=10, temperature=1.5,
                    top_k=0)
    assert len(set(map(tuple, many.new_token_ids))) > 1
    third = generate(model, params, tiny_tok, "Once", seed=12, max_new_tokens=10, temperature=1.5, top_k=0)
    assert third.new_token_ids[0] == many.new_token_ids[2]


def test_greedy_picks_argmax_each_step(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    result = generate(model, params, tiny_tok, "Hello", temperature=0.0, max_new_tokens=8, trace=True, seed=1)
    trace = result.trace
    assert (trace.token_ids[0, : trace.lengths[0]] == trace.logits[0, : trace.lengths[0]].argmax(-1)).all()
    other_seed = generate(model, params, tiny_tok, "Hello", temperature=0.0, max_new_tokens=8, seed=99)
    assert other_seed.texts == result.texts


def eos_loving_model(tokenizer):
    """A model whose every next-token argmax is EOS: the final norm outputs EOS's embedding."""
    config = tiny_config()
    model = Transformer(config, rngs=nnx.Rngs(0))
    eos = special_ids(tokenizer).eos
    model.ln_f.scale[...] = jnp.zeros_like(model.ln_f.scale[...])
    model.ln_f.bias[...] = 10.0 * model.embed.embedding[...][eos]
    return model, nnx.state(model, nnx.Param)


def test_stops_at_end_of_sequence(tiny_tok):
    model, params = eos_loving_model(tiny_tok)
    result = generate(model, params, tiny_tok, ["Hi", "Once upon a time"], temperature=0.0, max_new_tokens=50)
    assert result.stop_reasons == ["eos", "eos"]
    assert result.new_token_ids == [[special_ids(tiny_tok).eos]] * 2
    assert result.texts == ["Hi", "Once upon a time"]


def test_stops_at_context_and_max_new_tokens(tiny_model, tiny_tok):
    model, params, config = tiny_model
    prompt = "Once upon a time"
    n_prompt = len(encode_prompt(tiny_tok, prompt))
    eos = special_ids(tiny_tok).eos
    long = generate(model, params, tiny_tok, prompt, max_new_tokens=500, temperature=1.0, top_k=0, seed=0)
    ids = long.new_token_ids[0]
    assert len(ids) == config.max_len - n_prompt or ids[-1] == eos
    short = generate(model, params, tiny_tok, [prompt, "Hi"], max_new_tokens=3, temperature=0.0)
    assert all(len(ids) <= 3 for ids in short.new_token_ids)
    zero = generate(model, params, tiny_tok, prompt, max_new_tokens=0)
    assert zero.texts == [prompt] and zero.new_token_ids == [[]]


def test_long_prompt_keeps_last_tokens_with_warning(tiny_model, tiny_tok):
    model, params, config = tiny_model
    prompt = "The quick brown fox jumps over the lazy dog. " * 10
    with pytest.warns(UserWarning, match="keeping the last"):
        result = generate(model, params, tiny_tok, prompt, max_new_tokens=5, trace=True)
    assert len(result.trace.prompt_ids[0]) == config.max_len - 1
    assert len(result.new_token_ids[0]) == 1
    assert result.texts[0].startswith(prompt)


@pytest.mark.parametrize("prompt", ["", "héllo wörld ☃ 日本語 🙂", "<script>alert(1)</script>", "a\nb\tc"])
def test_odd_but_valid_prompts(tiny_model, tiny_tok, prompt):
    model, params, _ = tiny_model
    text = generate_text(model, params, tiny_tok, prompt, max_length=5, rng_seed=2**100 + 7)
    assert text.startswith(prompt)


def test_huge_and_negative_seeds_are_deterministic(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    a = generate(model, params, tiny_tok, "Hi", seed=10**30, max_new_tokens=6, top_k=0, temperature=1.5)
    b = generate(model, params, tiny_tok, "Hi", seed=10**30, max_new_tokens=6, top_k=0, temperature=1.5)
    c = generate(model, params, tiny_tok, "Hi", seed=-5, max_new_tokens=6, top_k=0, temperature=1.5)
    assert a.texts == b.texts and c.texts


def test_settings_seed_and_length_never_recompile(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    generate(model, params, tiny_tok, "Once upon", max_new_tokens=10)
    compiled = compiled_programs()
    for t, k, p, m, seed, n in [(0.0, 0, 1.0, 0.0, 1, 3), (1.9, 7, 0.5, 0.1, 10**20, 20), (0.5, 100, 0.95, 0.0, 5, 1)]:
        generate(model, params, tiny_tok, "Once upon", max_new_tokens=n, temperature=t, top_k=k, top_p=p, min_p=m,
                 seed=seed)
    generate(model, params, tiny_tok, "A different prompt", max_new_tokens=4)
    assert compiled_programs() == compiled


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(temperature=-0.1), "temperature must be >= 0"),
    (dict(top_p=1.5), "top_p must be between 0 and 1"),
    (dict(top_k=-1), "top_k must be an integer >= 0"),
    (dict(top_k=2.5), "top_k must be an integer >= 0"),
    (dict(min_p=-1.0), "min_p must be between 0 and 1"),
    (dict(max_new_tokens=-3), "max_new_tokens must be an integer >= 0"),
    (dict(temperature="hot"), "temperature must be >= 0"),
    (dict(temperature=float("nan")), "temperature must be >= 0"),
    (dict(num_samples=0), "num_samples must be an integer >= 1"),
    (dict(seed=[1, 2], num_samples=3), "seed has 2 values for 3 rows"),
])
def test_bad_settings_raise_value_error(tiny_model, tiny_tok, kwargs, fragment):
    model, params, _ = tiny_model
    with pytest.raises(ValueError, match=fragment):
        generate(model, params, tiny_tok, "Hi", **kwargs)


def test_evaluate_text_matches_manual_nll(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    text = "Once upon a time, there was a cat."
    ids = encode_prompt(tiny_tok, text)
    logp = jax.nn.log_softmax(model(jnp.asarray(ids)[None])[0], axis=-1)
    manual = -float(np.mean([logp[i, ids[i + 1]] for i in range(len(ids) - 1)]))
    assert evaluate_text(model, params, tiny_tok, text) == pytest.approx(manual, rel=1e-4)
    long_text = text * 20
    assert np.isfinite(evaluate_text(model, params, tiny_tok, long_text))
    with pytest.raises(ValueError, match="empty"):
        evaluate_text(model, params, tiny_tok, "")


def test_settings_objects_and_one_prompt_per_setting(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    rows = [SamplingSettings(0.0, 0), SamplingSettings(1.5, 5, 0.9), SamplingSettings(1.0, 0, 1.0, 0.1)]
    by_object = generate(model, params, tiny_tok, "Once upon", settings=rows, seed=[1, 1, 1], max_new_tokens=10,
                         trace=True)
    by_lists = generate(model, params, tiny_tok, ["Once upon"] * 3, temperature=[0.0, 1.5, 1.0], top_k=[0, 5, 0],
                        top_p=[1.0, 0.9, 1.0], min_p=[0.0, 0.0, 0.1], seed=[1, 1, 1], max_new_tokens=10)
    assert by_object.new_token_ids == by_lists.new_token_ids and len(by_object.texts) == 3
    assert by_object.trace.settings == rows
    one = generate(model, params, tiny_tok, "Once upon", settings=RECOMMENDED["balanced"], max_new_tokens=10, seed=2)
    assert one.new_token_ids == generate(model, params, tiny_tok, "Once upon", temperature=0.8, top_k=50, top_p=0.9,
                                         max_new_tokens=10, seed=2).new_token_ids
    with pytest.raises(ValueError, match="settings has 3 values for 2 rows"):
        generate(model, params, tiny_tok, ["a", "b"], settings=rows)


def test_next_token_logits_are_the_first_trace_step(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    logits = next_token_logits(model, params, tiny_tok, "The quick brown")
    full = np.asarray(model(jnp.asarray(encode_prompt(tiny_tok, "The quick brown"))[None])[0, -1])
    np.testing.assert_allclose(logits, full, atol=1e-4, rtol=1e-4)


def test_decode_loop_is_bucketed_below_a_long_context():
    assert decode_steps(1, 1024) == decode_steps(DECODE_BUCKET_MIN, 1024) == DECODE_BUCKET_MIN
    assert decode_steps(DECODE_BUCKET_MIN + 1, 1024) == 2 * DECODE_BUCKET_MIN
    assert decode_steps(900, 1024) == decode_steps(5000, 1024) == 1024  # capped at the context
    assert decode_steps(3, 64) == 64  # a short context keeps one bucket: never recompiles


@pytest.mark.parametrize("max_len, prompt_len", [(300, 250), (100, 90), (300, 3)])
def test_chunked_prefill_equals_full_forward(max_len, prompt_len):
    """Prompts of several chunks (250 tokens: four of 64 in 256 slots), a first chunk moved back so
    that it overlaps the next (90 tokens in 100 slots), and one chunk: the cached logits after the
    prompt and at every step equal one forward over the whole text."""
    config = tiny_config(max_len=max_len)
    model = Transformer(config, rngs=nnx.Rngs(1))
    params = nnx.state(model, nnx.Param)
    tok = tiny_tokenizer()
    text = ("The quick brown fox jumps over the lazy dog. " * 40)
    prompt = tok.decode(encode_prompt(tok, text)[1:prompt_len])
    result = generate(model, params, tok, [prompt, "Hello"], max_new_tokens=6, temperature=1.0, top_k=0,
                      trace="full")
    assert_trace_equals_forward(model, result.trace)


def test_prefill_plan_covers_the_prompt_from_its_first_real_slot():
    assert prefill_plan(128, 124, (16, 64)) == [(112, 16)]  # a short prompt: one small chunk
    assert prefill_plan(128, 90, (16, 64)) == [(64, 64)]
    assert prefill_plan(128, 100, (16, 64)) == [(96, 16), (112, 16)]
    assert prefill_plan(128, 70, (16, 64)) == [(64, 64)]  # three small ones would cost more than one large
    assert prefill_plan(256, 6, (16, 64)) == [(0, 64), (64, 64), (128, 64), (192, 64)]
    assert prefill_plan(256, 0, (16, 64)) == [(0, 64), (64, 64), (128, 64), (192, 64)]
    assert prefill_plan(256, 180, (16, 64)) == [(176, 16), (192, 64)]
    assert prefill_plan(100, 10, (16, 64)) == [(4, 16), (20, 16), (36, 64)]
    assert prefill_plan(100, 0, (16, 64)) == [(0, 64), (36, 64)]  # moved back to slot 0: overlaps the next
    for prompt_len, first in [(128, 0), (128, 127), (512, 13), (100, 99), (32, 0)]:
        plan = prefill_plan(prompt_len, first, prefill_sizes(1, prompt_len))
        covered = {slot for start, size in plan for slot in range(start, start + size)}
        assert covered >= set(range(first, prompt_len)) and max(covered) == prompt_len - 1
        assert all(start >= 0 for start, _ in plan)
    assert prefill_sizes(1, 128) == (16, 64) and prefill_sizes(16, 128) == (8, 8) and prefill_sizes(1, 32) == (16, 32)


def test_no_prompt_length_compiles_again_on_the_demo():
    """The demo's context is 128 tokens: after its warm-up, prompts of 1 to 120 tokens, any number of
    new tokens they leave room for, any slider and any advanced sampler compile nothing."""
    model, params, tok, _ = load_model_and_tokenizer()
    assert warm_up(model, params) > 0
    assert warm_up(model, params) == 0
    compiled = compiled_programs()
    words = "the little dog ran to the park and saw a big red ball".split()
    for length in (1, 2, 17, 40, 64, 65, 100, 120):
        text = " ".join(words[i % len(words)] for i in range(length))
        ids = encode_prompt(tok, text)[:length]
        prompt = tok.decode(ids[1:])
        generate(model, params, tok, prompt, max_new_tokens=128 - len(ids), temperature=0.7, top_k=length,
                 seed=length)
        generate(model, params, tok, prompt, max_new_tokens=4, settings=SamplingSettings(
            mirostat_tau=3.0 + length / 100, repetition_penalty=1.2, dry_multiplier=0.5))
    assert compiled_programs() == compiled
