"""Choose generation steps by code: the most uncertain step, the first step where two settings keep
different tokens, the first step where a filter stage removes something, the step where any stage of
the chain moves the most probability.

Pure functions over a generation :class:`~txtgen_nb.generation.Trace` (data only, no model call):
every set of kept tokens comes from ``sampling.filter_stages``, the same rules the sampler used.

Usage::

    result = generate(model, params, tok, "Once upon a time", trace=True)
    step = most_informative_step(result.trace)                     # where an explorer should open
    first_step_where_differ(result.trace, SamplingSettings(1.0, 0, 0.9), SamplingSettings(1.0, 5))
    first_step_where_removes(result.trace, SamplingSettings(1.2, 0, 1.0, min_p=0.1))   # min-p at work
    step_where_stage_acts_most(result.trace, "typical", row=2)    # where a sampler moves the most probability
"""

from __future__ import annotations

import numpy as np

from txtgen_nb import sampling
from txtgen_nb.generation import SamplingSettings, Trace

def _check_row(trace: Trace, row: int) -> None:
    if not 0 <= row < trace.num_rows:
        raise ValueError(f"row must be between 0 and {trace.num_rows - 1}, got {row}")


def _logits(trace: Trace, row: int) -> np.ndarray:
    """The row's raw logits over its generated steps, ``[L, V]``."""
    _check_row(trace, row)
    return trace.row_logits(row)[: int(trace.lengths[row])]


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def entropy_before_filtering(trace: Trace, row: int = 0, settings: SamplingSettings | None = None) -> np.ndarray:
    """Entropy in nats after temperature, before top-k/top-p/min-p, per generated step ``[L]``.
    Greedy (temperature 0) uses the model's own distribution (temperature 1) instead of a certain one.

    Usage: ``entropy_before_filtering(trace, row=1)``
    """
    logits = _logits(trace, row)
    s = settings or trace.settings[row]
    scaled = logits if s.temperature == 0 else np.asarray(sampling.before_cuts(sampling.filter_stages(logits, s), s))
    return np.asarray(sampling.entropy(scaled)).reshape(-1)


def most_informative_step(trace: Trace, row: int = 0, settings: SamplingSettings | None = None,
                          within: int = 12) -> int:
    """The step among the first ``within`` with the highest entropy before filtering (ties: the
    earliest); 0 when the row generated nothing.

    Usage: ``explorer_step = most_informative_step(trace, row=0)``
    """
    entropies = entropy_before_filtering(trace, row, settings)[: max(1, within)]
    return int(np.argmax(entropies)) if entropies.size else 0


def kept_mask(trace: Trace, settings: SamplingSettings | None = None, row: int = 0,
              stage: str = "final") -> np.ndarray:
    """Which tokens survive ``stage`` (a :class:`~txtgen_nb.sampling.Stages` field; default
    ``"final"``: every rule that is on, in the settings' order) at each step, ``[L, V]`` bool. The
    stages are the trace's own replay (``trace.row_stages``: context, XTC's coin, Mirostat's μ),
    the same that ``viz.timeline_data`` counts.

    Usage: ``kept_mask(trace, SamplingSettings(1.0, 5)).sum(-1)  # tokens kept per step``
    """
    if stage != "final" and stage not in sampling.Stages._fields:
        raise ValueError(f"stage must be 'final' or one of {', '.join(sampling.Stages._fields)}, got {stage!r}")
    _check_row(trace, row)
    return np.isfinite(np.asarray(getattr(trace.row_stages(row, settings), stage)))


def kept_counts(trace: Trace, settings: SamplingSettings | None = None, row: int = 0) -> np.ndarray:
    """The number of tokens the settings keep (every rule that is on) at each generated step, ``[L]``.

    Usage: ``kept_counts(trace, SamplingSettings(1.0, 0, 0.9))``
    """
    return kept_mask(trace, settings, row).sum(-1)


