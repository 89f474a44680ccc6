"""See sampling at work: next-token probabilities before and after top-k/top-p filtering.

Every number shown comes from :func:`txtgen_nb.sampling.filter_stages` applied to the raw logits
stored in a generation :class:`~txtgen_nb.generation.Trace`, so the views show exactly what the
sampler did, and re-filtering with other settings is instant (no model call).

Figures are ``matplotlib.figure.Figure`` objects (no pyplot state): a figure as the last expression
of a notebook cell displays inline once, and ``fig.savefig(...)`` saves it.

Usage::

    result = generate(model, params, tok, "Once upon a time", trace=True)
    step_view(result.trace, tok, step=0)                  # one step, before vs after filtering
    pipeline_view(result.trace, tok, step=0)              # raw → temperature → top-k → top-p → min-p
    timeline_view(result.trace)                           # every step: chosen p, entropy, tokens kept (Mirostat: μ)
    heatmap_view(result.trace, tok)                       # steps × top candidates
    colored_text(result.trace, tok).save("story.html")    # tokens coloured by probability
    temperature_view(result.trace.step_logits(0, 0), tok)      # one distribution at several temperatures
    sweep_view(metrics.sweep(model, params, tok, "", temperatures=[0.5, 1.0]))  # quality vs diversity
    step_view(result.trace, tok, 0, oracle=corpus.valid_next_tokens)   # ✓ / ✗: what the story grammar allows
    cutoff_view(truth.cutoff_quality(result.trace, tok))   # a cutoff judged by the grammar at every step
    constraint_view(generate(..., constrain="grammar", trace=True).trace)  # what the constraint took away
"""

from __future__ import annotations

import dataclasses
import html
import io
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, PercentFormatter
from tokenizers import Tokenizer

from txtgen_nb import sampling
from txtgen_nb.generation import SamplingSettings, Trace
from txtgen_nb.tokenizer import decode, show_token, shown_prompt

if TYPE_CHECKING:
    from txtgen_nb.metrics import Degeneration, SweepRow
    from txtgen_nb.beam import BeamResult
    from txtgen_nb.truth import CutoffQuality, CutoffSummary, Oracle

# One colour-blind-safe scheme (Okabe–Ito) for every view; cividis for continuous values.
BEFORE = "#56B4E9"  # sky blue: probability before filtering (after temperature)
AFTER = "#E69F00"  # orange: renormalised probability after filtering
CHOSEN = "#D55E00"  # vermillion: the sampled token
CURVE = "#009E73"  # bluish green: cumulative probability (top-p)
CUTOFF = "#CC79A7"  # reddish purple: thresholds
REMOVED = "#BBBBBB"
ROW_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
READABLE_COLORS = tuple(c for c in ROW_COLORS if c != "#F0E442")  # for small markers: yellow is lost on white
CMAP = "cividis"
VALID, INVALID = "#0072B2", "#000000"  # an oracle's verdict on a candidate: ✓ in blue, ✗ in black
WIDTH = 10.0  # inches; at DPI 100 a figure is 1000 px wide, which fits a 1280 px projector
DPI = 100
SMALL = 10  # points: 14 px at DPI 100, readable from the back of a classroom


@dataclasses.dataclass(frozen=True)
class StepData:
    """The numbers behind one step's views (top ``N`` candidates, most likely first)."""

    ids: np.ndarray  # [N] candidate token ids, by raw logit
    labels: list[str]
    prob_raw: np.ndarray  # [N] softmax at temperature 1
    prob_before: np.ndarray  # [N] after temperature, before top-k/top-p/min-p
    prob_after: np.ndarray  # [N] renormalised after all filters (0 = removed)
    kept: np.ndarray  # [N] bool
    cumulative: np.ndarray  # [N] cumulative probability after top-k (what top-p thresholds)
    chosen: int | None
    num_kept: int  # over the whole vocabulary
    vocab_size: int
    entropy_before: float
    entropy_after: float
    settings: SamplingSettings
    context: str
    step: int | None
    valid: np.ndarray | None = None  # [N] bool: whether an oracle (the story grammar) allows each candidate
    off_grammar: bool = False  # the oracle allows nothing: the context itself has left the grammar
    constraint_mass: float | None = None  # constrained decoding: the model's probability the constraint kept


@dataclasses.dataclass(frozen=True)
class TimelineData:
    """Per row and step (NaN past a row's length): the chosen token's probability after filtering,
    entropy before and after filtering, and the number of tokens kept."""

    chosen_prob: np.ndarray  # [B, N]
    entropy_before: np.ndarray  # [B, N]
    entropy_after: np.ndarray  # [B, N]
    num_kept: np.ndarray  # [B, N]
    lengths: np.ndarray  # [B]


def _probs(logits: np.ndarray) -> np.ndarray:
    return np.asarray(sampling.probabilities(logits))


def tail(text: str, chars: int = 40) -> str:
    """The end of ``text`` in at most ``chars`` characters, newlines shown as ↵."""
    text = text.replace("\n", "↵ ")
    return text if len(text) <= chars else "…" + text[-(chars - 1):]


def top_order(logits: np.ndarray, n: int) -> np.ndarray:
    """Ids of the ``n`` largest values along the last axis, largest first, ties lower id first:
    ``np.argsort(-logits, kind="stable")[..., :n]`` without sorting a 49k vocabulary.

    Usage: ``top_order(trace.step_logits(0, 3), 5)``
    """
    logits = np.asarray(logits)
    n = min(n, logits.shape[-1])
    if n >= logits.shape[-1] // 4:
        return np.argsort(-logits, axis=-1, kind="stable")[..., :n]
    flat = logits.reshape(-1, logits.shape[-1])
    rows = []
    for row in flat:
        threshold = np.partition(row, row.size - n)[row.size - n]
        candidates = np.flatnonzero(row >= threshold)  # ascending ids; ties at the threshold included
        rows.append(candidates[np.argsort(-row[candidates], kind="stable")[:n]])
    return np.stack(rows).reshape(*logits.shape[:-1], n)


def distribution_data(
    logits: np.ndarray,
    tokenizer: Tokenizer,
    settings: SamplingSettings,
    *,
    chosen: int | None = None,
    context: str = "",
    step: int | None = None,
    top_n: int = 20,
    stages: sampling.Stages | None = None,
    valid: set[int] | None = None,
) -> StepData:
    """The numbers behind :func:`distribution_view` for one vector of raw logits ``[V]`` (``stages``:
    already filtered with the context the penalties need, as :meth:`Trace.stages` gives them; ``valid``:
    the token ids an oracle allows, marked ✓ / ✗ on the candidates).

    Usage: ``distribution_data(trace.logits[0, 3], tok, SamplingSettings(0.8, 50, 0.9))``
    """
    logits = np.asarray(logits, np.float32)
    stages = sampling.filter_stages(logits, settings) if stages is None else stages
    ids = top_order(logits, top_n)
    if chosen is not None and chosen not in ids:
        ids = np.concatenate([ids[:-1], [chosen]])
    final = np.asarray(stages.final)
    before = sampling.before_cuts(stages, settings)
    after_k = _probs(np.asarray(stages.top_k))
    cumulative = np.cumsum(after_k[ids])
    return StepData(
        ids=ids, labels=[show_token(tokenizer, i) for i in ids], prob_raw=_probs(stages.raw)[ids],
        prob_before=_probs(np.asarray(before))[ids], prob_after=_probs(final)[ids],
        kept=np.isfinite(final[ids]), cumulative=cumulative, chosen=chosen, num_kept=int(np.isfinite(final).sum()),
        vocab_size=logits.size, entropy_before=float(sampling.entropy(before)),
        entropy_after=float(sampling.entropy(final)), settings=settings, context=context, step=step,
        valid=None if valid is None else np.isin(ids, list(valid)), off_grammar=valid is not None and not valid,
    )


def step_data(trace: Trace, tokenizer: Tokenizer, step: int, row: int = 0,
              settings: SamplingSettings | None = None, top_n: int = 20, oracle: "Oracle | None" = None) -> StepData:
    """The numbers behind :func:`step_view`; ``settings`` re-filters the stored logits; ``oracle``
    (e.g. ``corpus.valid_next_tokens``) marks which candidates the grammar allows after the context.

    Usage: ``step_data(trace, tok, step=2, settings=SamplingSettings(temperature=1.2, top_p=0.9))``
    """
    if not 0 <= step < int(trace.lengths[row]):
        raise ValueError(f"step must be between 0 and {int(trace.lengths[row]) - 1} for row {row}, got {step}")
    context = decode(tokenizer, trace.context_ids(row, step))
    s = settings or trace.settings[row]
    valid = None if oracle is None else set(oracle(tokenizer, context))
    data = distribution_data(trace.step_logits(row, step), tokenizer, s, chosen=int(trace.token_ids[row, step]),
                             context=context, step=step, top_n=top_n, stages=trace.stages(row, step, s), valid=valid)
    if trace.allowed_after is None:
        return data
    return dataclasses.replace(data, constraint_mass=float(trace.constraint_mass(row)[step]))


def _new_figure(height: float, width: float = WIDTH) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _probability_limit(top: float) -> float:
    """The upper end of a probability axis: a round value just above ``top``, never above 1.0."""
    return next(limit for limit in (0.05, 0.1, 0.2, 0.5, 1.0) if top <= limit * 0.92 or limit == 1.0)


