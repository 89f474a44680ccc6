"""Train a byte-level BPE tokenizer and a small transformer on generated stories or your own text.

Writes the seed's run layout ``OUT/{tokenizer.json, model_config.json, best_checkpoint/}`` (the
checkpoint with the best held-out loss, saved atomically), plus ``train_log.json``,
``loss_curve.png`` and ``train_state/`` (params, optimiser state and step, for ``--resume``).

Documents are encoded ``<bos> text <eos>`` and cut into rows of ``max_len + 1`` tokens (a long
document continues in the next row); padding is masked out of the loss, so the model learns to
emit ``<eos>`` when a story ends.

Usage::

    python -m txtgen_nb.train --out output --steps 1500
    python -m txtgen_nb.train --text my_book.txt --out my_run --steps 300 --d-model 64 --layers 2
    result = train(out="run", steps=30, d_model=32, layers=1, heads=2, vocab_size=300, max_len=32)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

MIN_VOCAB_SIZE = 256 + 4  # every byte plus the special tokens
DTYPES = ("float32", "bfloat16")
STATE_DIR = "train_state"
LOG_FILE = "train_log.json"
CURVE_FILE = "loss_curve.png"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; defaults build the bundled demo model.

    Usage: ``TrainConfig(out="run", steps=100, d_model=64, layers=2, heads=2)``
    """

    out: str = "output"
    text: tuple[str, ...] = ()
    num_stories: int = 20000
    steps: int = 1200
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    vocab_size: int = 2048
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    max_len: int = 128
    seed: int = 0
    resume: bool = False
    eval_every: int = 100
    eval_fraction: float = 0.05
    eval_batches: int = 8
    dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns. Usage: ``train(...).best_eval_loss``"""

    out_dir: Path
    checkpoint_dir: Path
    best_eval_loss: float
    final_train_loss: float
    steps: int
    tokens_per_second: float
    elapsed_seconds: float
    log: dict[str, Any]


_POSITIVE_INTS = ("steps", "batch_size", "vocab_size", "d_model", "layers", "heads", "max_len",
                  "eval_every", "eval_batches")


def validate(config: TrainConfig) -> None:
    """Raise ``ValueError``/``FileNotFoundError`` for the first bad setting or input file.

    Usage: ``validate(TrainConfig(heads=3))  # ValueError: --heads (3) must divide --d-model (256)``
    """
    for name in _POSITIVE_INTS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if not config.text and (not isinstance(config.num_stories, int) or config.num_stories < 2):
        raise ValueError(f"--num-stories must be an integer >= 2, got {config.num_stories!r}")
    for name in ("lr", "grad_clip"):
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}")
    if not (isinstance(config.warmup_steps, int) and config.warmup_steps >= 0):
        raise ValueError(f"--warmup-steps must be an integer >= 0, got {config.warmup_steps!r}")
    if not (0 <= config.weight_decay < 1):
        raise ValueError(f"--weight-decay must be in [0, 1), got {config.weight_decay!r}")
    if not (0 < config.eval_fraction < 1):
        raise ValueError(f"eval_fraction must be between 0 and 1, got {config.eval_fraction!r}")
    if config.d_model % config.heads:
        raise ValueError(f"--heads ({config.heads}) must divide --d-model ({config.d_model})")
    if config.vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"--vocab-size {config.vocab_size} is too small: a byte-level tokenizer needs at least "
            f"{MIN_VOCAB_SIZE} (256 bytes + 4 special tokens)"
        )
    if config.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}")
    for path in config.text:
        read_documents([path])
    if config.resume and not (Path(config.out) / STATE_DIR).is_dir():
        raise FileNotFoundError(f"nothing to resume: {Path(config.out) / STATE_DIR} not found")


def read_documents(paths: Sequence[str | Path]) -> list[str]:
    """Documents from text files, one per blank-line-separated block.

    Usage: ``read_documents(["book.txt"])``
    """
    docs: list[str] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"text file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read {path} as UTF-8 text ({err})") from None
        blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
        if not blocks:
            raise ValueError(f"text file is empty: {path}")
        docs.extend(blocks)
    return docs


def train_tokenizer(documents: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer (``decode(encode(s)) == s``) with ``SPECIAL_TOKENS`` as ids 0..3.

    Usage: ``tok = train_tokenizer(["Once upon a time."], 300)``
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from txtgen_nb.tokenizer import SPECIAL_TOKENS

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return tokenizer


def make_rows(token_ids: Sequence[Sequence[int]], max_len: int, bos: int, eos: int, pad: int):
    """``[N, max_len + 1]`` int32 rows: each ``<bos> ids <eos>`` cut into windows that overlap by one
    token (so every token is a target once), right-padded with ``pad``.

    Usage: ``make_rows([[5, 6]], max_len=4, bos=2, eos=3, pad=0)  # [[2, 5, 6, 3, 0]]``
    """
    import numpy as np

    rows = []
    for ids in token_ids:
        seq = [bos, *ids, eos]
        for start in range(0, max(len(seq) - 1, 1), max_len):
            chunk = seq[start:start + max_len + 1]
            rows.append(chunk + [pad] * (max_len + 1 - len(chunk)))
    return np.asarray(rows, dtype=np.int32)


def _schedule(config: TrainConfig):
    import optax

    warmup = min(config.warmup_steps, max(config.steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.lr, warmup_steps=warmup,
        decay_steps=max(config.steps, warmup + 1), end_value=config.lr * 0.1,
    )


def make_optimizer(config: TrainConfig):
    """AdamW with warm-up then cosine decay, gradient clipping, and no decay on biases/norms.

    Usage: ``tx = make_optimizer(TrainConfig(steps=100))``
    """
    import jax
    import optax

    decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(_schedule(config), b1=0.9, b2=0.95, weight_decay=config.weight_decay, mask=decay_mask),
    )


def _make_steps(graphdef, tx, pad: int):
    """The jitted train step and the jitted eval step (summed loss and token count)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    def losses(params, batch):
        model = nnx.merge(graphdef, params)
        logits = model(batch[:, :-1])
        targets = batch[:, 1:]
        weights = (targets != pad).astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return jnp.sum(nll * weights), jnp.sum(weights)

    def mean_loss(params, batch):
        total, count = losses(params, batch)
        return total / jnp.maximum(count, 1.0)

    @jax.jit
    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(mean_loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step, jax.jit(losses)


def _batch_indices(seed: int, step: int, n: int, batch_size: int):
    """Rows for ``step``: a pure function of (seed, step), so a resumed run sees the same data."""
    import numpy as np

    rng = np.random.default_rng([seed, step])
    return rng.choice(n, size=batch_size, replace=n < batch_size)


def _evaluate(eval_step, params, eval_rows, batch_size: int, max_batches: int) -> float:
    total, count = 0.0, 0.0
    for start in range(0, min(len(eval_rows), batch_size * max_batches), batch_size):
        batch = eval_rows[start:start + batch_size]
        s, c = eval_step(params, batch)
        total, count = total + float(s), count + float(c)
    return total / max(count, 1.0)


def _cast_params(params, dtype: str):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    pure = nnx.to_pure_dict(params)
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=dtype), pure)


