"""Ground truth at every step: how well a sampler's cutoff separates the tokens a grammar allows from
those it does not (the story grammar is the oracle: :func:`txtgen_nb.corpus.valid_next_tokens`).

A cutoff is judged on the distribution it cuts (after temperature, before filtering) by two numbers:
the share of the *valid* probability it keeps, and the chance that the filtered distribution then
samples an *invalid* token. Beside each sampler stands the best any "keep the r most likely" cut could
do at that step: the r with the most valid minus invalid probability.

Data only (the views are :func:`txtgen_nb.viz.cutoff_view` and :func:`txtgen_nb.viz.cutoff_sweep_view`);
every kept set comes from the trace's own replay of the sampling chain (``Trace.row_stages``).

Usage::

    result = generate(model, params, tok, ["Once upon a time"] * 8, temperature=1.0, top_k=0, trace=True)
    quality = cutoff_quality(result.trace, tok, SamplingSettings(1.0, 0, 0.9))   # per step of row 0
    quality.valid_kept.mean(), quality.best_valid_kept.mean()
    cutoff_sweep(result.trace, tok, {"top-p": [SamplingSettings(1.0, 0, p) for p in (0.5, 0.8, 0.95)]})
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Collection, Mapping, Sequence

import numpy as np
from tokenizers import Tokenizer

from txtgen_nb import corpus, sampling
from txtgen_nb.generation import SamplingSettings, Trace
from txtgen_nb.tokenizer import decode

Oracle = Callable[[Tokenizer, str], Collection[int]]  # (tokenizer, text so far) -> the valid next token ids


def valid_mask(trace: Trace, tokenizer: Tokenizer, row: int = 0, oracle: Oracle = corpus.valid_next_tokens,
               steps: Sequence[int] | None = None) -> np.ndarray:
    """Which tokens the oracle allows at each generated step of ``row`` (or at ``steps``), ``[L, V]`` bool,
    from the text the model had seen (prompt and the tokens before the step).

    Usage: ``valid_mask(trace, tok)[3].sum()  # how many tokens the grammar allows at step 3``
    """
    steps = range(int(trace.lengths[row])) if steps is None else steps
    mask = np.zeros((len(steps), trace.vocab_size), bool)
    for i, step in enumerate(steps):
        ids = [t for t in oracle(tokenizer, decode(tokenizer, trace.context_ids(row, step))) if t < trace.vocab_size]
        mask[i, ids] = True
    return mask


@dataclasses.dataclass(frozen=True)
class CutoffQuality:
    """One row's cutoffs judged against the oracle, per generated step ``[L]`` (probabilities are the
    distribution the filters cut: after temperature, before filtering)."""

    settings: SamplingSettings
    valid_mass: np.ndarray  # [L] probability of the valid tokens before filtering
    valid_kept: np.ndarray  # [L] share of that valid probability the filters keep (1 = none lost)
    invalid_kept: np.ndarray  # [L] invalid tokens the filters let through
    invalid_chance: np.ndarray  # [L] chance of sampling an invalid token after filtering
    kept: np.ndarray  # [L] tokens kept
    best_rank: np.ndarray  # [L] the best "r most likely" cut: the most valid minus invalid probability
    best_valid_kept: np.ndarray  # [L] its share of the valid probability
    best_invalid_chance: np.ndarray  # [L] its chance of sampling an invalid token
    chosen_valid: np.ndarray  # [L] bool: whether the token the generation sampled was valid
    judged: np.ndarray  # [L] bool: the text so far is on the grammar (after a wrong token nothing is valid)


def _best_cut(before: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step ``[L]``: the rank r whose top-r cut keeps the most valid minus invalid probability of
    ``before`` ``[L, V]``, and that cut's valid share and invalid chance."""
    order = np.argsort(-before, axis=-1, kind="stable")
    p = np.take_along_axis(before, order, axis=-1)
    ok = np.take_along_axis(valid, order, axis=-1)
    gain = np.cumsum(np.where(ok, p, -p), axis=-1)
    rank = gain.argmax(-1) + 1  # [L]: at least one token
    keep = np.arange(p.shape[-1])[None] < rank[:, None]
    kept_valid = (p * (keep & ok)).sum(-1)
    kept_all = (p * keep).sum(-1)
    return rank, kept_valid / np.maximum((p * ok).sum(-1), 1e-30), 1 - kept_valid / np.maximum(kept_all, 1e-30)


