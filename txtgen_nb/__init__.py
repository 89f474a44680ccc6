"""txtgen-nb: generate text from small transformer language models and see how sampling works.

Usage::

    from txtgen_nb import load_model_and_tokenizer, generate_text, demo_checkpoint
    model, params, tokenizer, config = load_model_and_tokenizer(demo_checkpoint())
    print(generate_text(model, params, tokenizer, "Once upon a time"))
"""

from txtgen_nb.api import MODELS, demo_checkpoint, generate_text, load_model_and_tokenizer, smollm2_path, stream_text
from txtgen_nb.checkpoint import load_run, save_run
from txtgen_nb.config import ModelConfig, load_config
from txtgen_nb.generation import (
    RECOMMENDED, GenerationResult, SamplingSettings, Stream, Trace, evaluate_text, generate, generate_stream,
    next_token_logits,
)
from txtgen_nb.sampling import filter_logits, filter_stages, sample_token

__all__ = [
    "MODELS", "RECOMMENDED", "GenerationResult", "ModelConfig", "SamplingSettings", "Stream", "Trace", "demo_checkpoint",
    "evaluate_text", "filter_logits", "filter_stages", "generate", "generate_stream", "generate_text", "load_config",
    "load_model_and_tokenizer", "load_run", "next_token_logits", "sample_token", "save_run", "smollm2_path", "stream_text",
]
__version__ = "0.1.0"