def _state_tree(params, opt_state, step: int, best: float) -> dict[str, Any]:
    import jax
    import numpy as np
    from flax import nnx

    return {
        "params": nnx.to_pure_dict(params),
        "opt_state": [np.asarray(x) for x in jax.tree_util.tree_leaves(opt_state)],
        "step": np.asarray(step, dtype=np.int64),
        "best_eval_loss": np.asarray(best, dtype=np.float64),
    }


def _save_state(out: Path, params, opt_state, step: int, best: float) -> None:
    from txtgen_nb.checkpoint import save_checkpoint

    save_checkpoint(_state_tree(params, opt_state, step, best), out / STATE_DIR)


def _restore_state(out: Path, params, opt_state):
    """Restore ``(params, opt_state, step, best)`` from ``out/train_state`` into the given structure."""
    import jax
    import orbax.checkpoint as ocp
    from flax import nnx

    target = _state_tree(params, opt_state, 0, 0.0)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    path = (out / STATE_DIR).absolute()
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(path, abstract)
    except Exception as err:  # Orbax raises many types for missing, damaged or mismatched files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"cannot resume from {path}: {reason[:200]}") from None
    nnx.replace_by_pure_dict(params, restored["params"])
    treedef = jax.tree_util.tree_structure(opt_state)
    opt_state = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(x) for x in restored["opt_state"]])
    return params, opt_state, int(restored["step"]), float(restored["best_eval_loss"])