class StepPlot:
    """One step's bars before vs after filtering, redrawn by updating its artists.

    Building a figure costs far more than changing bar heights and labels, so an explorer keeps
    one ``StepPlot`` and calls :meth:`update` when the step or a filter slider moves. The layout is
    fixed (no constrained layout to solve on every redraw); the legend sits right of the axes.

    Usage::

        plot = StepPlot()
        png = plot.png(step_data(trace, tok, 3))      # PNG bytes for an ipywidgets.Image
        plot.update(step_data(trace, tok, 4)).savefig("step4.png")
    """

    def __init__(self, top_n: int = 20, width: float = 7.8, height: float = 3.9) -> None:
        self.top_n = top_n
        self.figure = Figure(figsize=(width, height), dpi=DPI)
        self.figure.subplots_adjust(left=0.085, right=0.655, bottom=0.27, top=0.8)
        ax = self.ax = self.figure.add_subplot()
        x, bar = np.arange(top_n), 0.4
        self.before = ax.bar(x - bar / 2, np.zeros(top_n), bar, color=BEFORE, label="before filtering\n(after temperature)")
        self.after = ax.bar(x + bar / 2, np.zeros(top_n), bar, color=AFTER, label="after filtering\n(renormalised)")
        self.top_k_line = ax.axvline(-1, color=CUTOFF, linestyle=":", linewidth=2.5, label="top-k cut-off")
        ax.set_ylabel("probability", fontsize=SMALL)
        ax.tick_params(labelsize=SMALL)
        self.curve_ax = ax.twinx()
        # on the twin axes (drawn last) with a white backing, so the cumulative curve never crosses the word
        self.sampled = self.curve_ax.annotate("◀ sampled", (0, 0), xycoords=ax.transData, xytext=(9, -5),
                                              textcoords="offset points", ha="left", va="top", color=CHOSEN,
                                              fontweight="bold", fontsize=SMALL, zorder=5,
                                              bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1))
        (self.curve,) = self.curve_ax.plot(x, np.zeros(top_n), color=CURVE, marker=".", linewidth=1.5,
                                           label="cumulative p\nafter top-k")
        self.top_p_line = self.curve_ax.axhline(2, color=CURVE, linestyle="--", linewidth=1.2, label="top-p threshold")
        self.curve_ax.set_ylim(0, 1.0)
        self.curve_ax.set_ylabel("cumulative probability", color=CURVE, fontsize=SMALL)
        self.curve_ax.tick_params(labelsize=SMALL)
        self.removed = Rectangle((0, 0), 1, 1, facecolor=REMOVED, hatch="///", edgecolor="#777777",
                                 label="removed by the filters")
        truth = Line2D([], [], linestyle="", marker="$✓$", markersize=9, color=VALID)
        handles = [self.before, self.after, self.removed, self.curve, self.top_p_line, self.top_k_line, truth]
        labels = [h.get_label() for h in handles[:-1]] + ["the grammar allows it\n(✓) or not (✗)"]
        self.legend = ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.13, 1.0), fontsize=SMALL - 1,
                                frameon=False, borderaxespad=0)
        # the oracle's ✓ / ✗ over each candidate, just above the axes (shown only with an oracle)
        self.marks = [ax.text(i, 1.01, "", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                              fontsize=SMALL, fontweight="bold") for i in range(top_n)]
        self.title = ax.set_title("", fontsize=SMALL, loc="left", pad=14)

    def update(self, data: StepData, title: str | None = None) -> Figure:
        """Show ``data`` (from :func:`step_data` or :func:`distribution_data`); returns the figure."""
        n, s = len(data.ids), data.settings
        for i, (before, after) in enumerate(zip(self.before, self.after)):
            visible = i < n
            before.set_visible(visible)
            after.set_visible(visible)
            if visible:
                before.set_height(data.prob_before[i])
                before.set_facecolor(BEFORE if data.kept[i] else REMOVED)
                before.set_hatch(None if data.kept[i] else "///")
                after.set_height(data.prob_after[i])
        x = np.arange(n)
        self.ax.set_xticks(x, [("✗ " if not k else "") + label for label, k in zip(data.labels, data.kept)],
                           rotation=55, ha="right", fontsize=SMALL, rotation_mode="anchor")
        for tick, kept, token in zip(self.ax.get_xticklabels(), data.kept, data.ids):
            tick.set_color(CHOSEN if token == data.chosen else ("#000000" if kept else "#888888"))
            tick.set_fontweight("bold" if token == data.chosen else "normal")
        self.ax.set_xlim(-0.6, max(self.top_n, n) - 0.4)
        top = float(max(data.prob_before.max(initial=0), data.prob_after.max(initial=0)))
        self.ax.set_ylim(0, _probability_limit(top * 1.15))
        self.sampled.set_visible(data.chosen is not None and data.chosen in data.ids)
        if self.sampled.get_visible():
            where = int(np.flatnonzero(data.ids == data.chosen)[0])
            top = max(data.prob_before[where], data.prob_after[where])
            above = top < 0.72 * self.ax.get_ylim()[1]  # room above the bar: label it there, else beside it
            right = where > n - 5  # near the right edge the label goes to the left of the bar
            self.sampled.xy = (where + (0 if above else 0.2), top)
            if above:  # the arrow over the bar: under the word, or at its end beside the plot's edges
                edge = "right" if where >= n - 2 else "left" if where < 1 else "center"
                text = {"right": "sampled ▼", "left": "▼ sampled", "center": "sampled\n▼"}[edge]
                self.sampled.set_text(text)
                self.sampled.set_ha(edge)
                self.sampled.xyann = ({"right": 5, "left": -5, "center": 0}[edge], 1)
            else:
                self.sampled.set_text("sampled ▶" if right else "◀ sampled")
                self.sampled.set_ha("right" if right else "left")
                self.sampled.xyann = (-16 if right else 6, -5)
            self.sampled.set_multialignment("center")
            self.sampled.set_va("bottom" if above else "top")
        self.top_k_line.set_xdata([s.top_k - 0.5] * 2 if 0 < s.top_k < n else [-10] * 2)
        self.top_p_line.set_ydata([s.top_p] * 2 if s.top_p < 1 else [2] * 2)
        labels = self.legend.get_texts()  # the entries that name a rule say whether it is on
        labels[3].set_text("cumulative p\nafter top-k" if s.top_k > 0 else "cumulative p")
        labels[4].set_text(f"top-p threshold ({s.top_p:g})" if s.top_p < 1 else "top-p off")
        labels[5].set_text(f"top-k cut-off (k={s.top_k})" if s.top_k > 0 else "top-k off")
        self.curve.set_data(x, data.cumulative)
        self._mark_truth(data)
        self.title.set_text(_title(data) if title is None else title)
        return self.figure

    def _mark_truth(self, data: StepData) -> None:
        """The oracle's ✓ / ✗ over each candidate and its legend entry, or nothing without an oracle."""
        for i, mark in enumerate(self.marks):
            shown = data.valid is not None and i < len(data.ids)
            mark.set_visible(shown)
            if shown:
                mark.set_text("✓" if data.valid[i] else "✗")
                mark.set_color(VALID if data.valid[i] else INVALID)
        self.legend.legend_handles[-1].set_visible(data.valid is not None)
        self.legend.get_texts()[-1].set_visible(data.valid is not None)

    def png(self, data: StepData, title: str | None = None) -> bytes:
        """:meth:`update`, then the PNG bytes. Usage: ``image.value = plot.png(data)``"""
        return figure_to_png(self.update(data, title))


TITLE_CHARS = 120  # characters of a title line at SMALL points that fit a figure WIDTH wide


def short_label(s: SamplingSettings, chars: int = 80) -> str:
    """``s.label()`` cut to the rules that fit in ``chars`` characters, the rest counted (a title names many
    samplers without running off its figure). Usage: ``short_label(settings)  # 'T=0.9 · rep 1.2 · … +4 more'``"""
    parts, kept = s.label().split(" · "), []
    for i, part in enumerate(parts):
        rest = len(parts) - i - 1
        if kept and len(" · ".join(kept + [part])) + (len(f" · … +{rest} more") if rest else 0) > chars:
            return " · ".join(kept) + f" · … +{len(parts) - len(kept)} more"
        kept.append(part)
    return " · ".join(kept)


def _title(data: StepData) -> str:
    where = f"step {data.step}" if data.step is not None else "next token"
    context = f" after “{tail(data.context, 34)}”" if data.context else ""
    context += " (off the grammar: nothing is valid)" if data.off_grammar else ""
    constrained = "" if data.constraint_mass is None else f"; the grammar kept {data.constraint_mass:.0%} of p"
    return (f"{where}{context}\n{short_label(data.settings, 55)}: kept {data.num_kept:,} of {data.vocab_size:,}; "
            f"entropy {data.entropy_before:.2f} → {data.entropy_after:.2f} nats{constrained}")


def distribution_view(
    logits: np.ndarray,
    tokenizer: Tokenizer,
    settings: SamplingSettings,
    *,
    chosen: int | None = None,
    title: str = "",
    top_n: int = 20,
) -> Figure:
    """Bars of one next-token distribution before vs after filtering, with the top-k cut-off and
    the top-p cumulative curve.

    Usage: ``distribution_view(trace.logits[0, 0], tok, SamplingSettings(0.8, 50, 0.9))``
    """
    data = distribution_data(logits, tokenizer, settings, chosen=chosen, top_n=top_n)
    return StepPlot(top_n).update(data, title or None)


def step_view(trace: Trace, tokenizer: Tokenizer, step: int, row: int = 0,
              settings: SamplingSettings | None = None, top_n: int = 20, oracle: "Oracle | None" = None) -> Figure:
    """One generation step: top candidates before vs after filtering, the sampled token marked (with an
    ``oracle`` such as ``corpus.valid_next_tokens``, each candidate marked ✓ / ✗ too).

    Usage: ``step_view(trace, tok, step=3, oracle=corpus.valid_next_tokens)``
    """
    return StepPlot(top_n).update(step_data(trace, tokenizer, step, row, settings, top_n, oracle))


