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

import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb.corpus import complete_sentences, is_grammatical, tokenize
from txtgen_nb.generation import generate_stream
from txtgen_nb.model import Transformer
from txtgen_nb.sampling import SamplingSettings


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


def ends_in_loop(text: str, repeats: int = 3, longest: int = 20) -> bool:
    """Whether ``text`` ends in a loop: its last words are one phrase of 1 to ``longest`` words said
    ``repeats`` times in a row (our reading of Holtzman et al. 2020's "repetition": generations that
    end repeating themselves).

    Usage: ``ends_in_loop("she ran home . she ran home . she ran home .")  # True``
    """
    ws = words(text)
    return any(len(ws) >= repeats * n and len(set(tuple(ws[len(ws) - (i + 1) * n: len(ws) - i * n])
                                              for i in range(repeats))) == 1 for n in range(1, longest + 1))


HOLTZMAN_REPETITION = {"greedy": 0.7366, "beam 16": 0.2894, "nucleus 0.95": 0.0036, "human": 0.0028}
"""Holtzman et al. 2020, Table 1: the share of generations that end repeating (GPT-2 large, WebText)."""


@dataclasses.dataclass(frozen=True)
class Degeneration:
    """How a decoding method's texts degenerate: loops at the end, repeated 3-grams, diversity."""

    loops: float  # share of texts that end in a loop (ends_in_loop)
    loops_se: float  # its standard error over texts
    repetition_3: float  # mean share of repeated 3-grams within a text
    distinct_2: float  # unique 2-grams over all, pooled across texts
    texts: int


def degeneration(texts: Sequence[str]) -> Degeneration:
    """:class:`Degeneration` of a method's texts. Usage: ``degeneration(result.continuations).loops``"""
    loops = np.array([ends_in_loop(t) for t in texts], float)
    se = float(loops.std(ddof=1) / np.sqrt(loops.size)) if loops.size > 1 else float("nan")
    return Degeneration(float(loops.mean()) if loops.size else 0.0, se,
                        float(np.mean([repetition(t) for t in texts])) if texts else 0.0, distinct_n(texts), len(texts))


# rows per generate call in a sweep, every call this one shape (one compile); on the demo model tokens
# per second are flat from 16 to 256 rows
SWEEP_BATCH = 16
DIVERSITY_GROUP = 16  # stories per group of a sweep row's distinct-n (grouped_distinct_n)


@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One setting's summary over its samples (one story per seed)."""

    settings: SamplingSettings
    samples: int
    sentences: int
    grammatical: float  # share of complete sentences the grammar accepts
    grammatical_se: float  # its standard error, stories as the unit (a story's sentences are not independent)
    distinct_1: float  # unique words over all words; in a sweep, the mean over groups of DIVERSITY_GROUP stories
    distinct_2: float  # the same for 2-grams (grouped_distinct_n)
    distinct_2_se: float  # its standard error (groups, or the jackknife over stories)
    repetition_3: float  # mean over samples
    eos_share: float  # samples that ended by themselves
    texts: tuple[str, ...]

    @property
    def temperature(self) -> float:
        return float(self.settings.temperature)

    @property
    def top_p(self) -> float:
        return float(self.settings.top_p)

    @property
    def top_k(self) -> int:
        return int(self.settings.top_k)


def grammatical_share(texts: Sequence[str]) -> tuple[float, float, int]:
    """(share of complete sentences that are grammatical, its standard error, number of sentences).

    The error treats each text as one cluster of sentences (the ratio estimator's standard error), so
    a text that goes wrong once and stays wrong counts as one unlucky draw, not as many.

    Usage: ``share, se, n = grammatical_share(result.texts)``
    """
    counts = np.array([(sum(map(is_grammatical, ss)), len(ss)) for ss in map(complete_sentences, texts)], float)
    good, total = counts.reshape(-1, 2).sum(axis=0)
    if total == 0:
        return 0.0, 0.0, 0
    share, m = good / total, len(counts)
    residuals = counts[:, 0] - share * counts[:, 1]
    se = float(np.sqrt(m / (m - 1) * np.sum(residuals ** 2)) / total) if m > 1 else 0.0
    return float(share), se, int(total)


