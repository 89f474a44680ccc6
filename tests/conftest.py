"""Shared fixtures: a tiny random model saved in the seed's layout with ``save_run``."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from flax import nnx
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from txtgen_nb.checkpoint import save_run
from txtgen_nb.config import ModelConfig
from txtgen_nb.model import Transformer
from txtgen_nb.tokenizer import SPECIAL_TOKENS

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # CLI subprocesses share one throw-away XLA cache
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="txtgen-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
REPO = Path(__file__).resolve().parents[1]
TINY_TEXT = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "The quick brown fox jumps over the lazy dog. Hello world!",
    "Person A: How are you?\nPerson B: I am fine, thank you.",
]


def tiny_tokenizer(vocab_size: int = 300) -> Tokenizer:
    """A byte-level BPE tokenizer trained on a few sentences."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TINY_TEXT * 20, trainer)
    return tok


def tiny_config(**overrides) -> ModelConfig:
    values = dict(vocab_size=300, max_len=32, d_model=32, num_layers=2, num_heads=4)
    return ModelConfig(**{**values, **overrides})


@pytest.fixture(scope="session")
def tiny_tok() -> Tokenizer:
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model():
    """``(model, params, config)`` for a random tiny transformer."""
    config = tiny_config()
    model = Transformer(config, rngs=nnx.Rngs(0))
    return model, nnx.state(model, nnx.Param), config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_tok, tiny_model) -> Path:
    """A run folder ``.../output`` with tokenizer.json, model_config.json and best_checkpoint/."""
    out = tmp_path_factory.mktemp("run") / "output"
    model, _, config = tiny_model
    save_run(out, model, config, tiny_tok)
    return out


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches():
    """Drop compiled programs after each test file, so the memory of one long pytest process stays
    bounded (the sampler tests alone compile hundreds of programs)."""
    yield
    import jax

    jax.clear_caches()


def assert_trace_equals_forward(model, trace, tolerance: float = 1e-4) -> None:
    """Every traced step's raw logits equal one forward over the row's whole text (no cache)."""
    import jax.numpy as jnp
    import numpy as np

    for row in range(trace.num_rows):
        ids = trace.context_ids(row, int(trace.lengths[row]))
        full = np.asarray(model(jnp.asarray(ids)[None])[0])
        start = len(trace.prompt_ids[row]) - 1
        for step in range(int(trace.lengths[row])):
            np.testing.assert_allclose(trace.logits[row, step], full[start + step], atol=tolerance, rtol=tolerance)


def assert_the_loop_drew_from(trace, row: int, final) -> None:
    """The decode loop's own draws, redone with the row's key from the replayed final logits ``[L, V]``, pick
    the tokens it picked; and one step at a time gives the same stages as the whole row at once."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from txtgen_nb import rng

    n = int(trace.lengths[row])
    key = rng.row_key(jnp.asarray(rng.seed_words(trace.seeds[row])))
    redrawn = jax.vmap(lambda i, logits: rng.draw(key, i, logits))(jnp.arange(n), jnp.asarray(final))
    assert np.asarray(redrawn).tolist() == trace.token_ids[row, :n].tolist()
    step = n // 2
    np.testing.assert_allclose(np.asarray(trace.stages(row, step).final), np.asarray(final)[step], atol=1e-5)