PIPELINE_COLUMNS = 6  # panels per row of the pipeline view: beyond it, panel titles would run into each other
PANEL_CHARS = 20  # characters of a pipeline panel's title line (a sixth of the figure)


def pipeline_view(trace: Trace, tokenizer: Tokenizer, step: int, row: int = 0,
                  settings: SamplingSettings | None = None, top_n: int = 12, width: float = WIDTH,
                  oracle: "Oracle | None" = None) -> Figure:
    """The same step through each active stage of the sampling chain, in its order (raw (T=1) →
    temperature → top-k → top-p → min-p, and whichever other samplers are on; no temperature panel
    at temperature 1, which changes nothing).

    Each panel shows the probabilities after that stage, its setting and key number in the title;
    tokens removed so far stay as grey bars at their last probability, so what a stage takes away
    stays visible. With an ``oracle`` (``corpus.valid_next_tokens``) each candidate is marked ✓ / ✗.

    Usage: ``pipeline_view(trace, tok, step=0)``
    """
    data = step_data(trace, tokenizer, step, row, settings, top_n, oracle)
    s = data.settings
    stages = trace.stages(row, step, s)
    mu = float(trace.mirostat(row, s).mu[step]) if s.mirostat_tau > 0 else None
    panels = [("raw (T=1)", stages.raw)]
    previous = np.asarray(stages.raw)
    for name in sampling.stage_names(s.order)[1:]:
        logits = np.asarray(getattr(stages, name))
        rule = sampling.RULE[name]
        if rule.is_on(s):
            panels.append((rule.panel_title(s, previous, logits, mu), logits))
        previous = logits
    columns = min(len(panels), PIPELINE_COLUMNS)
    rows = -(-len(panels) // columns)  # many samplers on: more rows, so that no panel's title runs into the next
    fig = _new_figure((0.27 * len(data.ids) + 1.2) * rows + 0.7, width)
    grid = fig.subplots(rows, columns, sharey=True, squeeze=False)
    axes = grid.reshape(-1)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    y = np.arange(len(data.ids))
    shown = np.zeros(len(data.ids))
    for ax, (name, logits) in zip(axes, panels):
        logits = np.asarray(logits)
        probs = _probs(logits)[data.ids]
        kept = np.isfinite(logits[data.ids])
        shown = np.where(kept, probs, shown)
        colors = [CHOSEN if t == data.chosen else (AFTER if k else REMOVED) for t, k in zip(data.ids, kept)]
        ax.barh(y, shown, color=colors)
        ax.set_title(f"{textwrap.fill(name, PANEL_CHARS)}\n{int(np.isfinite(logits).sum()):,} kept", fontsize=SMALL)
        ax.set_xlabel("probability", fontsize=SMALL)
        ax.tick_params(labelsize=SMALL)
        ax.set_xlim(0, _probability_limit(float(probs.max()) * 1.1))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
    axes[0].set_yticks(y, _truth_labels(data))
    for first in grid[:, 0]:  # every row's first panel names the tokens (its y axis is shared)
        first.tick_params(labelleft=True)
        if data.valid is not None:
            for tick, valid in zip(first.get_yticklabels(), data.valid):
                tick.set_color(VALID if valid else INVALID)
    axes[0].invert_yaxis()
    fig.suptitle(f"{_title(data)}\nsampled token in vermillion; removed tokens in grey at their last probability",
                 fontsize=SMALL)
    return fig


def _truth_labels(data: StepData) -> list[str]:
    """The candidates' labels, each after the oracle's ✓ / ✗ when there is one."""
    if data.valid is None:
        return data.labels
    return [f"{'✓' if valid else '✗'} {label}" for label, valid in zip(data.labels, data.valid)]


def _row_stages(trace: Trace, row: int, s: SamplingSettings, steps: list[int]) -> sampling.Stages:
    """The stages of ``steps`` of ``row`` ``[n, V]``: in one call without context when only the
    classic rules are on, else as the loop ran them (each step's context, XTC's coin, Mirostat's μ)."""
    if not steps:
        return sampling.filter_stages(np.zeros((0, trace.vocab_size), np.float32), s)
    if not sampling.uses_extras(s):
        return sampling.filter_stages(trace.row_logits(row)[steps], s)
    stages = trace.row_stages(row, s)
    return sampling.Stages(*[np.asarray(stage)[steps] for stage in stages])


TIMELINE_BLOCK = 8  # steps filtered at once by timeline_data: [8, V] per stage, whatever the trace's length


def _summaries(before: np.ndarray, final: np.ndarray, chosen_ids: np.ndarray) -> np.ndarray:
    """``[4, n]``: the chosen token's probability after filtering, entropy before and after, tokens
    kept, of the stages ``before`` / ``final`` ``[n, V]``."""
    probs = _probs(final)
    chosen = np.take_along_axis(probs, chosen_ids[:, None].astype(np.int64), axis=-1)[:, 0]
    return np.stack([chosen, np.asarray(sampling.entropy(before)), np.asarray(sampling.entropy(final)),
                     np.isfinite(final).sum(-1)])


def _row_timeline(trace: Trace, row: int, s: SamplingSettings) -> np.ndarray:
    """:func:`_summaries` of one row's steps: the classic rules a block of steps at a time (padded
    to ``TIMELINE_BLOCK``: one compile), other rules with the trace's replay (context, XTC's coin,
    Mirostat's μ), as the loop filtered them."""
    n, ids = int(trace.lengths[row]), trace.token_ids[row]
    if n and sampling.uses_extras(s):
        exact = trace.row_stages(row, s)
        return _summaries(np.asarray(sampling.before_cuts(exact, s)), np.asarray(exact.final), ids[:n])
    logits, parts = trace.row_logits(row), []
    for start in range(0, n, TIMELINE_BLOCK):
        block = np.zeros((TIMELINE_BLOCK, trace.vocab_size), np.float32)
        size = min(TIMELINE_BLOCK, n - start)
        block[:size] = logits[start: start + size]
        stages = sampling.filter_stages(block, s)
        heated, final = np.asarray(sampling.before_cuts(stages, s)), np.asarray(stages.final)
        del stages  # the block's other stages, freed before the next block is filtered
        parts.append(_summaries(heated, final, np.resize(ids[start: start + size], TIMELINE_BLOCK))[:, :size])
    return np.concatenate(parts, axis=1) if parts else np.zeros((4, 0))


def timeline_data(trace: Trace, settings: SamplingSettings | None = None) -> TimelineData:
    """Per-step summaries for every row (settings: the rows' own or one override for all rows),
    each step filtered as the loop filtered it, a row and a block of steps at a time: the memory
    stays a few ``[8, V]`` arrays, whatever the trace's size.

    Usage: ``timeline_data(trace).num_kept[0]``
    """
    out = np.full((4, trace.num_rows, trace.num_steps), np.nan)
    for row in range(trace.num_rows):
        summaries = _row_timeline(trace, row, settings or trace.settings[row])
        out[:, row, : summaries.shape[1]] = summaries
    chosen, before, after, kept = out
    return TimelineData(chosen_prob=chosen, entropy_before=before, entropy_after=after, num_kept=kept,
                        lengths=np.asarray(trace.lengths))


def _timeline_title(settings: Sequence[SamplingSettings]) -> str:
    """A title that names only the filters these rows use."""
    rules = {"top-k": "top_k", "top-p": "top_p", "min-p": "min_p", "Mirostat": "mirostat"}
    used = {name for s in settings if s.temperature > 0
            for name, stage in rules.items() if sampling.RULE[stage].is_on(s)}
    if not used:
        if any(sampling.uses_extras(s) for s in settings):
            return "Sampling timeline: confidence and uncertainty at every step, with the rules each label names"
        return "Sampling timeline: confidence and uncertainty at every step (no filter: every token stays)"
    notes = {"top-k": "top-k keeps a fixed number", "top-p": "the top-p nucleus grows and shrinks with the "
             "model's confidence", "min-p": "min-p keeps tokens near the top one",
             "Mirostat": "Mirostat keeps the tokens less surprising than μ"}
    title = "Sampling timeline: " + "; ".join(notes[name] for name in ("top-p", "top-k", "min-p", "Mirostat")
                                              if name in used)
    return textwrap.fill(title, TITLE_CHARS)


def timeline_view(trace: Trace, settings: SamplingSettings | None = None, rows: Sequence[int] | None = None,
                  labels: Sequence[str] | None = None, width: float = WIDTH, small_multiples: bool = False) -> Figure:
    """Across all steps: the chosen token's probability, entropy after filtering and the number of
    tokens kept (log scale); several rows (seeds or settings) overlaid, each with its own colour,
    line style and marker so that no line hides another. The legend sits above the plots.
    When a shown row uses Mirostat, a fourth panel follows its μ, the surprise of each sampled token,
    their mean so far and the target τ (:meth:`Trace.mirostat`). ``small_multiples``: one line of
    panels per row instead (same axes everywhere, no Mirostat panel), for more than two rows.

    Usage: ``timeline_view(trace, labels=["T=0.5", "T=1.0"])`` or
    ``timeline_view(trace, labels=names, small_multiples=True)``
    """
    data = timeline_data(trace, settings)
    rows = list(range(trace.num_rows)) if rows is None else list(rows)
    if labels is None:
        labels = [f"seed {trace.seeds[r]}: {(settings or trace.settings[r]).label()}" for r in rows]
    if small_multiples:
        return _timeline_grid(trace, data, rows, labels, settings, width)
    mirostat = [i for i, r in enumerate(rows) if (settings or trace.settings[r]).mirostat_tau > 0]
    fig = _new_figure(6.2 + 2.2 * bool(mirostat), width)
    axes = fig.subplots(3 + bool(mirostat), 1, sharex=True)
    ax_p, ax_h, ax_k = axes[:3]
    steps = np.arange(trace.num_steps)
    styles, markers = ("-", "--", "-.", ":"), ("o", "s", "^", "D", "v", "P")
    for i, (row, label) in enumerate(zip(rows, labels)):
        line = dict(color=ROW_COLORS[i % len(ROW_COLORS)], linestyle=styles[i % len(styles)],
                    marker=markers[i % len(markers)], markersize=4, linewidth=1.6, alpha=0.9)
        ax_p.plot(steps, data.chosen_prob[row], label=label, **line)
        ax_h.plot(steps, data.entropy_after[row], **line)
        ax_k.plot(steps, data.num_kept[row], drawstyle="steps-mid", **{**line, "marker": None})
    ax_p.set_ylabel("p(chosen)\nafter filtering", fontsize=SMALL)
    ax_p.set_ylim(0, 1.0)
    ax_h.set_ylabel("entropy (nats)\nafter filtering", fontsize=SMALL)
    ax_k.set_ylabel("tokens kept", fontsize=SMALL)
    ax_k.set_yscale("log")
    if mirostat:
        colors = [ROW_COLORS[i % len(ROW_COLORS)] for i in mirostat]
        _mirostat_panel(axes[3], trace, [rows[i] for i in mirostat], colors, settings)
    axes[-1].set_xlabel("generation step", fontsize=SMALL)
    axes[-1].xaxis.set_major_locator(MaxNLocator(nbins=20, integer=True))
    fig.legend(*ax_p.get_legend_handles_labels(), loc="outside upper center", ncol=min(2, len(rows)),
               fontsize=SMALL - 1, frameon=False)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=SMALL)
    ax_p.set_title(_timeline_title([settings or trace.settings[r] for r in rows]), fontsize=SMALL, loc="left")
    return fig