def plot_losses(log: dict[str, Any], path: str | Path) -> None:
    """Save the train and held-out loss curves as a PNG (Agg, no pyplot).

    Usage: ``plot_losses(json.load(open("output/train_log.json")), "curve.png")``
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if log["train"]:
        steps, losses = zip(*log["train"])
        ax.plot(steps, losses, alpha=0.35, label="train (per step)")
        window = max(1, len(losses) // 50)
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, label="train (smoothed)")
    if log["eval"]:
        steps, losses = zip(*log["eval"])
        ax.plot(steps, losses, "o-", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _write_log(out: Path, log: dict[str, Any]) -> None:
    tmp = out / f".{LOG_FILE}.tmp"
    tmp.write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / LOG_FILE)
    plot_losses(log, out / CURVE_FILE)


def _resumed_config(config: TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    """On resume, data and model settings come from the saved run; ``steps`` and ``eval_every`` from now."""
    path = Path(config.out) / LOG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} not found")
    log = json.loads(path.read_text(encoding="utf-8"))
    saved = {k: v for k, v in log["flags"].items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    saved["text"] = tuple(saved.get("text", ()))
    merged = dataclasses.replace(TrainConfig(**saved), steps=config.steps, eval_every=config.eval_every,
                                 resume=True, out=config.out)
    return merged, log


def _load_data(config: TrainConfig, tokenizer_path: Path | None):
    from txtgen_nb.corpus import generate_stories
    from txtgen_nb.tokenizer import load_tokenizer, special_ids

    docs = read_documents(config.text) if config.text else generate_stories(config.num_stories, seed=config.seed)
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else train_tokenizer(docs, config.vocab_size)
    ids = special_ids(tokenizer)
    encoded = [e.ids for e in tokenizer.encode_batch(docs, add_special_tokens=False)]
    rows = make_rows(encoded, config.max_len, ids.bos, ids.eos, ids.pad)
    if len(rows) < 2:
        raise ValueError("need at least 2 training rows; give more text or a smaller --max-len")
    import numpy as np

    order = np.random.default_rng(config.seed).permutation(len(rows))
    n_eval = max(1, int(round(len(rows) * config.eval_fraction)))
    return tokenizer, rows[order[n_eval:]], rows[order[:n_eval]], ids.pad, len(docs)


def train(config: TrainConfig | None = None, *, progress: bool = True, **overrides: Any) -> TrainResult:
    """Train and write a run folder; returns the best held-out loss, paths and the log.

    Usage: ``train(out="run", steps=50, d_model=32, layers=1, heads=2, vocab_size=300, max_len=32)``
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    if isinstance(config.text, (str, Path)):
        config = dataclasses.replace(config, text=(str(config.text),))
    config = dataclasses.replace(config, out=str(config.out), text=tuple(str(t) for t in config.text))
    validate(config)
    out = Path(config.out)
    previous_log: dict[str, Any] | None = None
    if config.resume:
        config, previous_log = _resumed_config(config)
    import jax
    from flax import nnx
    from tqdm.auto import tqdm

    from txtgen_nb.checkpoint import save_run
    from txtgen_nb.config import ModelConfig
    from txtgen_nb.model import Transformer, count_params

    tokenizer, train_rows, eval_rows, pad, n_docs = _load_data(
        config, out / "tokenizer.json" if config.resume else None)
    model_config = ModelConfig(
        vocab_size=tokenizer.get_vocab_size(), max_len=config.max_len, d_model=config.d_model,
        num_layers=config.layers, num_heads=config.heads,
    )
    graphdef, params = nnx.split(Transformer(model_config, rngs=nnx.Rngs(config.seed)))
    tx = make_optimizer(config)
    opt_state = tx.init(params)
    start, best = 0, math.inf
    if config.resume:
        params, opt_state, start, best = _restore_state(out, params, opt_state)
    train_step, eval_step = _make_steps(graphdef, tx, pad)
    target_counts = (train_rows[:, 1:] != pad).sum(axis=1)

    log = previous_log or {"train": [], "eval": [], "tokens_per_second": 0.0, "elapsed_seconds": 0.0}
    log.update(flags=dataclasses.asdict(config), model_config=model_config.to_dict(),
               num_params=count_params(params), num_documents=n_docs,
               num_train_rows=int(len(train_rows)), num_eval_rows=int(len(eval_rows)))
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out / "best_checkpoint"
    elapsed_before = float(log["elapsed_seconds"])
    tokens, train_time = 0, 0.0
    began = time.perf_counter()

    def checkpoint(step: int) -> None:
        nonlocal best
        eval_loss = _evaluate(eval_step, params, eval_rows, config.batch_size, config.eval_batches)
        log["eval"].append([step, eval_loss])
        if eval_loss < best:
            best = eval_loss
            save_run(out, _cast_params(params, config.dtype), model_config, tokenizer)
        _save_state(out, params, opt_state, step, best)
        log.update(best_eval_loss=best, step=step, elapsed_seconds=elapsed_before + time.perf_counter() - began)
        _write_log(out, log)

    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress,
               desc="training", dynamic_ncols=True)
    last = start
    for step in bar:
        rows = _batch_indices(config.seed, step, len(train_rows), config.batch_size)
        batch = train_rows[rows]
        t0 = time.perf_counter()
        params, opt_state, loss_array = train_step(params, opt_state, batch)
        loss = float(loss_array)
        if step > start:  # the first step includes compilation
            train_time += time.perf_counter() - t0
            tokens += int(target_counts[rows].sum())
        last = step + 1
        log["train"].append([last, loss])
        tok_s = tokens / train_time if train_time else 0.0
        log["tokens_per_second"] = tok_s
        if last % config.eval_every == 0 or last == config.steps:
            checkpoint(last)
        # after the evaluation, so the bar's last state shows the final best held-out loss
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}", best_eval=f"{best:.3f}")
    bar.close()
    if start >= config.steps and not checkpoint_dir.is_dir():
        checkpoint(start)
    jax.block_until_ready(params)
    return TrainResult(
        out_dir=out, checkpoint_dir=checkpoint_dir, best_eval_loss=best,
        final_train_loss=log["train"][-1][1] if log["train"] else math.nan,
        steps=last,
        tokens_per_second=float(log["tokens_per_second"]), elapsed_seconds=float(log["elapsed_seconds"]),
        log=log,
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2, no usage dump
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``txtgen-train`` argument parser. Usage: ``build_parser().parse_args(["--steps", "10"])``"""
    d = TrainConfig()
    p = _Parser(prog="txtgen-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=d.out, help="run folder to write (default: %(default)s)")
    p.add_argument("--text", nargs="+", default=[], metavar="FILE",
                   help="train on these UTF-8 files (a document per blank-line-separated block) "
                        "instead of the generated story corpus")
    p.add_argument("--num-stories", type=int, default=d.num_stories, help="stories to generate (default: %(default)s)")
    p.add_argument("--steps", type=int, default=d.steps, help="total optimiser steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="rows per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default: %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="default: %(default)s")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="default: %(default)s")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="global-norm clip (default: %(default)s)")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size, help="BPE vocabulary (default: %(default)s)")
    p.add_argument("--d-model", type=int, default=d.d_model, help="default: %(default)s")
    p.add_argument("--layers", type=int, default=d.layers, help="default: %(default)s")
    p.add_argument("--heads", type=int, default=d.heads, help="default: %(default)s")
    p.add_argument("--max-len", type=int, default=d.max_len, help="context length (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="default: %(default)s")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state up to --steps")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="held-out loss every N steps")
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype,
                   help="storage dtype of the saved checkpoint; training is always float32")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Map parsed CLI flags to a ``TrainConfig``. Usage: ``config_from_args(build_parser().parse_args([]))``"""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["text"] = tuple(args.text)
    return TrainConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``txtgen-train``. Usage: ``main(["--steps", "100", "--out", "run"])``"""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    try:
        validate(config)
        result = train(config, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: txtgen-train --out {config.out} --resume", file=sys.stderr)
        return 130
    print(f"best held-out loss {result.best_eval_loss:.3f}; run folder: {result.out_dir} "
          f"({result.tokens_per_second:,.0f} tokens/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
