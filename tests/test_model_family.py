"""The configurable model family: every variant decodes with the cache exactly as a full forward pass,
the default configuration is the original model (same logits, same text), and run folders record
the choices."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from txtgen_nb import generate, load_model_and_tokenizer
from txtgen_nb.checkpoint import load_run, save_run
from txtgen_nb.model import Transformer, init_cache

import legacy_model
from conftest import assert_trace_equals_forward, tiny_config

VARIANTS = {
    "default": {},
    "minigpt": dict(norm_position="post", final_norm=False, activation="relu", qkv_fused=False,
                    tie_embeddings=False, head_bias=True, layer_norm_eps=1e-6),
    "llama": dict(norm="rmsnorm", activation="swiglu", positions="rope", rope_theta=500.0, qkv_fused=False,
                  qkv_bias=False, out_bias=False, mlp_bias=False, num_kv_heads=2, tie_embeddings=False, d_ff=48),
    "gqa_fused_mqa": dict(num_kv_heads=1, activation="gelu", norm_bias=False),
    "no_positions": dict(positions="none", norm="rmsnorm", final_norm=False, activation="swiglu"),
    "rope_post_norm": dict(positions="rope", norm_position="post", tie_embeddings=False, head_bias=True),
}


def perturbed(model: Transformer, seed: int = 1) -> nnx.State:
    """Params with every leaf moved by noise, so zero-initialised biases and unit scales matter too."""
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [x + 0.2 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_decoding_equals_full_forward(variant, tiny_tok):
    config = tiny_config(**VARIANTS[variant])
    model = Transformer(config, rngs=nnx.Rngs(3))
    params = perturbed(model)
    model = nnx.merge(nnx.graphdef(model), params)
    result = generate(model, params, tiny_tok, ["Once upon", "The quick brown fox jumps"], max_new_tokens=6,
                      temperature=1.0, top_k=0, seed=[1, 2], trace=True)
    assert_trace_equals_forward(model, result.trace, 2e-4)


@pytest.mark.parametrize("variant", ["llama", "gqa_fused_mqa"])
def test_cache_has_kv_heads(variant):
    config = tiny_config(**VARIANTS[variant])
    cache = init_cache(config, batch=3, size=16)
    assert cache[0]["k"].shape == (3, config.num_kv_heads, 16, config.head_dim)
    model = Transformer(config, rngs=nnx.Rngs(0))
    tokens = jnp.ones((3, 4), jnp.int32)
    mask = jnp.broadcast_to(jnp.arange(16)[None, None] <= jnp.arange(4)[None, :, None], (3, 4, 16))
    _, new = model(tokens, positions=jnp.arange(4)[None], mask=mask, cache=cache, cache_index=0)
    assert new[0]["v"].shape == cache[0]["v"].shape and bool(jnp.any(new[0]["v"][:, :, :4] != 0))


def legacy_from(params: nnx.State, config) -> legacy_model.Transformer:
    """The pre-change model class holding the same parameters."""
    legacy = nnx.eval_shape(lambda: legacy_model.Transformer(config, rngs=nnx.Rngs(0)))
    state = nnx.state(legacy, nnx.Param)
    nnx.replace_by_pure_dict(state, nnx.to_pure_dict(params))
    return nnx.merge(nnx.graphdef(legacy), state)


def test_demo_model_is_unchanged():
    model, params, tokenizer, config = load_model_and_tokenizer()
    legacy = legacy_from(params, config)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, config.vocab_size, (2, 40)), jnp.int32)
    np.testing.assert_array_equal(np.asarray(model(tokens)), np.asarray(legacy(tokens)))
    kwargs = dict(max_new_tokens=40, temperature=[0.0, 0.8, 1.2], top_p=[1.0, 0.9, 1.0], seed=[0, 1, 2])
    new = generate(model, params, tokenizer, "Once upon a time", **kwargs)
    old = generate(legacy, params, tokenizer, "Once upon a time", **kwargs)
    assert new.texts == old.texts
    assert len(set(new.texts)) == 3


def test_tiny_run_loads_unchanged(tiny_run, tiny_tok):
    model, params, _, config = load_run(tiny_run)
    legacy = legacy_from(params, config)
    kwargs = dict(max_new_tokens=10, temperature=1.0, top_k=0, seed=[5, 6])
    assert generate(model, params, tiny_tok, "Hello", **kwargs).texts == \
        generate(legacy, params, tiny_tok, "Hello", **kwargs).texts


def test_save_run_records_choices(tiny_tok, tmp_path):
    config = tiny_config(**VARIANTS["llama"])
    model = Transformer(config, rngs=nnx.Rngs(0))
    params = perturbed(model)
    save_run(tmp_path / "run", params, config, tiny_tok)
    saved = json.loads((tmp_path / "run" / "model_config.json").read_text())
    for field, value in VARIANTS["llama"].items():
        assert saved[field] == value, field
    loaded, loaded_params, _, loaded_config = load_run(tmp_path / "run" / "best_checkpoint")
    assert loaded_config == config
    tokens = jnp.arange(10)[None]
    np.testing.assert_allclose(np.asarray(loaded(tokens)), np.asarray(nnx.merge(nnx.graphdef(model), params)(tokens)),
                               atol=1e-5)