def _timeline_grid(trace: Trace, data: "TimelineData", rows: list[int], labels: Sequence[str],
                   settings: SamplingSettings | None, width: float) -> Figure:
    """:func:`timeline_view` as small multiples: a line of three panels per row, the same axes in
    each column, the row's label above its first panel."""
    fig = _new_figure(0.9 + 1.45 * len(rows), width)
    axes = fig.subplots(len(rows), 3, sharex=True, sharey="col", squeeze=False)
    steps = np.arange(trace.num_steps)
    for i, (row, label) in enumerate(zip(rows, labels)):
        color = ROW_COLORS[i % len(ROW_COLORS)]
        ax_p, ax_h, ax_k = axes[i]
        ax_p.plot(steps, data.chosen_prob[row], color=color, marker="o", markersize=2.5, linewidth=1.2)
        ax_h.plot(steps, data.entropy_after[row], color=color, marker="o", markersize=2.5, linewidth=1.2)
        ax_k.plot(steps, data.num_kept[row], color=color, drawstyle="steps-mid", linewidth=1.4)
        ax_p.set_title(label, loc="left", fontsize=SMALL, color=color, fontweight="bold")
    for ax, title in zip(axes[0], ("p(chosen) after filtering", "entropy after filtering (nats)", "tokens kept")):
        ax.set_title(title, loc="right", fontsize=SMALL - 1)
    for ax in axes[:, 0]:
        ax.set_ylim(0, 1.05)
    for ax in axes[:, 2]:
        ax.set_yscale("log")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=SMALL - 1)
    for ax in axes[-1]:
        ax.set_xlabel("generation step", fontsize=SMALL)
    fig.suptitle(_timeline_title([settings or trace.settings[r] for r in rows]), fontsize=SMALL, x=0.01, ha="left")
    return fig


def _mirostat_panel(ax, trace: Trace, rows: list[int], colors: list[str], settings: SamplingSettings | None) -> None:
    """Mirostat's μ (line), each sampled token's surprise (dots), their mean so far (dotted) and τ
    (dashed) for ``rows``, in bits."""
    for row, color in zip(rows, colors):
        replay = trace.mirostat(row, settings)
        steps = np.arange(replay.mu.size)
        ax.plot(steps, replay.mu, color=color, linewidth=1.8)
        ax.plot(steps, replay.surprise, color=color, linestyle="none", marker="o", markersize=3.5, alpha=0.75)
        ax.plot(steps, np.cumsum(replay.surprise) / (steps + 1), color=color, linestyle=":", linewidth=2.2)
        ax.axhline(replay.tau, color=color, linestyle="--", linewidth=1.2)
    ax.set_ylabel("Mirostat (bits)", fontsize=SMALL)
    ax.set_ylim(bottom=0)
    key = [Line2D([], [], color="0.3", linewidth=1.8, label="μ: largest surprise kept"),
           Line2D([], [], color="0.3", linestyle="none", marker="o", markersize=4,
                  label="surprise of each sampled token (−log₂ p)"),
           Line2D([], [], color="0.3", linestyle=":", linewidth=2.2, label="mean surprise so far"),
           Line2D([], [], color="0.3", linestyle="--", linewidth=1.2, label="τ: target surprise")]
    ax.legend(handles=key, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, fontsize=SMALL - 1, frameon=False,
              borderaxespad=0.2)


def heatmap_view(trace: Trace, tokenizer: Tokenizer, row: int = 0, top_n: int = 8, max_steps: int = 12,
                 page: int = 0, settings: SamplingSettings | None = None) -> Figure:
    """Steps × top candidates coloured by probability after filtering (removed: grey), token labels
    in the cells, the sampled token outlined; pages of ``max_steps`` steps keep the cells readable.

    Usage: ``heatmap_view(trace, tok, page=1)``
    """
    length = int(trace.lengths[row])
    pages = max(1, -(-length // max_steps))
    if not 0 <= page < pages:
        raise ValueError(f"page must be between 0 and {pages - 1}, got {page}")
    steps = range(page * max_steps, min(length, (page + 1) * max_steps))
    s = settings or trace.settings[row]
    logits = trace.row_logits(row)[list(steps)]
    final = np.asarray(_row_stages(trace, row, s, list(steps)).final)
    probs = _probs(final)
    order = top_order(logits, top_n)
    values = np.take_along_axis(probs, order, axis=-1)
    kept = np.isfinite(np.take_along_axis(final, order, axis=-1))
    fig = _new_figure(0.42 * len(steps) + 1.6)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad=REMOVED)
    image = ax.imshow(np.where(kept, values, np.nan), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i, step in enumerate(steps):
        for j, token in enumerate(order[i]):
            label = show_token(tokenizer, token, 9)
            text = f"{label}\n{values[i, j]:.2f}" if kept[i, j] else label
            light = kept[i, j] and values[i, j] < 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=SMALL - 1, linespacing=1.0,
                    color="white" if light else "black")
            if token == trace.token_ids[row, step]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=CHOSEN, linewidth=2.5))
    ax.set_yticks(range(len(steps)), [str(step) for step in steps], fontsize=SMALL)
    ax.set_xticks(range(top_n), [f"#{j + 1}" for j in range(top_n)], fontsize=SMALL)
    ax.set_xlabel("candidate rank by raw logit (grey = removed; outlined = sampled)", fontsize=SMALL)
    ax.set_ylabel("step", fontsize=SMALL)
    fig.colorbar(image, ax=ax, label="probability after filtering", shrink=0.9)
    ax.set_title(f"{s.label()}: steps {steps.start}–{steps.stop - 1} (page {page + 1} of {pages})",
                 fontsize=SMALL, loc="left")
    return fig


@dataclasses.dataclass(frozen=True)
class ColoredText:
    """Coloured generated text; renders inline in Jupyter and saves as a standalone HTML page."""

    html: str

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str | Path) -> Path:
        """Write a standalone UTF-8 HTML file. Usage: ``colored_text(trace, tok).save("story.html")``"""
        path = Path(path)
        path.write_text("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>txtgen-nb</title></head>"
                        f"<body>{self.html}</body></html>\n", encoding="utf-8")
        return path


# The alternatives of a token show in a panel beside the text (absolutely positioned against
# .tg-view, not against the token), so no output area, scroll box or viewport edge can clip them;
# :focus makes a tap on a touch screen show them too.
_CSS = """<style>
.tg-view{position:relative;display:flex;gap:10px;min-height:176px;font-family:sans-serif}
.tg-text{flex:1 1 auto;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:15px;line-height:2.0;
white-space:pre-wrap;overflow-wrap:anywhere}
.tg-prompt{color:#333;font-weight:bold}.tg-template{color:#888;font-weight:normal}
.tg-tok{border-radius:3px;padding:1px 0;cursor:pointer}
.tg-tok:focus{outline:2px dashed #555;outline-offset:1px}
.tg-tok.tg-current{outline:3px solid #000;outline-offset:1px;box-shadow:0 0 0 5px #fff}
.tg-tok.tg-changed{box-shadow:inset 0 -4px 0 #D55E00}
.tg-tok.tg-current.tg-changed{box-shadow:inset 0 -4px 0 #D55E00,0 0 0 5px #fff}
.tg-side{flex:0 0 18.5em}
.tg-hint,.tg-tip{box-sizing:border-box;width:18.5em;font-size:13px;line-height:1.45;padding:6px 8px;
border:1px solid #bbb;border-radius:4px;white-space:pre;overflow:hidden}
.tg-hint{color:#555;white-space:normal}
.tg-tip{display:none;position:absolute;top:0;right:0;z-index:5;background:#fff;color:#000;
font-family:ui-monospace,Menlo,Consolas,monospace;box-shadow:0 2px 6px rgba(0,0,0,.2)}
.tg-tok:hover .tg-tip,.tg-tok:focus .tg-tip,.tg-tok.tg-current .tg-tip{display:block}
.tg-view:has(.tg-tok:hover) .tg-tok:not(:hover) .tg-tip{display:none}
.tg-legend{font-family:sans-serif;font-size:13px;margin:4px 0}
.tg-bar{display:inline-block;width:140px;height:11px;vertical-align:middle;margin:0 6px}
.tg-summary{font-family:sans-serif;font-size:14px;margin:2px 0 4px 0}
.tg-below{flex-direction:column;min-height:0;padding-bottom:176px}
.tg-below .tg-side{display:none}
.tg-below .tg-tip{top:auto;bottom:0;left:0;right:auto;max-width:100%}
</style>"""


