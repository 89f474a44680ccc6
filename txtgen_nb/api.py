"""The seed's Python API: ``load_model_and_tokenizer`` and ``generate_text``.

Usage::

    from txtgen_nb import load_model_and_tokenizer, generate_text
    model, params, tokenizer, config = load_model_and_tokenizer("output/best_checkpoint")
    print(generate_text(model, params, tokenizer, "Once upon a time", max_length=50))
    for piece in stream_text(model, params, tokenizer, "Once upon a time"):   # the text as it is generated
        print(piece, end="", flush=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb.checkpoint import load_run
from txtgen_nb.config import ModelConfig
from txtgen_nb.generation import generate_stream
from txtgen_nb.model import Transformer

DEMO_DIR = Path(__file__).resolve().parent / "assets" / "demo"


def demo_checkpoint() -> Path:
    """Path of the bundled demo model's ``best_checkpoint``.

    Usage: ``load_model_and_tokenizer(demo_checkpoint())``
    """
    path = DEMO_DIR / "best_checkpoint"
    if not path.is_dir():
        raise FileNotFoundError(f"the bundled demo model is missing: {path} (run `make demo-model`)")
    return path


def load_model_and_tokenizer(
    checkpoint_dir: str | Path | None = None, tokenizer_path: str | Path | None = None, *,
    log: Callable[[str], None] | None = None,
) -> tuple[Transformer, nnx.State, Tokenizer, ModelConfig]:
    """Load ``(model, params, tokenizer, config)``; no ``checkpoint_dir`` means the bundled demo.

    Any layout ``checkpoint.load_run`` detects loads: a run folder, a JAX miniGPT tutorial
    checkpoint, a Hugging Face GPT-2/Llama folder. ``log`` (e.g. ``print``) receives the loading lines.

    Usage: ``model, params, tok, cfg = load_model_and_tokenizer("output/best_checkpoint")``
    """
    return load_run(demo_checkpoint() if checkpoint_dir is None else checkpoint_dir, tokenizer_path, log=log)


def generate_text(
    model: Transformer,
    params: nnx.State,
    tokenizer: Tokenizer,
    prompt: str,
    max_length: int = 100,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 1.0,
    rng_seed: int = 42,
    stop: str | Sequence[str] | None = None,
) -> str:
    """The prompt followed by up to ``max_length`` sampled tokens, cut before the first ``stop``
    string to appear (generation ends there).

    Usage: ``generate_text(model, params, tok, "Once upon a time", temperature=0.8, top_k=50)``
    """
    return "".join(stream_text(model, params, tokenizer, prompt, max_length, temperature, top_k, top_p, rng_seed, stop))


def stream_text(
    model: Transformer,
    params: nnx.State,
    tokenizer: Tokenizer,
    prompt: str,
    max_length: int = 100,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 1.0,
    rng_seed: int = 42,
    stop: str | Sequence[str] | None = None,
) -> Iterator[str]:
    """:func:`generate_text` piece by piece as it is generated: the prompt, then the new text about
    every 0.1 s. The pieces join to ``generate_text``'s result.

    Usage: ``for piece in stream_text(model, params, tok, "Once upon a time"): print(piece, end="", flush=True)``
    """
    stream = generate_stream(model, params, tokenizer, prompt, max_new_tokens=max_length, temperature=temperature,
                             top_k=top_k, top_p=top_p, seed=rng_seed, stop=stop)
    yield prompt
    for pieces in stream:
        if pieces[0]:
            yield pieces[0]
