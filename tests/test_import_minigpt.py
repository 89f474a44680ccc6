"""The JAX miniGPT tutorial's checkpoints load as they are saved, and give the tutorial module's logits.

The tutorial's module (jax-ai-stack ``docs/source/JAX_for_LLM_pretraining.md``) is written out
here, tiny and without the sharding annotations; ``nnx.List`` is what Flax 0.12 needs for its list
of blocks. Every weight is perturbed so that zero biases and unit scales count too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from txtgen_nb import generate, load_model_and_tokenizer
from txtgen_nb.tokenizer import encode_prompt

TUTORIAL = dict(maxlen=32, vocab_size=300, embed_dim=32, num_heads=4, feed_forward_dim=48, num_transformer_blocks=2)


def causal_attention_mask(seq_len):
    return jnp.tril(jnp.ones((seq_len, seq_len)))


class TransformerBlock(nnx.Module):
    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, *, rngs: nnx.Rngs, rate: float = 0.1):
        self.mha = nnx.MultiHeadAttention(num_heads=num_heads, in_features=embed_dim, rngs=rngs)
        self.dropout1 = nnx.Dropout(rate=rate)
        self.layer_norm1 = nnx.LayerNorm(epsilon=1e-6, num_features=embed_dim, rngs=rngs)
        self.linear1 = nnx.Linear(in_features=embed_dim, out_features=ff_dim, rngs=rngs)
        self.linear2 = nnx.Linear(in_features=ff_dim, out_features=embed_dim, rngs=rngs)
        self.dropout2 = nnx.Dropout(rate=rate)
        self.layer_norm2 = nnx.LayerNorm(epsilon=1e-6, num_features=embed_dim, rngs=rngs)

    def __call__(self, inputs, training: bool = False):
        _, seq_len, _ = inputs.shape
        mask = causal_attention_mask(seq_len)
        attention_output = self.mha(inputs_q=inputs, mask=mask, decode=False)
        attention_output = self.dropout1(attention_output, deterministic=not training)
        out1 = self.layer_norm1(inputs + attention_output)
        ffn_output = self.linear2(nnx.relu(self.linear1(out1)))
        ffn_output = self.dropout2(ffn_output, deterministic=not training)
        return self.layer_norm2(out1 + ffn_output)


class TokenAndPositionEmbedding(nnx.Module):
    def __init__(self, maxlen: int, vocab_size: int, embed_dim: int, *, rngs: nnx.Rngs):
        self.token_emb = nnx.Embed(num_embeddings=vocab_size, features=embed_dim, rngs=rngs)
        self.pos_emb = nnx.Embed(num_embeddings=maxlen, features=embed_dim, rngs=rngs)

    def __call__(self, x):
        positions = jnp.arange(0, x.shape[1])[None, :]
        return self.token_emb(x) + self.pos_emb(positions)


class MiniGPT(nnx.Module):
    def __init__(self, maxlen, vocab_size, embed_dim, num_heads, feed_forward_dim, num_transformer_blocks, rngs):
        self.embedding_layer = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim, rngs=rngs)
        self.transformer_blocks = nnx.List([TransformerBlock(embed_dim, num_heads, feed_forward_dim, rngs=rngs)
                                            for _ in range(num_transformer_blocks)])
        self.output_layer = nnx.Linear(in_features=embed_dim, out_features=vocab_size, rngs=rngs)

    def __call__(self, inputs, training: bool = False):
        x = self.embedding_layer(inputs)
        for transformer_block in self.transformer_blocks:
            x = transformer_block(x, training=training)
        return self.output_layer(x)


@pytest.fixture(scope="module")
def tutorial_model() -> MiniGPT:
    model = MiniGPT(**TUTORIAL, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    nnx.update(model, jax.tree_util.tree_unflatten(
        treedef, [x + 0.1 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]))
    return model


def linen_names(tree: dict) -> dict:
    """The same parameters as a Flax linen MiniGPT names them (``transformer_blocks_0`` ...)."""
    blocks = tree.pop("transformer_blocks")
    return {**tree, **{f"transformer_blocks_{i}": block for i, block in blocks.items()}}


def save_tutorial_way(model: MiniGPT, root: Path, tiny_tok, layout: str) -> Path:
    root.mkdir(parents=True)
    (root / "tokenizer.json").write_text(tiny_tok.to_str())
    path = (root / "save").absolute()
    if layout == "nnx_state":  # exactly the tutorial's "Saving the checkpoint" cell
        ocp.PyTreeCheckpointer().save(path, args=ocp.args.PyTreeSave(nnx.state(model)), force=True)
        return path
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    tree = {"params": linen_names(pure) if layout == "linen" else pure}
    if layout == "train_state":
        zeros = jax.tree_util.tree_map(jnp.zeros_like, pure)
        tree = {**tree, "step": 10, "opt_state": {"mu": zeros, "nu": zeros}}
    ocp.PyTreeCheckpointer().save(path, args=ocp.args.PyTreeSave(tree))
    (root / "model_config.json").write_text(json.dumps(TUTORIAL))
    return path


def greedy_reference(model: MiniGPT, ids: list[int], steps: int) -> list[int]:
    out = []
    for _ in range(steps):
        out.append(int(jnp.argmax(model(jnp.asarray([ids + out]))[0, -1])))
    return out


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(f"{p.relative_to(root)} {p.stat().st_mtime_ns}".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("layout", ["nnx_state", "params_key", "linen", "train_state"])
def test_tutorial_checkpoint_loads_and_agrees(tutorial_model, tiny_tok, tmp_path, layout):
    path = save_tutorial_way(tutorial_model, tmp_path / "run", tiny_tok, layout)
    before = digest(tmp_path / "run")
    lines = []
    model, params, tokenizer, config = load_model_and_tokenizer(path, log=lines.append)
    assert digest(tmp_path / "run") == before
    assert (config.norm_position, config.activation, config.final_norm, config.head_bias) == ("post", "relu", False,
                                                                                               True)
    assert (config.max_len, config.d_ff, config.num_heads, config.num_layers) == (32, 48, 4, 2)
    assert any("miniGPT" in line for line in lines) == (layout == "nnx_state")
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 300, (2, 20)), jnp.int32)
    np.testing.assert_allclose(np.asarray(model(tokens)), np.asarray(tutorial_model(tokens)), atol=1e-4, rtol=1e-4)
    prompt = "Once upon a time"
    result = generate(model, params, tokenizer, prompt, max_new_tokens=8, temperature=0.0)
    assert result.new_token_ids[0] == greedy_reference(tutorial_model, encode_prompt(tokenizer, prompt), 8)


def test_tutorial_config_must_match_the_shapes(tutorial_model, tiny_tok, tmp_path):
    path = save_tutorial_way(tutorial_model, tmp_path / "run", tiny_tok, "params_key")
    (tmp_path / "run" / "model_config.json").write_text(json.dumps({**TUTORIAL, "maxlen": 64, "embed_dim": 32}))
    with pytest.raises(ValueError, match=r"JAX miniGPT tutorial checkpoint does not match its config: "
                                         r"max_len 64 \(config\) vs 32 \(checkpoint\)$"):
        load_model_and_tokenizer(path)


def test_incomplete_tutorial_tree_names_layout_and_parameter(tutorial_model, tiny_tok, tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    (root / "tokenizer.json").write_text(tiny_tok.to_str())
    pure = nnx.to_pure_dict(nnx.state(tutorial_model, nnx.Param))
    del pure["output_layer"]["bias"]
    ocp.PyTreeCheckpointer().save((root / "save").absolute(), args=ocp.args.PyTreeSave(pure))
    with pytest.raises(ValueError, match="looks like the JAX miniGPT tutorial layout but is missing: output_layer/bias"):
        load_model_and_tokenizer(root / "save")
    shutil.rmtree(root / "save")
    pure["output_layer"]["bias"] = np.zeros(300, np.float32)
    pure["extra_layer"] = {"kernel": np.zeros((2, 2), np.float32)}
    ocp.PyTreeCheckpointer().save((root / "save").absolute(), args=ocp.args.PyTreeSave(pure))
    with pytest.raises(ValueError, match="JAX miniGPT tutorial layout but has unexpected parameters: "
                                         "extra_layer/kernel"):
        load_model_and_tokenizer(root / "save")
