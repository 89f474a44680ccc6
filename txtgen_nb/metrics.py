"""Quality and diversity of generated text: grammatical share, distinct-n, repetition, and a sweep.

Quality comes from the story grammar (``corpus.is_grammatical``: a ground truth for the demo
model's domain); diversity from distinct-n (unique n-grams over all n-grams across samples) and
repetition (repeated n-grams inside one sample). ``sweep`` runs every setting over many seeds in one
batched ``generate`` call and summarises each setting.

Usage::

    rows = sweep(model, params, tok, "Once upon a time", temperatures=[0.5, 1.0, 1.5], top_ps=[1.0, 0.9])
    [(r.temperature, r.top_p, r.grammatical, r.distinct_2) for r in rows]
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable, Sequence

from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb.corpus import complete_sentences, grammatical_rate, tokenize
from txtgen_nb.generation import generate_stream
from txtgen_nb.model import Transformer


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i: i + n]) for i in range(len(words) - n + 1)]


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation of ``text``. Usage: ``words("She ran.")  # ['she', 'ran', '.']``"""
    return [w.lower() for w in tokenize(text)]


def distinct_n(texts: str | Iterable[str], n: int = 2) -> float:
    """Unique n-grams over all n-grams, pooled across texts (1.0 = nothing repeats; 0.0 = no n-grams).

    Usage: ``distinct_n(["the cat sat", "the cat ran"], n=2)  # 0.75``
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    grams = [g for text in texts for g in _ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(text: str, n: int = 3) -> float:
    """Share of the n-grams of one text that already occurred earlier in it (0.0 = no loops).

    Usage: ``repetition("a b c a b c", n=3)  # 0.25``
    """
    grams = _ngrams(words(text), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One setting's summary over its samples."""

    temperature: float
    top_p: float
    top_k: int
    samples: int
    sentences: int
    grammatical: float  # share of complete sentences the grammar accepts
    distinct_1: float
    distinct_2: float
    repetition_3: float  # mean over samples
    eos_share: float  # samples that ended by themselves
    texts: tuple[str, ...]


def summarise(texts: Sequence[str], stop_reasons: Sequence[str], *, temperature: float, top_p: float,
              top_k: int) -> SweepRow:
    """A :class:`SweepRow` for the texts generated with one setting.

    Usage: ``summarise(result.texts, result.stop_reasons, temperature=0.8, top_p=0.9, top_k=0)``
    """
    sentences = sum(len(complete_sentences(text)) for text in texts)
    return SweepRow(
        temperature=temperature, top_p=top_p, top_k=top_k, samples=len(texts), sentences=sentences,
        grammatical=grammatical_rate(texts), distinct_1=distinct_n(texts, 1), distinct_2=distinct_n(texts, 2),
        repetition_3=sum(repetition(t, 3) for t in texts) / max(1, len(texts)),
        eos_share=sum(r == "eos" for r in stop_reasons) / max(1, len(stop_reasons)), texts=tuple(texts),
    )


def sweep(
    model: Transformer,
    params: nnx.State,
    tokenizer: Tokenizer,
    prompt: str,
    *,
    temperatures: Sequence[float],
    top_ps: Sequence[float] = (1.0,),
    top_k: int = 0,
    seeds: int = 16,
    max_new_tokens: int = 80,
    progress: bool = True,
) -> list[SweepRow]:
    """Every (temperature, top-p) pair over ``seeds`` seeds, in one batched compiled call.

    Each setting uses seeds ``0 .. seeds-1``, so settings are compared on the same random draws.
    ``progress`` shows a bar of decoding steps while it runs.

    Usage: ``sweep(model, params, tok, "", temperatures=[0.5, 1.0], top_ps=[1.0, 0.9], seeds=32)``
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    grid = list(itertools.product(temperatures, top_ps))
    if not grid:
        raise ValueError("give at least one temperature and one top-p")
    rows = [(t, p, s) for t, p in grid for s in range(seeds)]
    stream = generate_stream(model, params, tokenizer, [prompt] * len(rows), max_new_tokens=max_new_tokens,
                             temperature=[t for t, _, _ in rows], top_p=[p for _, p, _ in rows], top_k=top_k,
                             seed=[s for _, _, s in rows], chunk_seconds=0.25)
    result = stream.run(progress=progress, desc=f"sweep: {len(rows)} texts")
    summaries = []
    for i, (t, p) in enumerate(grid):
        block = slice(i * seeds, (i + 1) * seeds)
        summaries.append(summarise(result.texts[block], result.stop_reasons[block], temperature=float(t),
                                   top_p=float(p), top_k=top_k))
    return summaries


def format_table(rows: Sequence[SweepRow]) -> str:
    """A plain-text table of sweep rows, one setting per line.

    Usage: ``print(format_table(sweep(model, params, tok, "", temperatures=[0.5, 1.0])))``
    """
    header = (f"{'temperature':>11} {'top-p':>6} {'top-k':>6} {'samples':>7} {'sentences':>9} {'grammatical':>11} "
              f"{'distinct-1':>10} {'distinct-2':>10} {'repeat-3':>8} {'ended':>6}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.temperature:>11g} {r.top_p:>6g} {r.top_k if r.top_k else 'off':>6} {r.samples:>7} "
                     f"{r.sentences:>9} {r.grammatical:>11.1%} {r.distinct_1:>10.3f} {r.distinct_2:>10.3f} "
                     f"{r.repetition_3:>8.3f} {r.eos_share:>6.0%}")
    return "\n".join(lines)