def _hex(rgba) -> str:
    return "#%02x%02x%02x" % tuple(int(round(255 * c)) for c in rgba[:3])


@dataclasses.dataclass(frozen=True)
class TextData:
    """The numbers behind :func:`colored_text`, one entry per generated token."""

    prompt: str
    pieces: list[str]  # [N] each token's text (byte pieces and EOS shown as labels)
    token_ids: np.ndarray  # [N]
    values: np.ndarray  # [N] what colours each token: probability, rank or entropy
    shade: np.ndarray  # [N] in [0, 1]: 1 = confident (light), 0 = unlikely or uncertain (dark)
    tips: list[str]  # [N] the step's numbers and its top alternatives, before → after filtering
    legend: tuple[str, str]  # labels of the dark and light ends of the colour bar
    color_by: str
    settings: SamplingSettings
    templated: bool = False  # the prompt is the model's chat template (shown greyed, markers and all)


def text_data(trace: Trace, tokenizer: Tokenizer, row: int = 0, color_by: str = "probability",
              settings: SamplingSettings | None = None, top_alternatives: int = 5) -> TextData:
    """Per token of ``row``: its text, colour value and alternatives, re-filtered with ``settings``.

    Usage: ``text_data(trace, tok, color_by="rank").values``
    """
    if color_by not in ("probability", "rank", "entropy"):
        raise ValueError(f"color_by must be 'probability', 'rank' or 'entropy', got {color_by!r}")
    length, vocab = int(trace.lengths[row]), trace.vocab_size
    s = settings or trace.settings[row]
    logits = trace.row_logits(row)[:length].reshape(length, vocab)
    stages = _row_stages(trace, row, s, list(range(length)))
    final = np.asarray(stages.final)
    before = _probs(np.asarray(sampling.before_cuts(stages, s))).reshape(length, vocab)
    probs = _probs(final).reshape(length, vocab)
    tokens = trace.token_ids[row, :length].astype(np.int64)
    steps = np.arange(length)
    chosen_p = probs[steps, tokens]
    ranks = (logits > logits[steps, tokens][:, None]).sum(-1) + 1
    entropies = np.asarray(sampling.entropy(final)).reshape(length)
    if color_by == "probability":
        values, shade, legend = chosen_p, chosen_p, ("p = 0", "p = 1")
    elif color_by == "rank":
        values, shade = ranks, 1 - np.log(ranks) / np.log(max(2, vocab))
        legend = (f"rank {vocab}", "rank 1")
    else:
        top = max(1.0, float(entropies.max(initial=0)))
        values, shade, legend = entropies, 1 - entropies / top, (f"entropy {top:.1f}", "entropy 0")
    pieces, tips = [], []
    for i, token in enumerate(tokens):
        text = tokenizer.decode([int(token)], skip_special_tokens=False)
        pieces.append(show_token(tokenizer, token) if "\ufffd" in text or trace.is_stop(token) else text)
        order = top_order(logits[i], top_alternatives)
        lines = [f"{'▶' if a == token else ' '}{show_token(tokenizer, a, 11):<12}"
                 + (f"{before[i, a]:.2f} → {probs[i, a]:.2f}" if probs[i, a] > 0 else f"{before[i, a]:.2f} ✗ removed")
                 for a in order]
        tips.append(f"step {i}: p={chosen_p[i]:.3f}, rank {int(ranks[i])}\nentropy {entropies[i]:.2f} nats\n"
                    f"top {len(order)}: before → after\n" + "\n".join(lines))
    return TextData(prompt=shown_prompt(tokenizer, trace.prompt_ids[row], trace.templated), pieces=pieces,
                    token_ids=tokens, values=values, shade=np.asarray(shade, float), tips=tips, legend=legend,
                    color_by=color_by, settings=s, templated=trace.templated)


def changed_tokens(previous: Sequence[int], current: Sequence[int]) -> np.ndarray:
    """``[len(current)]`` bool: where ``current`` differs from ``previous`` at the same position.

    Usage: ``changed_tokens(old.new_token_ids[0], new.new_token_ids[0]).sum()``
    """
    previous = list(previous)
    return np.array([i >= len(previous) or int(t) != int(previous[i]) for i, t in enumerate(current)], bool)


def change_summary(previous: Sequence[int] | None, current: Sequence[int], cause: str = "",
                   greedy: bool = False) -> str:
    """One sentence on what a new generation changed, and why nothing did when nothing did
    (``greedy``: both runs took the most likely token every time, so the seed played no part).

    Usage: ``change_summary(old_ids, new_ids, cause="temperature 0.8 → 1.1")``
    """
    if previous is None:
        return f"{len(current)} new tokens."
    changed = int(changed_tokens(previous, current).sum()) + max(0, len(previous) - len(current))
    total = max(len(previous), len(current))
    what = f" after {cause}" if cause else ""
    if changed:
        return f"{changed} of {total} tokens changed{what}."
    if greedy:
        return f"No token changed{what}: greedy, the most likely token every time (the seed plays no part)."
    return (f"No token changed{what}: the same seed reuses the same random draws, and at every step they still "
            f"picked the same token. Press “New sample” for fresh draws.")


def color_legend_html(data: TextData, settings_label: str | None = None) -> str:
    """The colour bar of :func:`token_html`: what the colours mean, under ``settings_label`` (default:
    the row's settings; ``""`` for a legend shared by columns of several settings).

    Usage: ``color_legend_html(text_data(trace, tok), settings_label="each column's settings")``
    """
    cmap = matplotlib.colormaps[CMAP]
    gradient = ", ".join(_hex(cmap(x)) for x in np.linspace(0, 1, 8))
    label = data.settings.label() if settings_label is None else settings_label
    under = f" ({html.escape(label)})" if label else ""
    return (f'<div class="tg-legend">coloured by {html.escape(data.color_by)}{under}: {html.escape(data.legend[0])}'
            f'<span class="tg-bar" style="background:linear-gradient(to right, {gradient})"></span>'
            f'{html.escape(data.legend[1])}</div>')


def token_html(data: TextData, *, selected: int | None = None, changed: Sequence[bool] | None = None,
               summary: str = "", panel: str = "side", legend: bool = True) -> str:
    """The HTML of :func:`colored_text`: legend, optional summary line, tokens and the panel
    (``"side"``, or ``"below"`` for narrow columns) that shows the hovered, tapped or ``selected``
    token's alternatives. All text is escaped.

    Usage: ``token_html(text_data(trace, tok), selected=3)``
    """
    cmap = matplotlib.colormaps[CMAP]
    spans = []
    for i, (piece, tip, shade) in enumerate(zip(data.pieces, data.tips, data.shade)):
        color = cmap(float(shade))
        ink = "#000" if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 0.55 else "#fff"
        classes = "tg-tok" + (" tg-current" if i == selected else "") + (" tg-changed" if changed is not None
                                                                         and changed[i] else "")
        spans.append(f'<span class="{classes}" tabindex="0" data-step="{i}" data-value="{float(data.values[i]):.4g}" '
                     f'style="background:{_hex(color)};color:{ink}">{html.escape(piece)}'
                     f'<span class="tg-tip">{html.escape(tip)}</span></span>')
    legend_html = color_legend_html(data) if legend else ""
    summary = f'<div class="tg-summary">{html.escape(summary)}</div>' if summary else ""
    hint = ('<div class="tg-side"><div class="tg-hint">Hover over a token, or tap it, to see the step’s numbers and '
            'the alternatives the model considered.</div></div>')
    view = "tg-view tg-below" if panel == "below" else "tg-view"
    prompt_class = "tg-prompt tg-template" if data.templated else "tg-prompt"
    return (f'{_CSS}{legend_html}{summary}<div class="{view}"><div class="tg-text"><span class="{prompt_class}">'
            f'{html.escape(data.prompt)}</span>{"".join(spans)}</div>{hint}</div>')


def colored_text(trace: Trace, tokenizer: Tokenizer, row: int = 0, color_by: str = "probability",
                 settings: SamplingSettings | None = None, top_alternatives: int = 5) -> ColoredText:
    """The generated tokens coloured by probability (after filtering), rank (by raw logit) or
    entropy (after filtering); hovering or tapping a token shows its alternatives beside the text,
    inside the output (never clipped). All text is escaped.

    Usage: ``colored_text(trace, tok, color_by="entropy").save("story.html")``
    """
    return ColoredText(token_html(text_data(trace, tokenizer, row, color_by, settings, top_alternatives)))


