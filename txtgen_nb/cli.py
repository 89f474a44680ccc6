"""Command line: ``python generate_text.py`` / ``txtgen-generate``, with the seed's banner.

Usage::

    python generate_text.py --checkpoint output/best_checkpoint --prompt "Once upon a time"
    txtgen-generate --prompt "Hello" --num-samples 3       # bundled demo model
    txtgen-generate --interactive
"""

from __future__ import annotations

import argparse
import math
import select
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

RULE = "=" * 80
THIN = "─" * 80
TITLE = " " * 30 + "TEXT GENERATION" + " " * 35


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind: type, low: float | None = None, high: float | None = None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}")
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The seed's arguments plus ``--num-samples``, ``--min-p``, ``--stop`` and ``--interactive``."""
    parser = _Parser(prog="generate_text.py", description="Generate text from a trained transformer checkpoint.")
    parser.add_argument("--checkpoint", help="checkpoint directory, Hugging Face folder or .gguf file "
                        "(default: the bundled demo model)")
    parser.add_argument("--prompt", help="input text prompt; \\n means a newline (required unless --interactive, "
                        "or a terminal on stdin)")
    parser.add_argument("--tokenizer-path", help="path to tokenizer.json (default: auto-detected)")
    parser.add_argument("--max-length", type=_number(int, 0), default=100,
                        help="maximum number of tokens to generate (default 100)")
    parser.add_argument("--temperature", type=_number(float, 0), default=0.8,
                        help="sampling temperature, 0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=_number(int, 0), default=50, help="top-k sampling, 0 = disabled (default 50)")
    parser.add_argument("--top-p", type=_number(float, 0, 1), default=1.0,
                        help="nucleus sampling, 1.0 = disabled (default 1.0)")
    parser.add_argument("--min-p", type=_number(float, 0, 1), default=0.0,
                        help="min-p sampling, 0 = disabled (default 0)")
    parser.add_argument("--seed", type=int, default=42, help="random seed for reproducibility (default 42)")
    parser.add_argument("--num-samples", type=_number(int, 1), default=1,
                        help="number of continuations, generated in one batched call (default 1)")
    parser.add_argument("--stop", action="append", default=None, metavar="TEXT",
                        help="end the text where TEXT appears (repeatable; \\n means a newline)")
    parser.add_argument("--chat", action="store_true",
                        help="send the prompt as the user's message in the model's chat template; the reply ends "
                        "at the end of its turn")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="compute dtype of the weights (default: the checkpoint's; bfloat16 halves memory)")
    parser.add_argument("--interactive", action="store_true",
                        help="prompt for text in a loop ('quit' or end of input to exit); the default without "
                        "--prompt when stdin is a terminal")
    return parser


def _backend() -> str:
    import jax

    name = jax.default_backend().lower()
    return "GPU" if name in ("gpu", "cuda", "rocm") else name.upper()


def _load(args: argparse.Namespace):
    """Load through the API's loader, which prints the seed's loading lines as it goes."""
    from txtgen_nb.api import load_model_and_tokenizer

    print(f"Backend: {_backend()}")
    if args.checkpoint is None:
        print("No --checkpoint given: using the bundled demo model")
    model, params, tokenizer, config = load_model_and_tokenizer(args.checkpoint, args.tokenizer_path, log=print,
                                                                dtype=args.dtype)
    print("✓ Model loaded successfully!")
    print(f"  Vocab size: {config.vocab_size}")
    print(f"  Max length: {config.max_len}")
    print(f"  Model size: {config.d_model}")
    print(f"  Layers: {config.num_layers}")
    if _is_demo(args.checkpoint):
        print("  Note: the demo model knows only children's stories from a small grammar; for facts, Q&A or code "
              "try --checkpoint with a real model (e.g. SmolLM2: see the README)")
    return model, params, tokenizer, config


def _is_demo(checkpoint: str | None) -> bool:
    """Whether ``checkpoint`` is the bundled demo model (or the copy ``make output`` made of it)."""
    from txtgen_nb.api import DEMO_DIR

    if checkpoint is None:
        return True
    path = Path(checkpoint).resolve()
    folder = path.parent if path.name == "best_checkpoint" else path
    demo = DEMO_DIR / "model_config.json"
    return (folder / "model_config.json").is_file() and (folder / "model_config.json").read_bytes() == demo.read_bytes()


def _max_new_tokens_line(requested: int, prompt_tokens: int, context: int) -> str:
    """The seed's ``Max new tokens`` line, saying how many the context allows when that is fewer."""
    allowed = context - min(prompt_tokens, context - 1)
    if requested <= allowed:
        return f"Max new tokens: {requested}"
    return f"Max new tokens: {requested} (the model's context of {context} allows {allowed} after this prompt)"