def first_step_where_differ(trace: Trace, a: SamplingSettings, b: SamplingSettings, row: int = 0, *,
                            min_kept: int = 1) -> int | None:
    """The first step where settings ``a`` and ``b`` keep different sets of tokens (and each keeps
    at least ``min_kept``), or ``None`` if they agree at every step.

    Usage: ``first_step_where_differ(trace, SamplingSettings(1.0, 0, 0.9), SamplingSettings(1.0, 5), min_kept=2)``
    """
    kept_a, kept_b = kept_mask(trace, a, row), kept_mask(trace, b, row)  # [L, V]
    enough = (kept_a.sum(-1) >= min_kept) & (kept_b.sum(-1) >= min_kept)
    return _first((kept_a != kept_b).any(-1) & enough)


def removed_counts(trace: Trace, settings: SamplingSettings | None = None, row: int = 0,
                   stage: str = "min_p") -> np.ndarray:
    """How many tokens ``stage`` removes at each step among those the earlier stages (in the
    settings' order) kept, ``[L]``.

    Usage: ``removed_counts(trace, SamplingSettings(1.2, 0, 1.0, min_p=0.1), stage="min_p")``
    """
    chain = sampling.stage_names((settings or trace.settings[row]).order)  # the stage before it in its order
    if stage not in chain[1:]:
        raise ValueError(f"stage must be one of {', '.join(chain[1:])}, got {stage!r}")
    before = kept_mask(trace, settings, row, chain[chain.index(stage) - 1])
    return (before & ~kept_mask(trace, settings, row, stage)).sum(-1)


def first_step_where_removes(trace: Trace, settings: SamplingSettings | None = None, row: int = 0,
                             stage: str = "min_p") -> int | None:
    """The first step where ``stage`` (default min-p) removes at least one token that survived the
    earlier filters, or ``None``.

    Usage: ``first_step_where_removes(trace, SamplingSettings(1.2, 20, 0.95, min_p=0.1))``
    """
    return _first(removed_counts(trace, settings, row, stage) > 0)


def first_step_where_tokens_differ(trace: Trace, row_a: int, row_b: int) -> int | None:
    """The first step where two rows sampled different tokens (or one had already stopped), or ``None``
    if they are identical.

    Usage: ``first_step_where_tokens_differ(trace, 1, 2)  # same seed, T=0.5 vs T=1.0``
    """
    la, lb = int(trace.lengths[row_a]), int(trace.lengths[row_b])
    common = min(la, lb)
    hit = _first(trace.token_ids[row_a, :common] != trace.token_ids[row_b, :common])
    if hit is not None:
        return hit
    return None if la == lb else common


def stage_shift(trace: Trace, stage: str, row: int = 0, settings: SamplingSettings | None = None) -> np.ndarray:
    """How much probability ``stage`` moves at each generated step ``[L]``: the total variation
    distance between the distributions entering and leaving it (0: it did nothing; removing tokens
    that held 30% moves 0.3). Each step is filtered as the loop filtered it (context, XTC's coin,
    Mirostat's μ).

    Usage: ``stage_shift(trace, "penalties", row=1).max()``
    """
    _check_row(trace, row)
    s = settings or trace.settings[row]
    chain = sampling.stage_names(s.order)
    if stage not in chain[1:]:
        raise ValueError(f"stage must be one of {', '.join(chain[1:])}, got {stage!r}")
    stages = trace.row_stages(row, s)
    before = np.asarray(sampling.probabilities(getattr(stages, chain[chain.index(stage) - 1])))  # [L, V]
    after = np.asarray(sampling.probabilities(getattr(stages, stage)))
    return 0.5 * np.abs(after - before).sum(-1)


def step_where_stage_acts_most(trace: Trace, stage: str, row: int = 0,
                               settings: SamplingSettings | None = None) -> int | None:
    """The step where ``stage`` moves the most probability (:func:`stage_shift`; ties: the earliest),
    or ``None`` if it never changes anything: where a step view shows that sampler at work.

    Usage: ``viz.pipeline_view(trace, tok, step_where_stage_acts_most(trace, "xtc", row=3), row=3)``
    """
    shift = stage_shift(trace, stage, row, settings)
    return int(np.argmax(shift)) if shift.size and shift.max() > 1e-6 else None