def distinct_n_se(texts: Sequence[str], n: int = 2, groups: int = 10) -> float:
    """Delete-a-group jackknife standard error of :func:`distinct_n` over ``texts`` (``groups`` groups).

    Usage: ``distinct_n_se(result.texts, n=2)``
    """
    texts = list(texts)
    g = min(groups, len(texts))
    if g < 2:
        return 0.0
    estimates = np.array([distinct_n([t for i, t in enumerate(texts) if i % g != j], n) for j in range(g)])
    return float(np.sqrt((g - 1) / g * np.sum((estimates - estimates.mean()) ** 2)))


def grouped_distinct_n(texts: Sequence[str], n: int = 2, size: int = 16) -> tuple[float, float]:
    """(mean of :func:`distinct_n` over consecutive groups of ``size`` texts, its standard error).

    Pooled distinct-n falls as texts are added (more texts share more n-grams); the mean over groups
    of one size does not, so settings with different numbers of texts compare on it. Texts past the
    last full group are left out; fewer than ``size`` texts: pooled, with the jackknife error.

    Usage: ``d2, se = grouped_distinct_n(result.texts, 2, size=16)``
    """
    groups = len(texts) // size
    if groups < 2:
        return distinct_n(texts[: size * groups or None], n), distinct_n_se(texts[: size * groups or None], n)
    values = np.array([distinct_n(texts[i * size:(i + 1) * size], n) for i in range(groups)])
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(groups))


def summarise(texts: Sequence[str], stop_reasons: Sequence[str], settings: SamplingSettings,
              group: int | None = None) -> SweepRow:
    """A :class:`SweepRow` for the texts generated with one setting; distinct-n pooled over all texts,
    or with ``group``, averaged over groups of that many (:func:`grouped_distinct_n`: rows with
    different numbers of texts stay comparable).

    Usage: ``summarise(result.texts, result.stop_reasons, SamplingSettings(0.8, 0, top_p=0.9))``
    """
    share, se, sentences = grammatical_share(texts)
    if group is None:
        d1, (d2, d2_se) = distinct_n(texts, 1), (distinct_n(texts, 2), distinct_n_se(texts, 2))
    else:
        d1, (d2, d2_se) = grouped_distinct_n(texts, 1, group)[0], grouped_distinct_n(texts, 2, group)
    return SweepRow(
        settings=settings, samples=len(texts), sentences=sentences, grammatical=share, grammatical_se=se,
        distinct_1=d1, distinct_2=d2, distinct_2_se=d2_se,
        repetition_3=sum(repetition(t, 3) for t in texts) / max(1, len(texts)),
        eos_share=sum(r == "eos" for r in stop_reasons) / max(1, len(stop_reasons)), texts=tuple(texts),
    )


def _grid(settings: Sequence[SamplingSettings] | None, temperatures: Sequence[float] | None,
          top_ps: Sequence[float], top_k: int) -> list[SamplingSettings]:
    if settings is not None:
        if temperatures is not None:
            raise ValueError("give settings or temperatures (with top_ps), not both")
        grid = list(settings)
    else:
        grid = [SamplingSettings(t, top_k, p) for t, p in itertools.product(temperatures or (), top_ps)]
    if not grid:
        raise ValueError("give at least one setting (or one temperature and one top-p)")
    return grid


def _chunks(rows: list[tuple[SamplingSettings, int]], batch: int) -> list[list[tuple[SamplingSettings, int]]]:
    """``rows`` in calls of at most ``batch``, a new call wherever the static part of the settings
    (``static_key``: order, DRY breakers, logit bias, banned words) changes: one batch shares them."""
    static = lambda row: row[0].static_key()  # noqa: E731
    chunks: list[list[tuple[SamplingSettings, int]]] = []
    for row in rows:
        if not chunks or len(chunks[-1]) == batch or static(chunks[-1][0]) != static(row):
            chunks.append([])
        chunks[-1].append(row)
    return chunks


