"""Quality of the bundled demo model (or any run): held-out loss, grammatical share, greedy story.

Not a test: prints Markdown for README.md. Usage::

    python benchmarks/demo_quality.py                       # the bundled demo
    python benchmarks/demo_quality.py --checkpoint output/best_checkpoint --samples 200
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from txtgen_nb import evaluate_text, generate, load_model_and_tokenizer
from txtgen_nb.corpus import complete_sentences, generate_stories, grammatical_rate, is_grammatical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: bundled demo)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--eval-stories", type=int, default=200)
    args = parser.parse_args()

    model, params, tokenizer, config = load_model_and_tokenizer(args.checkpoint)
    start = time.perf_counter()
    stories = generate_stories(args.eval_stories, seed=987654321)
    nll = float(np.mean([evaluate_text(model, params, tokenizer, story) for story in stories]))
    print(f"## Demo model quality ({config.num_layers} layers, d_model {config.d_model}, vocab {config.vocab_size})\n")
    print("| measure | value |\n|---|---|")
    print(f"| held-out loss on {args.eval_stories} fresh corpus stories (nats/token) | {nll:.3f} |")
    print(f"| held-out perplexity | {math.exp(nll):.2f} |")

    rows = [("0.5", 0.5, 1.0), ("0.8, top-p 0.9", 0.8, 0.9), ("1.0", 1.0, 1.0), ("1.5", 1.5, 1.0)]
    for label, temperature, top_p in rows:
        result = generate(model, params, tokenizer, "", num_samples=args.samples, seed=0, temperature=temperature,
                          top_k=0, top_p=top_p, max_new_tokens=config.max_len)
        sentences = [s for text in result.texts for s in complete_sentences(text)]
        ended = sum(r == "eos" for r in result.stop_reasons)
        print(f"| grammatical sentences, {args.samples} samples at temperature {label} | "
              f"{grammatical_rate(result.texts):.1%} of {len(sentences)} ({ended} samples ended with EOS) |")

    greedy = generate(model, params, tokenizer, "Once upon a time", temperature=0.0, max_new_tokens=config.max_len)
    text = greedy.texts[0]
    verdicts = [is_grammatical(s) for s in complete_sentences(text)]
    print(f"| greedy \"Once upon a time\": grammatical sentences | {sum(verdicts)}/{len(verdicts)} |")
    print(f"\nGreedy continuation of \"Once upon a time\":\n\n> {text}\n")
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.checkpoint is None:
        try:
            from txtgen_nb.api import DEMO_DIR
            log = json.loads((DEMO_DIR / "train_log.json").read_text())
            print(f"Training: {log['step']} steps in {log['elapsed_seconds'] / 60:.1f} min, best held-out loss "
                  f"{log['best_eval_loss']:.3f}, {log['num_params']:,} parameters")
        except (OSError, KeyError, ValueError):
            pass


if __name__ == "__main__":
    main()