def temperature_view(logits: np.ndarray, tokenizer: Tokenizer, temperatures: Sequence[float] = (0.3, 0.8, 1.5),
                     top_n: int = 15) -> Figure:
    """How temperature reshapes one next-token distribution: the top candidates' probabilities at a
    few temperatures (left), and entropy and the top token's probability over a range (right).

    Usage: ``temperature_view(trace.logits[0, 0], tok, temperatures=[0.5, 1.0, 2.0])``
    """
    logits = np.asarray(logits, np.float32)
    ids = top_order(logits, top_n)
    fig = _new_figure(4.2)
    ax_bars, ax_curve = fig.subplots(1, 2, width_ratios=[3, 2])
    x = np.arange(len(ids))
    width = 0.8 / max(1, len(temperatures))
    for i, t in enumerate(temperatures):
        probs = _probs(np.asarray(sampling.apply_temperature(logits, t)))[ids]
        ax_bars.bar(x + (i - (len(temperatures) - 1) / 2) * width, probs, width, color=ROW_COLORS[i % len(ROW_COLORS)],
                    label=f"T={t:g}" + (" (greedy)" if t == 0 else ""))
    ax_bars.set_xticks(x, [show_token(tokenizer, i) for i in ids], rotation=55, ha="right", fontsize=9)
    ax_bars.set_ylabel("probability")
    ax_bars.set_xlabel(f"top {len(ids)} candidates by raw logit")
    ax_bars.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=len(temperatures), fontsize=SMALL - 1,
                   frameon=False, borderaxespad=0)
    grid = np.linspace(0.05, 2.0, 40)
    scaled = np.stack([np.asarray(sampling.apply_temperature(logits, t)) for t in grid])
    ax_curve.plot(grid, np.asarray(sampling.entropy(scaled)), color=CURVE, label="entropy (nats)")
    ax_curve.set_xlabel("temperature")
    ax_curve.set_ylabel("entropy (nats)", color=CURVE)
    top = ax_curve.twinx()
    top.plot(grid, _probs(scaled).max(-1), color=CHOSEN, linestyle="--", label="p(top token)")
    top.set_ylim(0, 1.05)
    top.set_ylabel("p(top token)", color=CHOSEN)
    for t in temperatures:
        ax_curve.axvline(t, color="#999999", linewidth=0.8, linestyle=":")
    ax_curve.grid(alpha=0.3)
    fig.suptitle("Temperature divides the logits: below 1 sharpens the distribution, above 1 flattens it",
                 fontsize=10)
    return fig


def sweep_view(rows: Sequence["SweepRow"]) -> Figure:
    """Quality against diversity for a temperature × top-p :func:`txtgen_nb.metrics.sweep`: grammatical
    share, distinct-2 (±1 standard error) and repetition against temperature, one line per top-p,
    and the quality/diversity trade-off (rows of other settings: :func:`comparison_view`).

    Usage: ``sweep_view(metrics.sweep(model, params, tok, "", temperatures=[0.5, 1.0, 1.5]))``
    """
    fig = _new_figure(4.0)
    ax_q, ax_d, ax_r, ax_trade = fig.subplots(1, 4)
    top_ps = sorted({r.top_p for r in rows}, reverse=True)
    for i, p in enumerate(top_ps):
        line = sorted((r for r in rows if r.top_p == p), key=lambda r: r.temperature)
        t = [r.temperature for r in line]
        style = dict(color=ROW_COLORS[i % len(ROW_COLORS)], marker="o", markersize=4,
                     label="top-p off" if p >= 1 else f"top-p {p:g}")
        ax_q.errorbar(t, [r.grammatical for r in line], yerr=[r.grammatical_se for r in line], capsize=2, **style)
        ax_d.errorbar(t, [r.distinct_2 for r in line], yerr=[r.distinct_2_se for r in line], capsize=2, **style)
        ax_r.plot(t, [r.repetition_3 for r in line], **style)
        ax_trade.errorbar([r.distinct_2 for r in line], [r.grammatical for r in line],
                          yerr=[r.grammatical_se for r in line], capsize=2, **style)
    _sparse_labels(ax_trade, [(r.distinct_2, r.grammatical, f"{r.temperature:g}") for r in rows])
    for ax, title in ((ax_q, "grammatical sentences"), (ax_d, "distinct-2 (diversity)"),
                      (ax_r, "repeated 3-grams")):
        ax.set_xlabel("temperature")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    ax_trade.set_xlabel("distinct-2 (diversity) →")
    ax_trade.set_ylabel("grammatical (quality) →")
    ax_trade.set_title("trade-off (labels: T)", fontsize=10)
    ax_trade.grid(alpha=0.3)
    fig.legend(*ax_q.get_legend_handles_labels(), loc="outside upper center", ncol=len(top_ps), fontsize=SMALL - 1,
               frameon=False)
    return fig


def _sparse_labels(ax, points: Sequence[tuple[float, float, str]], gap: float = 0.07) -> None:
    """Label ``(x, y, text)`` points of ``ax``, skipping any label closer than ``gap`` (a fraction of
    the axes) to one already placed, so crowded points do not print over each other. Call it after
    every artist and limit is set (it reads the axes' final data limits)."""
    ax.autoscale_view()
    placed: list[np.ndarray] = []
    for x, y, text in points:
        where = ax.transLimits.transform((x, y))
        if all(np.abs(where - p).max() >= gap for p in placed):
            placed.append(where)
            ax.annotate(text, (x, y), fontsize=SMALL - 1, xytext=(3, 3), textcoords="offset points")


def comparison_view(reference: Sequence["SweepRow"], families: dict[str, Sequence["SweepRow"]]) -> Figure:
    """Samplers against temperature alone, from :func:`txtgen_nb.metrics.sweep` rows: quality against
    diversity with ±1 standard error bars (grammatical share; the reference curve's distinct-2 too)
    (left), and each setting's grammatical share minus
    temperature alone's at the same distinct-2 (right: one line per sampler, a dot per temperature).
    A sampler's dots are filled at its lowest temperature and open at the others.

    Usage: ``comparison_view(temperature_rows, {"min-p 0.1": min_p_rows, "top-p 0.9": top_p_rows})``
    """
    from txtgen_nb.metrics import gain_at_equal_diversity

    fig = _new_figure(1.6 + 0.4 * len(families))
    ax_trade, ax_gain = fig.subplots(1, 2)
    ref = sorted(reference, key=lambda r: r.temperature)
    ax_trade.errorbar([r.distinct_2 for r in ref], [r.grammatical for r in ref], xerr=[r.distinct_2_se for r in ref],
                      yerr=[r.grammatical_se for r in ref], color="black", marker="o", markersize=3, capsize=2,
                      label="temperature alone", zorder=3)
    names = list(families)
    for y, name in enumerate(names):
        rows = sorted(families[name], key=lambda r: r.temperature)
        color, marker = READABLE_COLORS[y % len(READABLE_COLORS)], "osD^v<>pXh"[y % 10]
        for i, r in enumerate(rows):
            style = dict(color=color, marker=marker, markersize=6, capsize=2, linestyle="",
                         markerfacecolor=color if i == 0 else "white")
            ax_trade.errorbar(r.distinct_2, r.grammatical, yerr=r.grammatical_se, label=name if i == 0 else None,
                              **style)
            gain, se = gain_at_equal_diversity(r, reference)
            if np.isfinite(gain):
                ax_gain.errorbar(gain, y, xerr=se, **style)
                ax_gain.annotate(f"T={r.temperature:g}", (gain, y), fontsize=SMALL - 2, ha="center",
                                 va="bottom" if i == 0 else "top", xytext=(0, 5 if i == 0 else -5),
                                 textcoords="offset points")  # the lowest T above its dot, the others below
            else:
                ax_gain.annotate(f"T={r.temperature:g}: {_beyond_curve(r, reference)}", (0, y), fontsize=SMALL - 2,
                                 xytext=(4, -4), textcoords="offset points", color="#555555")
    ax_trade.set_xlabel("distinct-2 (diversity) →")
    ax_trade.set_ylabel("grammatical sentences (quality) →")
    ax_trade.set_title("quality and diversity (labels: T alone)", fontsize=SMALL + 1)
    ax_trade.set_ylim(-0.02, 1.04)
    ax_trade.grid(alpha=0.3)
    _sparse_labels(ax_trade, [(r.distinct_2, r.grammatical, f"{r.temperature:g}") for r in ref], gap=0.04)
    ax_gain.axvline(0, color="black", linewidth=1)
    ax_gain.set_yticks(range(len(names)), names, fontsize=SMALL)
    ax_gain.set_ylim(len(names) - 0.4, -0.7)
    ax_gain.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax_gain.set_xlabel("grammatical share minus T alone's at the same distinct-2")
    ax_gain.set_title("gain at equal diversity (±1 standard error)", fontsize=SMALL + 1)
    ax_gain.grid(alpha=0.3, axis="x")
    fig.legend(*ax_trade.get_legend_handles_labels(), loc="outside lower center", ncol=min(5, len(names) + 1),
               fontsize=SMALL - 1, frameon=False)
    return fig


def _beyond_curve(row: "SweepRow", reference: Sequence["SweepRow"]) -> str:
    """Why ``row`` has no gain at equal diversity: it lies past either end of the reference curve."""
    side = "more" if row.distinct_2 > max(q.distinct_2 for q in reference) else "less"
    return f"{side} diverse than any T alone"


def _without_temperature(row: "SweepRow") -> str:
    """A sweep row's setting without its temperature: ``"top-p 0.9"``."""
    return " · ".join(row.settings.label().split(" · ")[1:]) or "temperature alone"