def _generate_rows(model: Transformer, params: nnx.State, tokenizer: Tokenizer, prompt: str,
                   rows: list[tuple[SamplingSettings, int]], batch: int, max_new_tokens: int,
                   bar) -> tuple[list[str], list[str]]:
    """The (setting, seed) ``rows``' texts and stop reasons, ``batch`` rows a call, every call that shape."""
    chunks = _chunks(rows, batch)
    bar.total += len(chunks) * max_new_tokens
    bar.refresh()
    texts, reasons = [], []
    for chunk in chunks:
        filled = chunk + [chunk[-1]] * (batch - len(chunk))  # every call the same shape
        stream = generate_stream(model, params, tokenizer, [prompt] * batch, max_new_tokens=max_new_tokens,
                                 settings=[s for s, _ in filled], seed=[seed for _, seed in filled], chunk_seconds=0.25)
        start = bar.n
        for _pieces in stream:
            bar.update(start + min(stream.steps_done, max_new_tokens) - bar.n)
        bar.update(start + max_new_tokens - bar.n)
        texts += stream.result.texts[: len(chunk)]
        reasons += stream.result.stop_reasons[: len(chunk)]
    return texts, reasons


def sweep(
    model: Transformer,
    params: nnx.State,
    tokenizer: Tokenizer,
    prompt: str,
    *,
    settings: Sequence[SamplingSettings] | None = None,
    temperatures: Sequence[float] | None = None,
    top_ps: Sequence[float] = (1.0,),
    top_k: int = 0,
    seeds: int = 16,
    target_se: float | None = None,
    max_seeds: int = 256,
    max_new_tokens: int = 80,
    batch: int = SWEEP_BATCH,
    progress: bool = True,
) -> list[SweepRow]:
    """Each setting over ``seeds`` seeds (one story each), summarised: ``settings`` as given, or
    every (temperature, top-p) pair with ``top_k``.

    Every setting uses seeds ``0 .. n-1``, so settings are compared on the same random draws. With
    ``target_se``, a setting whose grammatical share still has a standard error of at least
    ``target_se`` gets ``seeds`` more seeds, round after round, until it is below or the setting has
    ``max_seeds``: the stories go where the error is (shares near 50 %), not where it is already
    small. (Stopping on the error biases the estimate a little; far less than the error itself.)
    Distinct-n is the mean over groups of ``DIVERSITY_GROUP`` stories, so rows of any size compare on
    it (pooled distinct-n falls as stories are added); give ``seeds`` as a multiple of it.
    The rows run ``batch`` at a time, each call the same shape (a short call filled with repeats),
    so a sweep of any size compiles at most once per chain (classic or full) and static fields;
    rows of different ``static_key()`` (order, DRY breakers, logit bias, banned words) go in
    separate calls. ``progress`` shows a bar of decoding steps while it runs.

    Usage: ``sweep(model, params, tok, "", temperatures=[0.5, 1.0], top_ps=[1.0, 0.9], seeds=32)`` or
    ``sweep(model, params, tok, "", settings=[SamplingSettings(1.0, 0, min_p=0.1)], seeds=48, target_se=0.02)``
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if target_se is not None and not (target_se > 0 and max_seeds >= seeds):
        raise ValueError(f"target_se must be > 0 and max_seeds >= seeds, got {target_se} and {max_seeds}")
    grid = _grid(settings, temperatures, top_ps, top_k)
    texts: list[list[str]] = [[] for _ in grid]
    reasons: list[list[str]] = [[] for _ in grid]
    todo, batch = list(range(len(grid))), min(batch, len(grid) * seeds)
    from tqdm.auto import tqdm

    with tqdm(total=0, desc=f"sweep: {len(grid) * seeds} texts", unit="step", disable=not progress,
              leave=False) as bar:
        while todo:
            rows = [(i, seed) for i in todo for seed in range(len(texts[i]), min(len(texts[i]) + seeds, max_seeds))]
            jobs = [(grid[i], seed) for i, seed in rows]
            new_texts, new_reasons = _generate_rows(model, params, tokenizer, prompt, jobs, batch, max_new_tokens, bar)
            for (i, _), text, reason in zip(rows, new_texts, new_reasons):
                texts[i].append(text)
                reasons[i].append(reason)
            todo = [i for i in todo if target_se is not None and len(texts[i]) < max_seeds
                    and grammatical_share(texts[i])[1] >= target_se]
            bar.set_description(f"sweep: {sum(map(len, texts))} texts" + (f", {len(todo)} settings need more"
                                                                         if todo else ""))
    return [summarise(t, r, s, group=DIVERSITY_GROUP) for t, r, s in zip(texts, reasons, grid)]


def gain_at_equal_diversity(row: SweepRow, reference: Sequence[SweepRow]) -> tuple[float, float]:
    """(grammatical share of ``row`` minus the ``reference`` curve's at the same distinct-2, its standard
    error): how much more grammatical a setting is than, say, temperature alone at equal diversity.

    The reference curve is read by linear interpolation between its two neighbouring points (``nan``
    outside its range of distinct-2: no comparison there). The error adds in quadrature the row's
    and the curve's grammatical errors and the row's distinct-2 error times the curve's slope (an
    approximation: it ignores that both sides share seeds).

    Usage: ``gain, se = gain_at_equal_diversity(min_p_row, temperature_rows)``
    """
    ref = sorted(reference, key=lambda r: r.distinct_2)
    x = np.array([r.distinct_2 for r in ref])
    if not len(ref) or not x[0] <= row.distinct_2 <= x[-1]:
        return float("nan"), float("nan")
    y = np.array([r.grammatical for r in ref])
    level = np.interp(row.distinct_2, x, y)
    level_se = np.interp(row.distinct_2, x, [r.grammatical_se for r in ref])
    right = min(max(int(np.searchsorted(x, row.distinct_2)), 1), len(x) - 1)
    slope = (y[right] - y[right - 1]) / (x[right] - x[right - 1]) if len(x) > 1 and x[right] > x[right - 1] else 0.0
    se = np.sqrt(row.grammatical_se ** 2 + level_se ** 2 + (slope * row.distinct_2_se) ** 2)
    return float(row.grammatical - level), float(se)


def sweep_groups(model: Transformer, params: nnx.State, tokenizer: Tokenizer, prompt: str,
                 groups: dict[str, Sequence[SamplingSettings]], **options) -> dict[str, list[SweepRow]]:
    """:func:`sweep` over named groups of settings in one run (one progress bar, full batches), its rows
    grouped back by name; ``options`` as for :func:`sweep`.

    Usage: ``sweep_groups(model, params, tok, "", {"min-p": [SamplingSettings(2.0, 0, min_p=0.1)]}, seeds=48)``
    """
    rows = iter(sweep(model, params, tokenizer, prompt, settings=[s for group in groups.values() for s in group],
                      **options))
    return {name: [next(rows) for _ in group] for name, group in groups.items()}


def tuned(rows: Sequence[SweepRow], reference: Sequence[SweepRow]) -> list[SweepRow]:
    """At each temperature of ``rows`` (one rule's values tried there), the row with the largest gain at
    equal diversity over ``reference`` (:func:`gain_at_equal_diversity`); where none of that temperature
    lies within the reference curve, its first row (the usual value). Give every rule the same number
    of values (``sampling.TUNING_BUDGET``): the best of more tries looks better by luck alone.

    Usage: ``tuned(top_p_rows, temperature_rows)  # one row per temperature``
    """
    best: dict[float, tuple[float, SweepRow]] = {}
    for row in rows:
        gain = gain_at_equal_diversity(row, reference)[0]
        score = gain if np.isfinite(gain) else -np.inf
        if row.temperature not in best or score > best[row.temperature][0]:
            best[row.temperature] = (score, row)
    return [best[t][1] for t in sorted(best)]


def format_table(rows: Sequence[SweepRow]) -> str:
    """A plain-text table of sweep rows, one setting per line (± one standard error).

    Usage: ``print(format_table(sweep(model, params, tok, "", temperatures=[0.5, 1.0])))``
    """
    labels = [r.settings.label() for r in rows]
    width = max([7, *map(len, labels)])
    header = (f"{'setting':<{width}} {'samples':>7} {'sentences':>9} {'grammatical':>13} {'distinct-1':>10} "
              f"{'distinct-2':>13} {'repeat-3':>8} {'ended':>6}")
    lines = [header, "-" * len(header)]
    for label, r in zip(labels, rows):
        lines.append(f"{label:<{width}} {r.samples:>7} {r.sentences:>9} {r.grammatical:>6.1%} ±{r.grammatical_se:>5.1%} "
                     f"{r.distinct_1:>10.3f} {r.distinct_2:>6.3f} ±{r.distinct_2_se:.3f} {r.repetition_3:>8.3f} "
                     f"{r.eos_share:>6.0%}")
    return "\n".join(lines)
