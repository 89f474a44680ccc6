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
    timeline_view(result.trace)                           # every step: chosen p, entropy, tokens kept
    heatmap_view(result.trace, tok)                       # steps × top candidates
    colored_text(result.trace, tok).save("story.html")    # tokens coloured by probability
    temperature_view(result.trace.logits[0, 0], tok)      # one distribution at several temperatures
    sweep_view(metrics.sweep(model, params, tok, "", temperatures=[0.5, 1.0]))  # quality vs diversity
"""

from __future__ import annotations

import dataclasses
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import jax
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tokenizers import Tokenizer

from txtgen_nb import sampling
from txtgen_nb.generation import SamplingSettings, Trace
from txtgen_nb.tokenizer import decode, show_token

if TYPE_CHECKING:
    from txtgen_nb.metrics import SweepRow

# One colour-blind-safe scheme (Okabe–Ito) for every view; cividis for continuous values.
BEFORE = "#56B4E9"  # sky blue: probability before filtering (after temperature)
AFTER = "#E69F00"  # orange: renormalised probability after filtering
CHOSEN = "#D55E00"  # vermillion: the sampled token
CURVE = "#009E73"  # bluish green: cumulative probability (top-p)
CUTOFF = "#CC79A7"  # reddish purple: thresholds
REMOVED = "#BBBBBB"
ROW_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
CMAP = "cividis"
WIDTH = 10.0


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


def _describe(s: SamplingSettings) -> str:
    parts = [f"T={s.temperature:g}" + (" (greedy)" if s.temperature == 0 else "")]
    parts.append(f"top-k={s.top_k}" if s.top_k > 0 else "top-k off")
    parts.append(f"top-p={s.top_p:g}" if s.top_p < 1 else "top-p off")
    if s.min_p > 0:
        parts.append(f"min-p={s.min_p:g}")
    return ", ".join(parts)


def _tail(text: str, chars: int = 40) -> str:
    text = text.replace("\n", "↵ ")
    return text if len(text) <= chars else "…" + text[-(chars - 1):]


def distribution_data(
    logits: np.ndarray,
    tokenizer: Tokenizer,
    settings: SamplingSettings,
    *,
    chosen: int | None = None,
    context: str = "",
    step: int | None = None,
    top_n: int = 20,
) -> StepData:
    """The numbers behind :func:`distribution_view` for one vector of raw logits ``[V]``.

    Usage: ``distribution_data(trace.logits[0, 3], tok, SamplingSettings(0.8, 50, 0.9))``
    """
    logits = np.asarray(logits, np.float32)
    stages = settings.stages(logits)
    order = np.argsort(-logits, kind="stable")
    ids = order[: min(top_n, logits.size)]
    if chosen is not None and chosen not in ids:
        ids = np.concatenate([ids[:-1], [chosen]])
    final = np.asarray(stages.min_p)
    after_k = _probs(np.asarray(stages.top_k))
    cumulative = np.cumsum(after_k[ids])
    return StepData(
        ids=ids, labels=[show_token(tokenizer, i) for i in ids], prob_raw=_probs(stages.raw)[ids],
        prob_before=_probs(np.asarray(stages.temperature))[ids], prob_after=_probs(final)[ids],
        kept=np.isfinite(final[ids]), cumulative=cumulative, chosen=chosen, num_kept=int(np.isfinite(final).sum()),
        vocab_size=logits.size, entropy_before=float(sampling.entropy(stages.temperature)),
        entropy_after=float(sampling.entropy(final)), settings=settings, context=context, step=step,
    )


def step_data(trace: Trace, tokenizer: Tokenizer, step: int, row: int = 0,
              settings: SamplingSettings | None = None, top_n: int = 20) -> StepData:
    """The numbers behind :func:`step_view`; ``settings`` re-filters the stored logits.

    Usage: ``step_data(trace, tok, step=2, settings=SamplingSettings(temperature=1.2, top_p=0.9))``
    """
    if not 0 <= step < int(trace.lengths[row]):
        raise ValueError(f"step must be between 0 and {int(trace.lengths[row]) - 1} for row {row}, got {step}")
    context = decode(tokenizer, trace.context_ids(row, step))
    return distribution_data(trace.logits[row, step], tokenizer, settings or trace.settings[row],
                             chosen=int(trace.token_ids[row, step]), context=context, step=step, top_n=top_n)


def _new_figure(height: float) -> Figure:
    return Figure(figsize=(WIDTH, height), dpi=100, layout="constrained")


def _draw_distribution(fig: Figure, data: StepData, title: str) -> Figure:
    ax = fig.add_subplot()
    x = np.arange(len(data.ids))
    width = 0.4
    ax.bar(x - width / 2, data.prob_before, width, color=np.where(data.kept, BEFORE, REMOVED),
           hatch=None, label="before filtering (after temperature)")
    for xi, kept, p in zip(x, data.kept, data.prob_before):
        if not kept:
            ax.bar(xi - width / 2, p, width, color="none", edgecolor="#777777", hatch="///", linewidth=0)
    ax.bar(x + width / 2, data.prob_after, width, color=AFTER, label="after filtering (renormalised)")
    if data.chosen is not None:
        where = int(np.flatnonzero(data.ids == data.chosen)[0])
        top = max(data.prob_before[where], data.prob_after[where])
        ax.annotate("sampled", (where, top), xytext=(0, 14), textcoords="offset points", ha="center",
                    color=CHOSEN, fontweight="bold", arrowprops=dict(arrowstyle="->", color=CHOSEN))
    ax.set_xticks(x, [("✗ " if not k else "") + label for label, k in zip(data.labels, data.kept)],
                  rotation=55, ha="right", fontsize=9)
    for tick, kept, token in zip(ax.get_xticklabels(), data.kept, data.ids):
        tick.set_color(CHOSEN if token == data.chosen else ("#000000" if kept else "#888888"))
        if token == data.chosen:
            tick.set_fontweight("bold")
    ax.set_ylabel("probability")
    ax.set_xlabel(f"top {len(data.ids)} candidates by raw logit (✗ = removed by the filters)")
    ax.set_ylim(0, max(1e-3, float(max(data.prob_before.max(), data.prob_after.max()))) * 1.25)
    s = data.settings
    if 0 < s.top_k < len(data.ids):
        ax.axvline(s.top_k - 0.5, color=CUTOFF, linestyle=":", linewidth=2, label=f"top-k cut-off (k={s.top_k})")
    curve = ax.twinx()
    curve.plot(x, data.cumulative, color=CURVE, marker=".", linewidth=1.5, label="cumulative p after top-k")
    if s.top_p < 1:
        curve.axhline(s.top_p, color=CURVE, linestyle="--", linewidth=1, label=f"top-p threshold ({s.top_p:g})")
    curve.set_ylim(0, 1.05)
    curve.set_ylabel("cumulative probability", color=CURVE)
    handles = ax.get_legend_handles_labels()
    extra = curve.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="center right", fontsize=8, framealpha=0.9)
    ax.set_title(title, fontsize=10, loc="left")
    return fig


def _title(data: StepData) -> str:
    where = f"step {data.step}" if data.step is not None else "next token"
    context = f" after “{_tail(data.context)}”" if data.context else ""
    return (f"{where}{context}\n{_describe(data.settings)}: kept {data.num_kept:,} of {data.vocab_size:,} tokens; "
            f"entropy {data.entropy_before:.2f} → {data.entropy_after:.2f} nats")


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
    return _draw_distribution(_new_figure(4.6), data, title or _title(data))


def step_view(trace: Trace, tokenizer: Tokenizer, step: int, row: int = 0,
              settings: SamplingSettings | None = None, top_n: int = 20) -> Figure:
    """One generation step: top candidates before vs after filtering, the sampled token marked.

    Usage: ``step_view(trace, tok, step=3)``
    """
    data = step_data(trace, tokenizer, step, row, settings, top_n)
    return _draw_distribution(_new_figure(4.6), data, _title(data))


def pipeline_view(trace: Trace, tokenizer: Tokenizer, step: int, row: int = 0,
                  settings: SamplingSettings | None = None, top_n: int = 15) -> Figure:
    """The same step through each stage: raw (T=1) → temperature → top-k → top-p (→ min-p).

    Usage: ``pipeline_view(trace, tok, step=0)``
    """
    data = step_data(trace, tokenizer, step, row, settings, top_n)
    s = data.settings
    stages = s.stages(trace.logits[row, step])
    panels = [("raw (T=1)", stages.raw), (f"temperature {s.temperature:g}", stages.temperature),
              (f"top-k {s.top_k}" if s.top_k else "top-k off", stages.top_k),
              (f"top-p {s.top_p:g}" if s.top_p < 1 else "top-p off", stages.top_p)]
    if s.min_p > 0:
        panels.append((f"min-p {s.min_p:g}", stages.min_p))
    fig = _new_figure(0.28 * len(data.ids) + 1.6)
    axes = fig.subplots(1, len(panels), sharey=True)
    y = np.arange(len(data.ids))
    for ax, (name, logits) in zip(axes, panels):
        logits = np.asarray(logits)
        probs = _probs(logits)[data.ids]
        kept = np.isfinite(logits[data.ids])
        colors = [CHOSEN if t == data.chosen else (AFTER if k else REMOVED) for t, k in zip(data.ids, kept)]
        ax.barh(y, probs, color=colors)
        ax.set_title(f"{name}\n{int(np.isfinite(logits).sum()):,} kept", fontsize=9)
        ax.set_xlabel("probability", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.set_xlim(0, max(1e-3, float(probs.max())) * 1.15)
    axes[0].set_yticks(y, data.labels)
    axes[0].invert_yaxis()
    fig.suptitle(f"{_title(data)}  (sampled token in vermillion, removed in grey)", fontsize=9)
    return fig


def _row_settings(trace: Trace, settings: SamplingSettings | None) -> SamplingSettings:
    stacked = SamplingSettings.stack([settings or s for s in trace.settings])
    return jax.tree.map(lambda a: a[:, None], stacked)  # [B, 1]: one row's settings for all its steps


def timeline_data(trace: Trace, settings: SamplingSettings | None = None) -> TimelineData:
    """Per-step summaries for every row, computed with ``filter_stages`` (settings: the rows' own
    or one override for all rows).

    Usage: ``timeline_data(trace).num_kept[0]``
    """
    stages = sampling.filter_stages(trace.logits, _row_settings(trace, settings))
    final = np.asarray(stages.final)
    probs = _probs(final)
    chosen = np.take_along_axis(probs, trace.token_ids[..., None].astype(np.int64), axis=-1)[..., 0]
    valid = np.arange(trace.logits.shape[1])[None] < trace.lengths[:, None]
    nan = lambda a: np.where(valid, a, np.nan)  # noqa: E731
    return TimelineData(chosen_prob=nan(chosen), entropy_before=nan(np.asarray(sampling.entropy(stages.temperature))),
                        entropy_after=nan(np.asarray(sampling.entropy(final))),
                        num_kept=nan(np.isfinite(final).sum(-1).astype(float)), lengths=np.asarray(trace.lengths))


def timeline_view(trace: Trace, settings: SamplingSettings | None = None, rows: Sequence[int] | None = None,
                  labels: Sequence[str] | None = None) -> Figure:
    """Across all steps: the chosen token's probability, entropy before/after filtering and the
    number of tokens kept (log scale); several rows (seeds or settings) overlaid.

    Usage: ``timeline_view(trace, labels=["T=0.5", "T=1.0"])``
    """
    data = timeline_data(trace, settings)
    rows = list(range(trace.num_rows)) if rows is None else list(rows)
    if labels is None:
        labels = [f"seed {trace.seeds[r]}: {_describe(settings or trace.settings[r])}" for r in rows]
    fig = _new_figure(6.0)
    ax_p, ax_h, ax_k = fig.subplots(3, 1, sharex=True)
    steps = np.arange(trace.logits.shape[1])
    for i, (row, label) in enumerate(zip(rows, labels)):
        color = ROW_COLORS[i % len(ROW_COLORS)]
        ax_p.plot(steps, data.chosen_prob[row], color=color, marker=".", markersize=3, linewidth=1, label=label)
        ax_h.plot(steps, data.entropy_before[row], color=color, linestyle=":", linewidth=1)
        ax_h.plot(steps, data.entropy_after[row], color=color, linewidth=1.2)
        ax_k.plot(steps, data.num_kept[row], color=color, drawstyle="steps-mid", linewidth=1.2)
    ax_p.set_ylabel("p(chosen)\nafter filtering")
    ax_p.set_ylim(0, 1.05)
    ax_h.set_ylabel("entropy (nats)\n⋯ before  — after")
    ax_k.set_ylabel("tokens kept")
    ax_k.set_yscale("log")
    ax_k.set_xlabel("generation step")
    ax_k.xaxis.set_major_locator(MaxNLocator(nbins=20, integer=True))
    ax_p.legend(fontsize=8, loc="lower left", ncol=min(2, len(rows)))
    for ax in (ax_p, ax_h, ax_k):
        ax.grid(alpha=0.3)
    fig.suptitle("Sampling timeline: the nucleus (top-p) grows and shrinks with the model's confidence; "
                 "top-k stays fixed", fontsize=10)
    return fig


def heatmap_view(trace: Trace, tokenizer: Tokenizer, row: int = 0, top_n: int = 10, max_steps: int = 40,
                 page: int = 0, settings: SamplingSettings | None = None) -> Figure:
    """Steps × top candidates coloured by probability after filtering (removed: grey), token labels
    in the cells, the sampled token outlined; long generations paginate by ``max_steps``.

    Usage: ``heatmap_view(trace, tok, page=1)``
    """
    length = int(trace.lengths[row])
    pages = max(1, -(-length // max_steps))
    if not 0 <= page < pages:
        raise ValueError(f"page must be between 0 and {pages - 1}, got {page}")
    steps = range(page * max_steps, min(length, (page + 1) * max_steps))
    s = settings or trace.settings[row]
    logits = trace.logits[row, list(steps)]
    final = np.asarray(s.stages(logits).min_p)
    probs = _probs(final)
    order = np.argsort(-logits, axis=-1, kind="stable")[:, :top_n]
    values = np.take_along_axis(probs, order, axis=-1)
    kept = np.isfinite(np.take_along_axis(final, order, axis=-1))
    fig = _new_figure(0.32 * len(steps) + 1.5)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad=REMOVED)
    image = ax.imshow(np.where(kept, values, np.nan), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i, step in enumerate(steps):
        for j, token in enumerate(order[i]):
            text = f"{show_token(tokenizer, token, 9)} {values[i, j]:.2f}" if kept[i, j] else show_token(tokenizer, token, 9)
            light = kept[i, j] and values[i, j] < 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color="white" if light else "black")
            if token == trace.token_ids[row, step]:
                ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=CHOSEN,
                                                          linewidth=2))
    ax.set_yticks(range(len(steps)), [str(step) for step in steps], fontsize=7)
    ax.set_xticks(range(top_n), [f"#{j + 1}" for j in range(top_n)], fontsize=8)
    ax.set_xlabel("candidate rank by raw logit (grey = removed; outlined = sampled)")
    ax.set_ylabel("step")
    fig.colorbar(image, ax=ax, label="probability after filtering", shrink=0.8)
    ax.set_title(f"{_describe(s)} — steps {steps.start}–{steps.stop - 1} (page {page + 1} of {pages})",
                 fontsize=10, loc="left")
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


_CSS = """<style>
.tg-text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:14px;line-height:2.0;white-space:pre-wrap;
max-width:60em}
.tg-prompt{color:#444;font-weight:bold}
.tg-tok{position:relative;border-radius:3px;padding:1px 0;cursor:help}
.tg-tok .tg-tip{display:none;position:absolute;left:0;top:1.9em;z-index:10;background:#fff;color:#000;
border:1px solid #999;border-radius:4px;padding:4px 6px;font-size:12px;line-height:1.4;white-space:pre;
box-shadow:0 2px 6px rgba(0,0,0,.25)}
.tg-tok:hover .tg-tip{display:block}
.tg-legend{font-family:sans-serif;font-size:12px;margin:6px 0}
.tg-bar{display:inline-block;width:160px;height:10px;vertical-align:middle;margin:0 6px}
</style>"""


def _hex(rgba) -> str:
    return "#%02x%02x%02x" % tuple(int(round(255 * c)) for c in rgba[:3])


def colored_text(trace: Trace, tokenizer: Tokenizer, row: int = 0, color_by: str = "probability",
                 settings: SamplingSettings | None = None, top_alternatives: int = 5) -> ColoredText:
    """The generated tokens coloured by probability (after filtering), rank (by raw logit) or
    entropy (after filtering); hovering a token lists the top alternatives. All text is escaped.

    Usage: ``colored_text(trace, tok, color_by="entropy")``
    """
    if color_by not in ("probability", "rank", "entropy"):
        raise ValueError(f"color_by must be 'probability', 'rank' or 'entropy', got {color_by!r}")
    length = int(trace.lengths[row])
    s = settings or trace.settings[row]
    logits = trace.logits[row, :length]
    final = np.asarray(s.stages(logits).min_p) if length else np.zeros((0, 1))
    probs = _probs(final) if length else final
    tokens = trace.token_ids[row, :length].astype(np.int64)
    chosen_p = probs[np.arange(length), tokens] if length else np.zeros(0)
    ranks = (logits > logits[np.arange(length), tokens][:, None]).sum(-1) + 1 if length else np.zeros(0)
    entropies = np.asarray(sampling.entropy(final)) if length else np.zeros(0)
    if color_by == "probability":
        values, norm, legend = chosen_p, chosen_p, ("p = 0", "p = 1")
    elif color_by == "rank":
        values = ranks
        norm = 1 - np.log(ranks) / np.log(max(2, trace.logits.shape[-1]))
        legend = (f"rank {trace.logits.shape[-1]}", "rank 1")
    else:
        values = entropies
        top = max(1.0, float(entropies.max(initial=0)))
        norm, legend = 1 - entropies / top, (f"entropy {top:.1f}", "entropy 0")
    cmap = matplotlib.colormaps[CMAP]
    spans = []
    for i, token in enumerate(tokens):
        text = tokenizer.decode([int(token)], skip_special_tokens=False)
        if "\ufffd" in text or token == trace.eos_id:
            text = show_token(tokenizer, token)
        alternatives = np.argsort(-probs[i], kind="stable")[:top_alternatives]
        tip = "\n".join(f"{show_token(tokenizer, a):<12} {probs[i, a]:.3f}" for a in alternatives if probs[i, a] > 0)
        header = (f"step {i}: p={chosen_p[i]:.3f}, rank {int(ranks[i])}, entropy {entropies[i]:.2f}"
                  f"\nalternatives after filtering:\n")
        color = cmap(float(norm[i]))
        ink = "#000" if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 0.55 else "#fff"
        spans.append(f'<span class="tg-tok" style="background:{_hex(color)};color:{ink}" '
                     f'title="{html.escape(header + tip)}" data-value="{float(values[i]):.4g}">'
                     f'{html.escape(text)}<span class="tg-tip">{html.escape(header + tip)}</span></span>')
    prompt = decode(tokenizer, trace.prompt_ids[row])
    gradient = ", ".join(_hex(cmap(x)) for x in np.linspace(0, 1, 8))
    legend_html = (f'<div class="tg-legend">coloured by {html.escape(color_by)} ({html.escape(_describe(s))}): '
                   f'{html.escape(legend[0])}<span class="tg-bar" style="background:linear-gradient(to right, '
                   f'{gradient})"></span>{html.escape(legend[1])}</div>')
    body = f'<div class="tg-text"><span class="tg-prompt">{html.escape(prompt)}</span>{"".join(spans)}</div>'
    return ColoredText(_CSS + legend_html + body)


def temperature_view(logits: np.ndarray, tokenizer: Tokenizer, temperatures: Sequence[float] = (0.3, 0.8, 1.5),
                     top_n: int = 15) -> Figure:
    """How temperature reshapes one next-token distribution: the top candidates' probabilities at a
    few temperatures (left), and entropy and the top token's probability over a range (right).

    Usage: ``temperature_view(trace.logits[0, 0], tok, temperatures=[0.5, 1.0, 2.0])``
    """
    logits = np.asarray(logits, np.float32)
    ids = np.argsort(-logits, kind="stable")[:top_n]
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
    ax_bars.legend(fontsize=8)
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
    """Quality against diversity for a :func:`txtgen_nb.metrics.sweep`: grammatical share, distinct-2
    and repetition against temperature, one line per top-p, and the quality/diversity trade-off.

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
        ax_q.plot(t, [r.grammatical for r in line], **style)
        ax_d.plot(t, [r.distinct_2 for r in line], **style)
        ax_r.plot(t, [r.repetition_3 for r in line], **style)
        ax_trade.plot([r.distinct_2 for r in line], [r.grammatical for r in line], **style)
        for r in line:
            ax_trade.annotate(f"{r.temperature:g}", (r.distinct_2, r.grammatical), fontsize=7,
                              xytext=(3, 3), textcoords="offset points")
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
    ax_q.legend(fontsize=8)
    return fig


def figure_to_png(fig: Figure) -> bytes:
    """PNG bytes of a figure (for ``ipywidgets.Image``). Usage: ``figure_to_png(step_view(trace, tok, 0))``"""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()