def tuning_view(reference: Sequence["SweepRow"], groups: dict[str, Sequence["SweepRow"]]) -> Figure:
    """Every value tried for each rule (:func:`txtgen_nb.metrics.sweep_groups` rows), one panel per
    temperature: its grammatical share minus temperature alone's at the same distinct-2, ±1 standard
    error. Each rule's best value at each temperature (:func:`txtgen_nb.metrics.tuned`) is filled, the
    others open; a value more or less diverse than any temperature alone says so instead.

    Usage: ``tuning_view(temperature_rows, metrics.sweep_groups(model, params, tok, "", grid, seeds=48))``
    """
    from txtgen_nb.metrics import gain_at_equal_diversity, tuned

    temperatures = sorted({r.temperature for rows in groups.values() for r in rows})
    lines = [(i, name, value) for i, name in enumerate(groups)
             for value in dict.fromkeys(map(_without_temperature, groups[name]))]
    best = {id(r) for rows in groups.values() for r in tuned(rows, reference)}  # each rule's best per temperature
    fig = _new_figure(1.3 + 0.27 * len(lines))
    axes = np.atleast_1d(fig.subplots(1, len(temperatures), sharey=True, squeeze=False)[0])
    for ax, t in zip(axes, temperatures):
        for i in range(1, len(groups), 2):  # every other rule on a grey band: its values read as one block
            rows = [y for y, line in enumerate(lines) if line[0] == i]
            ax.axhspan(rows[0] - 0.5, rows[-1] + 0.5, color="#f0f0f0", zorder=0)
        for y, (i, name, value) in enumerate(lines):
            for r in (r for r in groups[name] if r.temperature == t and _without_temperature(r) == value):
                color, marker = READABLE_COLORS[i % len(READABLE_COLORS)], "osD^v<>pXh"[i % 10]
                gain, se = gain_at_equal_diversity(r, reference)
                if np.isfinite(gain):
                    ax.errorbar(gain, y, xerr=se, color=color, marker=marker, markersize=6, capsize=2,
                                markerfacecolor=color if id(r) in best else "white")
                else:
                    ax.annotate(_beyond_curve(r, reference), (0, y), fontsize=SMALL - 2, va="center",
                                xytext=(4, 0), textcoords="offset points", color="#555555")
        ax.axvline(0, color="black", linewidth=1)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_title(f"T = {t:g}", fontsize=SMALL + 1)
        ax.set_xlabel("gain at equal diversity", fontsize=SMALL)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(range(len(lines)), [value for _, _, value in lines], fontsize=SMALL)
    axes[0].set_ylim(len(lines) - 0.5, -0.5)
    fig.suptitle("Every value tried: grammatical share minus T alone's at the same distinct-2 (±1 SE; "
                 "filled: each rule's best)", fontsize=SMALL + 1)
    return fig


def cutoff_view(quality: "CutoffQuality") -> Figure:
    """One row's cutoff judged at every step against the grammar (:func:`txtgen_nb.truth.cutoff_quality`):
    the share of the valid probability kept (top) and the chance of sampling an invalid token (bottom), the
    sampler's settings beside the best "r most likely" cut of each step; steps after the text left the
    grammar shaded (nothing is valid there), a ✗ where the generation sampled an invalid token.

    Usage: ``cutoff_view(truth.cutoff_quality(trace, tok, SamplingSettings(1.0, 0, 0.9)))``
    """
    q = quality
    fig = _new_figure(4.6)
    ax_kept, ax_bad = fig.subplots(2, 1, sharex=True)
    steps = np.arange(q.valid_kept.size)
    panels = ((ax_kept, q.valid_kept, q.best_valid_kept, "share of the valid probability kept ↑"),
              (ax_bad, q.invalid_chance, q.best_invalid_chance, "chance of sampling an invalid token ↓"))
    for ax, ours, best, title in panels:
        ax.plot(steps, np.where(q.judged, ours, np.nan), color=AFTER, marker="o", markersize=3,
                label=short_label(q.settings, 60))
        ax.plot(steps, np.where(q.judged, best, np.nan), color="black", linestyle=":", linewidth=1.5,
                label="best top-r cut of each step")
        off = np.flatnonzero(~q.judged)
        if off.size:
            ax.axvspan(off[0] - 0.5, steps[-1] + 0.5, color=REMOVED, alpha=0.35, linewidth=0,
                       label="off the grammar (nothing valid)")
        ax.set_title(title, fontsize=SMALL, loc="left")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=SMALL)
    wrong = np.flatnonzero(q.judged & ~q.chosen_valid)
    if wrong.size:
        ax_bad.plot(wrong, np.full(wrong.size, 1.0), linestyle="", marker="$✗$", markersize=10, color=CHOSEN,
                    label="the sampled token was invalid")
    ax_bad.set_xlabel("generation step", fontsize=SMALL)
    if q.judged.any():
        names = ("valid_kept", "best_valid_kept", "invalid_chance")
        mean = {name: np.mean(getattr(q, name)[q.judged]) for name in names}
        summary = (f"{int(q.judged.sum())} of {steps.size} steps on the grammar: on average it keeps "
                   f"{mean['valid_kept']:.1%} of the valid probability (best cut {mean['best_valid_kept']:.1%}), "
                   f"invalid chance {mean['invalid_chance']:.2%}")
    else:
        summary = "the text is off the grammar from the first step"
    fig.suptitle(f"{short_label(q.settings, 70)} judged by the grammar\n{summary}", fontsize=SMALL)
    handles, labels = ax_bad.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=SMALL - 1, frameon=False)
    return fig


def constraint_view(trace: Trace, rows: Sequence[int] | None = None) -> Figure:
    """What a grammar-constrained generation cost (``generate(..., constrain="grammar", trace=True)``): at each
    step of each row, the share of the model's own probability the grammar took away before the draw (what
    renormalising over the allowed tokens hides), one line per row.

    Usage: ``constraint_view(generate(model, params, tok, prompts, constrain="grammar", trace=True).trace)``
    """
    rows = list(range(trace.num_rows)) if rows is None else list(rows)
    fig = _new_figure(3.2)
    ax = fig.subplots()
    costs = [1 - trace.constraint_mass(row) for row in rows]
    for i, (row, cost) in enumerate(zip(rows, costs)):
        ax.plot(np.arange(cost.size), cost, color=READABLE_COLORS[i % len(READABLE_COLORS)], marker="o",
                markersize=3, linewidth=1.2, label=f"row {row}")
    every = np.concatenate(costs) if costs else np.zeros(0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylim(0, max(0.05, float(every.max(initial=0)) * 1.1))
    ax.set_xlabel("generation step", fontsize=SMALL)
    ax.set_ylabel("probability taken away", fontsize=SMALL)
    ax.tick_params(labelsize=SMALL)
    ax.grid(alpha=0.3)
    ax.set_title(f"What the grammar took away before each draw: {every.mean() if every.size else 0:.1%} of the "
                 f"model's probability on average, at most {every.max(initial=0):.0%}", fontsize=SMALL, loc="left")
    if len(rows) <= 8:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=len(rows), fontsize=SMALL - 1,
                   frameon=False)
    return fig


def beam_view(result: "BeamResult", tokenizer: Tokenizer, max_steps: int = 14) -> Figure:
    """A beam search step by step (:func:`txtgen_nb.beam.beam_search`): each column a step, each row a running
    beam (best at the top) with the token it took, a line to the beam it continued; the best hypothesis in
    vermillion; below, how many hypotheses ended at each step. The first ``max_steps`` steps.

    Usage: ``beam_view(beam_search(model, params, tok, "Once upon a time", num_beams=4), tok)``
    """
    steps = result.steps[:max_steps]
    beams = len(steps[0].tokens) if steps else 0
    fig = _new_figure(0.42 * beams + 1.9)
    ax = fig.subplots()
    best = set(result.best_path())
    for t, step in enumerate(steps):
        for rank, (token, parent) in enumerate(zip(step.tokens, step.parents)):
            on_best = (t, rank) in best
            if t:
                ax.plot([t - 1, t], [parent, rank], color=CHOSEN if on_best and (t - 1, int(parent)) in best
                        else "#BBBBBB", linewidth=2.2 if on_best else 0.8, zorder=1)
            ax.annotate(show_token(tokenizer, int(token), 9), (t, rank), ha="center", va="center", fontsize=SMALL - 2,
                        color=CHOSEN if on_best else "#000000", fontweight="bold" if on_best else "normal",
                        bbox=dict(facecolor="white", edgecolor=CHOSEN if on_best else "#888888", pad=1.5), zorder=2)
        if step.ended:
            ax.annotate(f"{len(step.ended)} ended", (t, beams - 0.3), ha="center", va="top", fontsize=SMALL - 2,
                        color="#555555")
    last = next(((t, rank) for t, rank in sorted(best) if rank < 0 and t < len(steps)), None)
    if last is not None:
        ax.annotate(f"best ends: {show_token(tokenizer, result.token_ids[-1], 9)}", (last[0], -0.7), ha="center",
                    fontsize=SMALL - 2, color=CHOSEN, fontweight="bold")
    ax.set_xlim(-0.6, max(len(steps), 1) - 0.4)
    ax.set_ylim(beams - 0.2, -1.1)
    ax.set_yticks(range(beams), [f"beam {k + 1}" for k in range(beams)], fontsize=SMALL - 1)
    ax.set_xticks(range(len(steps)), [str(t) for t in range(len(steps))], fontsize=SMALL - 1)
    ax.set_xlabel("step", fontsize=SMALL)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"Beam search, {beams} beams: the best hypothesis (score {result.score:.2f}) in vermillion\n"
                 f"“{tail(result.continuation, 90)}”", fontsize=SMALL, loc="left")
    return fig