def cutoff_quality(trace: Trace, tokenizer: Tokenizer, settings: SamplingSettings | None = None, row: int = 0,
                   oracle: Oracle = corpus.valid_next_tokens, valid: np.ndarray | None = None) -> CutoffQuality:
    """How the ``settings`` (default: the row's own) cut at each step of ``row``, against the oracle
    (``valid``: a :func:`valid_mask` already computed, to judge many settings on one trace).

    Usage: ``cutoff_quality(trace, tok, SamplingSettings(1.0, 0, min_p=0.1)).invalid_chance``
    """
    s = settings or trace.settings[row]
    n = int(trace.lengths[row])
    valid = valid_mask(trace, tokenizer, row, oracle) if valid is None else valid[:n]
    stages = trace.row_stages(row, s)
    heated = np.asarray(sampling.before_cuts(stages, s))[:n] if s.temperature > 0 else trace.row_logits(row)[:n]
    before = np.asarray(sampling.probabilities(heated))
    after = np.asarray(sampling.probabilities(np.asarray(stages.final)[:n]))
    kept = np.isfinite(np.asarray(stages.final)[:n])
    valid_mass = (before * valid).sum(-1)
    rank, best_valid, best_invalid = _best_cut(before, valid)
    chosen = trace.token_ids[row, :n].astype(np.int64)
    return CutoffQuality(
        settings=s, valid_mass=valid_mass,
        valid_kept=(before * (valid & kept)).sum(-1) / np.maximum(valid_mass, 1e-30),
        invalid_kept=(kept & ~valid).sum(-1), invalid_chance=(after * ~valid).sum(-1), kept=kept.sum(-1),
        best_rank=rank, best_valid_kept=best_valid, best_invalid_chance=best_invalid,
        chosen_valid=np.take_along_axis(valid, chosen[:, None], axis=-1)[:, 0], judged=valid.any(-1),
    )


@dataclasses.dataclass(frozen=True)
class CutoffSummary:
    """One setting of one sampler over the judged steps of a trace's rows (those still on the grammar):
    means over the steps, with their standard errors."""

    family: str
    settings: SamplingSettings
    valid_kept: float
    valid_kept_se: float
    invalid_chance: float
    invalid_chance_se: float
    kept: float  # mean tokens kept per step
    steps: int


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    se = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else float("nan")
    return float(values.mean()), se


def cutoff_sweep(trace: Trace, tokenizer: Tokenizer, families: Mapping[str, Sequence[SamplingSettings]],
                 oracle: Oracle = corpus.valid_next_tokens) -> tuple[list[CutoffSummary], CutoffSummary]:
    """Every setting of every sampler family judged on the same steps (the trace's rows while their text
    is on the grammar: the same distributions for all), and the best rank cut of each step (at the first
    setting's temperature) summarised the same way.

    Usage: ``rows, best = cutoff_sweep(trace, tok, {"top-k": [SamplingSettings(1.0, k) for k in (5, 20)]})``
    """
    masks = [valid_mask(trace, tokenizer, row, oracle) for row in range(trace.num_rows)]
    summaries, best_valid, best_invalid = [], [], []
    for family, settings_list in families.items():
        for s in settings_list:
            judged = [cutoff_quality(trace, tokenizer, s, row, valid=masks[row]) for row in range(trace.num_rows)]
            valid_kept = np.concatenate([q.valid_kept[q.judged] for q in judged])
            invalid = np.concatenate([q.invalid_chance[q.judged] for q in judged])
            kept = np.concatenate([q.kept[q.judged] for q in judged])
            summaries.append(CutoffSummary(family, s, *_mean_se(valid_kept), *_mean_se(invalid),
                                           float(kept.mean()) if kept.size else float("nan"), valid_kept.size))
            if not best_valid:
                best_valid = [q.best_valid_kept[q.judged] for q in judged]
                best_invalid = [q.best_invalid_chance[q.judged] for q in judged]
    valid_kept, invalid = np.concatenate(best_valid or [np.zeros(0)]), np.concatenate(best_invalid or [np.zeros(0)])
    best = CutoffSummary("best rank cut per step", SamplingSettings(1.0, 0), *_mean_se(valid_kept),
                         *_mean_se(invalid), float("nan"), valid_kept.size)
    return summaries, best
