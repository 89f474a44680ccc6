"""Any NNX module ``__call__(tokens [B, T]) -> logits [B, T, V]`` generates: its forward pass is
recomputed inside the same compiled loop, left padding never reaches it, settings stay traced."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from txtgen_nb import evaluate_text, generate
from txtgen_nb.generation import compiled_programs
from txtgen_nb.tokenizer import encode_prompt

from test_import_minigpt import TUTORIAL, MiniGPT


class CausalMeanLM(nnx.Module):
    """A model of the user's own: running mean of token embeddings, then a head. No context limit."""

    def __init__(self, vocab: int, d: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, d, rngs=rngs)
        self.head = nnx.Linear(d, vocab, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)
        mean = jnp.cumsum(x, axis=1) / jnp.arange(1, tokens.shape[1] + 1)[None, :, None]
        return self.head(jnp.tanh(3.0 * mean))


class SizedMiniGPT(MiniGPT):
    """The tutorial's module with its context as an attribute, as a user might add."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.max_len = kwargs["maxlen"]


MODULES = {
    "causal_mean": lambda: CausalMeanLM(300, 16, rngs=nnx.Rngs(1)),
    "minigpt_max_len": lambda: SizedMiniGPT(**TUTORIAL, rngs=nnx.Rngs(2)),
}


def greedy(module, ids: list[int], steps: int) -> list[int]:
    out: list[int] = []
    for _ in range(steps):
        out.append(int(jnp.argmax(module(jnp.asarray([ids + out]))[0, -1])))
    return out


@pytest.mark.parametrize("name", ["causal_mean", pytest.param("minigpt_max_len", marks=pytest.mark.slow)])
def test_own_module_generates_like_its_forward_pass(name, tiny_tok):
    module = MODULES[name]()
    params = nnx.state(module, nnx.Param)
    before = jax.tree_util.tree_map(np.asarray, params)
    prompts = ["Once upon a time, there was", "Hi"]
    result = generate(module, params, tiny_tok, prompts, max_new_tokens=6, temperature=0.0, trace=True)
    for row, prompt in enumerate(prompts):
        ids = encode_prompt(tiny_tok, prompt)
        expected = greedy(module, ids, 6)
        assert result.new_token_ids[row] == expected[:len(result.new_token_ids[row])]
        full = np.asarray(module(jnp.asarray([ids + result.new_token_ids[row]]))[0])
        steps = int(result.trace.lengths[row])
        np.testing.assert_allclose(result.trace.logits[row, :steps], full[len(ids) - 1:len(ids) - 1 + steps],
                                   atol=1e-5, rtol=1e-5)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in
               zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(nnx.state(module, nnx.Param))))


def test_own_module_rows_are_independent_and_settings_do_not_recompile(tiny_tok):
    module = MODULES["minigpt_max_len"]()
    params = nnx.state(module, nnx.Param)
    prompts = ["Once upon a time", "The quick brown fox jumps over"]
    batch = generate(module, params, tiny_tok, prompts, max_new_tokens=8, temperature=1.0, seed=[4, 5])
    single = generate(module, params, tiny_tok, prompts[1], max_new_tokens=8, temperature=1.0, seed=5)
    assert batch.texts[1] == single.texts[0]
    compiled = compiled_programs()
    generate(module, params, tiny_tok, prompts, max_new_tokens=5, temperature=[0.3, 1.4], top_p=0.8, seed=[1, 2])
    assert compiled_programs() == compiled


def test_evaluate_text_of_own_module(tiny_tok):
    module = MODULES["causal_mean"]()
    text = "Once upon a time, there was a little girl."
    ids = encode_prompt(tiny_tok, text)
    logp = jax.nn.log_softmax(module(jnp.asarray([ids[:-1]]))[0], axis=-1)
    expected = -float(np.mean([logp[i, ids[i + 1]] for i in range(len(ids) - 1)]))
    assert evaluate_text(module, nnx.state(module, nnx.Param), tiny_tok, text) == pytest.approx(expected, rel=1e-5)