def degeneration_view(methods: dict[str, "Degeneration"], title: str = "",
                      paper: dict[str, float] | None = None) -> Figure:
    """Decoding methods side by side (:func:`txtgen_nb.metrics.degeneration` of each one's texts): the share
    of texts that end in a loop (±1 standard error; ``paper``: a published figure per method, drawn as a
    black tick, e.g. ``metrics.HOLTZMAN_REPETITION``), repeated 3-grams within a text, and distinct-2.

    Usage: ``degeneration_view({"greedy": degeneration(greedy_texts), "beam 16": degeneration(beam_texts)})``
    """
    names = list(methods)
    fig = _new_figure(1.2 + 0.42 * len(names))
    axes = fig.subplots(1, 3, sharey=True)
    y = np.arange(len(names))
    panels = (("ends in a loop", "loops", "loops_se"), ("repeated 3-grams in a text", "repetition_3", None),
              ("distinct-2 (diversity)", "distinct_2", None))
    for i, (ax, (label, field, se)) in enumerate(zip(axes, panels)):
        values = [getattr(methods[n], field) for n in names]
        errors = [getattr(methods[n], se) for n in names] if se else None
        ax.barh(y, values, xerr=errors, color=[READABLE_COLORS[j % len(READABLE_COLORS)] for j in y], capsize=3)
        for j, value in enumerate(values):
            end = value + (errors[j] if errors and np.isfinite(errors[j]) else 0)  # the label after the error bar
            ax.annotate(f"{value:.0%}" if field != "distinct_2" else f"{value:.2f}", (end, j), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=SMALL - 1)
        if field == "loops" and paper:
            marks = [(j, paper[n]) for j, n in enumerate(names) if n in paper]
            ax.plot([v for _, v in marks], [j for j, _ in marks], linestyle="", marker="|", markersize=16,
                    color="black")
        ax.set_title(label, fontsize=SMALL)
        ax.set_xlim(0, 1.05 if field != "repetition_3" else max(0.05, max(values) * 1.3))
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0) if field != "distinct_2"
                                     else FormatStrFormatter("%.1f"))
        ax.tick_params(labelsize=SMALL - 1)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, names, fontsize=SMALL)
    axes[0].invert_yaxis()
    texts = methods[names[0]].texts if names else 0
    note = "; black ticks: the paper's figures" if paper else ""
    fig.suptitle(f"{title or 'How each decoding method degenerates'} ({texts} texts each{note})", fontsize=SMALL + 1)
    return fig


def cutoff_sweep_view(rows: Sequence["CutoffSummary"], best: "CutoffSummary") -> Figure:
    """Samplers at equal footing (:func:`txtgen_nb.truth.cutoff_sweep`: every setting on the same steps):
    the valid probability each keeps against the chance it samples an invalid token (±1 standard error),
    one line per sampler through its settings, the best per-step top-r cut as a star. Up and to the left
    is better; the labels are the settings.

    Usage: ``cutoff_sweep_view(*truth.cutoff_sweep(trace, tok, {"top-p": [SamplingSettings(1.0, 0, 0.9)]}))``
    """
    fig = _new_figure(4.6, 8.0)
    ax = fig.subplots()
    families = list(dict.fromkeys(r.family for r in rows))
    for i, family in enumerate(families):
        line = [r for r in rows if r.family == family]
        color, marker = READABLE_COLORS[i % len(READABLE_COLORS)], "osD^v<>pXh"[i % 10]
        ax.errorbar([r.invalid_chance for r in line], [r.valid_kept for r in line],
                    xerr=[r.invalid_chance_se for r in line], yerr=[r.valid_kept_se for r in line], color=color,
                    marker=marker, markersize=5, capsize=2, label=family)
    ax.plot(best.invalid_chance, best.valid_kept, marker="*", markersize=16, color="black", linestyle="",
            label=f"{best.family} (knows the answer)")
    _sparse_labels(ax, [(r.invalid_chance, r.valid_kept, r.settings.label().split(" · ")[-1]) for r in rows],
                   gap=0.05)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("chance of sampling an invalid token  (← better)", fontsize=SMALL)
    ax.set_ylabel("valid probability kept  (better →)", fontsize=SMALL)
    ax.set_title(f"Every sampler on the same {best.steps:,} steps, judged by the grammar", fontsize=SMALL + 1)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=SMALL)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=SMALL - 1,
               frameon=False)
    return fig


def figure_to_png(fig: Figure) -> bytes:
    """PNG bytes of a figure (for ``ipywidgets.Image``). Usage: ``figure_to_png(step_view(trace, tok, 0))``"""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


EXPLORER_CSS = ("<style>.tg-is-busy .tg-plot{opacity:.55;transition:opacity .15s}"
                ".tg-live{white-space:pre-wrap;font-size:15px;line-height:1.7;padding:4px 2px}"
                ".tg-live-prompt{color:#555}.tg-cursor{color:#0072B2;animation:tg-blink 1s steps(1) infinite}"
                "@keyframes tg-blink{50%{opacity:0}}"
                ".tg-busy{color:#0072B2;font-weight:bold;font-size:14px}"
                ".tg-spinner{display:inline-block;width:.75em;height:.75em;border:2px solid #0072B2;"
                "border-right-color:transparent;border-radius:50%;animation:tg-spin .8s linear infinite;"
                "vertical-align:-1px}@keyframes tg-spin{to{transform:rotate(360deg)}}"
                ".tg-error{color:#b00020;font-weight:bold;font-size:14px}"
                ".tg-notice{color:#7a4d00;font-size:14px}"
                ".tg-model-note{color:#555;font-size:13px;margin:-2px 0 2px 4.2em;line-height:1.3}"
                ".tg-controls{max-height:calc(100vh - 140px);overflow-y:auto;overflow-x:hidden}"
                ".tg-controls>*,.tg-controls .widget-vbox>*{flex-shrink:0}</style>")
"""Explorer styling: the plot dims while the kernel works (``tg-is-busy``), text as it is generated,
busy and error lines; the controls column scrolls inside once it is taller than the screen shows
(JupyterLab's bars take about 120 px of it; its rows keep their height instead of shrinking), so a
720 px projector never needs the page scrolled to reach a control."""


def busy_html(message: str) -> str:
    """The busy line of an explorer. Usage: ``status.value = busy_html("Generating…")``"""
    return f'<span class="tg-busy"><span class="tg-spinner"></span> {html.escape(message)}</span>'


def live_html(prompt: str, text: str) -> str:
    """Text as it is being generated: the prompt in grey, the new text, a blinking cursor.

    Usage: ``text_widget.value = live_html("Once upon a time", ", there was")``
    """
    return (f'<div class="tg-live"><span class="tg-live-prompt">{html.escape(prompt)}</span>{html.escape(text)}'
            '<span class="tg-cursor">▍</span></div>')


def error_html(message: str) -> str:
    """One escaped error line. Usage: ``error.value = error_html("top_p must be between 0 and 1")``"""
    return f'<div class="tg-error">⚠ {html.escape(message)}</div>'


def notice_html(message: str) -> str:
    """One escaped notice line (not an error: the explorer did what it could). Usage:
    ``error.value = notice_html("the first 12 prompt tokens were cut")``"""
    return f'<div class="tg-notice">ⓘ {html.escape(message)}</div>'


OFFLINE_CSS = (
    # the note hides itself while the explorer after it is live ...
    ".jp-OutputArea-child:has(.tg-offline):has(+ .jp-OutputArea-child .tg-explorer) { display: none; }"
    # ... and, in a notebook reopened without its kernel, stands in for ipywidgets' error line (the output node
    # itself, holding only that text: never an image or slider inside a live explorer)
    ".jp-OutputArea-child:has(.tg-offline) + .jp-OutputArea-child > .jp-OutputArea-output.jupyter-widgets:not(:has(*)) "
    "{ display: none; }"
    ".tg-offline { padding: 10px 14px; border: 1px dashed #9aa5b1; border-radius: 6px; color: #3b4754; "
    "background: #f6f8fa; font-size: 15px; }"
)


def offline_note_html(name: str = "explorer") -> str:
    """What a saved notebook shows in place of an explorer once its kernel is gone: shown just
    before the explorer, hidden by CSS while the explorer is live.

    Usage: ``display(HTML(offline_note_html("SamplingExplorer")))``"""
    return (f"<style>{OFFLINE_CSS}</style><div class=\"tg-offline\">▶ This {html.escape(name)} needs a running "
            "kernel: run this cell (Shift+Enter) to start it.</div>")


def branch_html(step: int, piece: str, sampled: str, columns: Sequence[tuple[str, str]] = ()) -> str:
    """The header of a branch (``piece`` instead of ``sampled`` at ``step``) and the texts side by side."""
    header = (f"<div class=\"tg-summary\"><b>Branch at step {step}:</b> <code>{html.escape(piece)}</code> instead of "
              f"<code>{html.escape(sampled)}</code>{'' if columns else ': the text ends here.'}</div>")
    return header + (columns_html(columns) if columns else "")


def columns_html(columns: Sequence[tuple[str, str]]) -> str:
    """HTML pieces side by side, each under its escaped title. Usage: ``columns_html([("a", html_a)])``"""
    cells = "".join(f'<div style="flex:1 1 0;min-width:12em;padding:0 8px;border-left:3px solid #ddd">'
                    f'<div style="font:bold 14px sans-serif;margin:2px 0">{html.escape(title)}</div>{body}</div>'
                    for title, body in columns)
    return f'<div style="display:flex;gap:6px;align-items:flex-start">{cells}</div>'