def _generate_and_print(model, params, tokenizer, config, prompt: str, args: argparse.Namespace) -> None:
    from txtgen_nb.generation import generate_stream
    from txtgen_nb.tokenizer import encode_prompt

    print()
    print(RULE)
    print("GENERATING TEXT")
    print(RULE)
    print(f"Prompt: {prompt}" + (" (as the user's chat message)" if args.chat else ""))
    prompt_tokens = len(encode_prompt(tokenizer, prompt, chat=args.chat))
    print(f"Prompt tokens: {prompt_tokens}")
    print(_max_new_tokens_line(args.max_length, prompt_tokens, config.max_len))
    print(f"Temperature: {args.temperature}" + (" (greedy)" if args.temperature == 0 else ""))
    print(f"Top-k: {args.top_k if args.top_k > 0 else 'disabled'}")
    print(f"Top-p: {args.top_p if args.top_p < 1.0 else 'disabled'}")
    if args.min_p > 0:
        print(f"Min-p: {args.min_p}")
    stop = [text.replace("\\n", "\n") for text in args.stop or []]
    if stop:
        print(f"Stop: {', '.join(repr(text) for text in stop)}")
    if args.num_samples > 1:
        print(f"Samples: {args.num_samples} (seeds {args.seed}..{args.seed + args.num_samples - 1})")
    start = time.perf_counter()
    stream = generate_stream(model, params, tokenizer, prompt, max_new_tokens=args.max_length,
                             temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                             seed=args.seed, num_samples=args.num_samples, stop=stop, chat=args.chat)
    _sample_header(args, 0)
    if not args.chat:
        print(prompt, end="", flush=True)
    for pieces in stream:  # the first sample's text as it is generated
        print(pieces[0], end="", flush=True)
    print()
    seconds = time.perf_counter() - start
    result = stream.result
    for i, text in enumerate(result.continuations if args.chat else result.texts):
        if i:
            _sample_header(args, i)
            print(text)
        print(f"[{len(result.new_token_ids[i])} new tokens; stopped at {_stop_reason(result.stop_reasons[i], config)}]")
    total = sum(len(ids) for ids in result.new_token_ids)
    print(f"\n{total} tokens in {seconds:.2f} s")


def _sample_header(args: argparse.Namespace, i: int) -> None:
    print()
    print(THIN)
    print("Generated text:" if args.num_samples == 1 else f"Generated text {i + 1}/{args.num_samples} "
          f"(seed {args.seed + i}):")
    print(THIN)


def _stop_reason(reason: str, config) -> str:
    return {"eos": "end-of-sequence (or end of turn)", "max_new_tokens": "max length", "context": f"model context ({config.max_len})",
            "stop": "a stop string", "interrupted": "interrupted"}[reason]


def _read_prompts():
    while True:
        try:
            text = input("\nEnter prompt (or 'quit' to exit): ")
        except EOFError:
            return
        if text.strip() == "quit":
            return
        yield text


def run(args: argparse.Namespace) -> int:
    """Load once, then generate for ``--prompt`` or each interactive prompt."""
    print(RULE)
    print(TITLE)
    print(RULE)
    print()
    model, params, tokenizer, config = _load(args)
    prompts = _read_prompts() if args.interactive or args.prompt is None else [args.prompt]
    for prompt in prompts:
        _generate_and_print(model, params, tokenizer, config, prompt.replace("\\n", "\n"), args)
    return 0


def run_in_subprocess(arguments: str) -> None:
    """Run ``python generate_text.py ARGUMENTS`` in a fresh Python process and print what it prints,
    errors and a non-zero exit status included: the command line, shown from a notebook.

    A subprocess (not ``!``, which forks the multithreaded JAX kernel) keeps the notebook clean.

    Usage: ``run_in_subprocess('--prompt "Once upon a time" --max-length 40')``
    """
    import shlex
    import subprocess

    script = Path(__file__).resolve().parents[1] / "generate_text.py"
    command = [sys.executable, str(script), *shlex.split(arguments)] if script.is_file() else [
        sys.executable, "-m", "txtgen_nb.cli", *shlex.split(arguments)]
    print(f"$ python generate_text.py {arguments}")
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    print(done.stdout + done.stderr, end="")
    if done.returncode:
        print(f"[exit status {done.returncode}]")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _prompts_on_stdin() -> bool:
    """Whether standard input can give prompts: a terminal, or piped text (``echo Hi | python
    generate_text.py``). Empty or closed input (``< /dev/null``, CI) cannot: then ``--prompt`` is needed."""
    if sys.stdin is None or sys.stdin.closed:
        return False
    if sys.stdin.isatty():
        return True
    try:
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
        return bool(ready) and bool(sys.stdin.buffer.peek(1))
    except (OSError, ValueError, AttributeError):  # no select or peek for this stream
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 bad input or files, 2 bad arguments).

    Usage: ``main(["--prompt", "Hello", "--max-length", "20"])``
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.prompt is None and not args.interactive and not _prompts_on_stdin():
        parser.error("the following arguments are required: --prompt (or --interactive, or prompts piped to stdin)")
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        print(f"error: Checkpoint not found: {args.checkpoint}", file=sys.stderr)
        return 1
    warnings.showwarning = _show_warning
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        return run(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        sys.stdout.flush()
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
