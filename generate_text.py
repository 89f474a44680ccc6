#!/usr/bin/env python3
"""Generate text from a trained checkpoint: the seed's entry point (see README.md).

Usage::

    python generate_text.py --checkpoint output/best_checkpoint --prompt "Once upon a time"

    from generate_text import load_model_and_tokenizer, generate_text
"""

import os
import sys

from txtgen_nb.api import generate_text, load_model_and_tokenizer
from txtgen_nb.cli import main

__all__ = ["generate_text", "load_model_and_tokenizer", "main"]

if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # skip the interpreter's teardown of JAX and XLA (0.3-0.6 s): a run leaves nothing to write
