"""Visualisation: the data behind every view equals the sampler's own filtering; figures render."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from txtgen_nb import SamplingSettings, generate, sampling, viz
from txtgen_nb.generation import Trace


@pytest.fixture(scope="module")
def trace(tiny_model, tiny_tok) -> Trace:
    model, params, _ = tiny_model
    result = generate(model, params, tiny_tok, ["Once upon a time", "Hello"], temperature=[0.9, 1.3], top_k=[20, 0],
                      top_p=[1.0, 0.8], seed=[0, 1], max_new_tokens=12, trace=True)
    return result.trace


def long_trace(steps: int = 180, vocab: int = 300, rows: int = 2) -> Trace:
    """A synthetic trace with hundreds of steps (no model needed)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(rows, steps, vocab)).astype(np.float32) * 3
    settings = [SamplingSettings(0.8, 50, 0.9), SamplingSettings(1.0, 0, 0.95, 0.02)]
    return Trace.from_logits(prompt_ids=[[2, 40]] * rows, token_ids=logits.argmax(-1).astype(np.int32),
                             lengths=np.array([steps - 30 * (r % 2) for r in range(rows)], np.int32), logits=logits,
                             settings=[settings[r % 2] for r in range(rows)], seeds=list(range(rows)), eos_id=3)


def render(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def test_step_data_equals_filter_logits(trace, tiny_tok):
    for settings in (None, SamplingSettings(0.5, 5, 0.7), SamplingSettings(0.0, 0, 1.0), SamplingSettings(2.0, 0, 0.3, 0.1)):
        data = viz.step_data(trace, tiny_tok, step=4, row=1, settings=settings, top_n=30)
        s = settings or trace.settings[1]
        final = np.asarray(sampling.filter_logits(trace.logits[1, 4], temperature=s.temperature, top_k=s.top_k,
                                                  top_p=s.top_p, min_p=s.min_p))
        np.testing.assert_allclose(data.prob_after, np.asarray(sampling.probabilities(final))[data.ids], atol=1e-7)
        np.testing.assert_array_equal(data.kept, np.isfinite(final[data.ids]))
        assert data.num_kept == np.isfinite(final).sum()
        before = np.asarray(sampling.probabilities(sampling.apply_temperature(trace.logits[1, 4], s.temperature)))
        np.testing.assert_allclose(data.prob_before, before[data.ids], atol=1e-7)
        assert data.chosen == trace.token_ids[1, 4] and data.chosen in data.ids


def test_refiltering_changes_the_data_without_a_model(trace, tiny_tok):
    wide = viz.step_data(trace, tiny_tok, 2, settings=SamplingSettings(1.5, 0, 1.0))
    narrow = viz.step_data(trace, tiny_tok, 2, settings=SamplingSettings(1.5, 3, 1.0))
    assert wide.num_kept == 300 and narrow.num_kept == 3
    assert narrow.entropy_after < wide.entropy_after


def test_pipeline_and_heatmap_use_the_same_filters(trace, tiny_tok):
    fig = viz.pipeline_view(trace, tiny_tok, 3, settings=SamplingSettings(0.8, 10, 0.9, 0.05))
    titles = [ax.get_title() for ax in fig.axes]
    stages = sampling.filter_stages(trace.logits[0, 3], temperature=0.8, top_k=10, top_p=0.9, min_p=0.05)
    for title, name in zip(titles, ["raw", "temperature", "top_k", "top_p", "min_p"], strict=True):
        assert f"{int(np.isfinite(np.asarray(getattr(stages, name))).sum()):,} kept" in title


def test_pipeline_has_one_panel_per_rule_that_is_on_titled_by_its_record(trace, tiny_tok):
    s = SamplingSettings(1.3, 0, repetition_penalty=1.4, typical_p=0.6, xtc_probability=1.0, order="llama.cpp")
    fig = viz.pipeline_view(trace, tiny_tok, 2, settings=s)
    titles = [ax.get_title() for ax in fig.axes]
    chain = [n for n in sampling.CHAINS["llama.cpp"] if sampling.RULE[n].is_on(s)]
    assert chain == ["penalties", "typical", "xtc", "temperature"]
    assert len(titles) == 1 + len(chain) and titles[0].startswith("raw")
    for title, name in zip(titles[1:], chain):
        assert title.startswith(sampling.RULE[name].panel_title(s, np.zeros(1), np.zeros(1)).split(":")[0])


def test_timeline_data_equals_per_step_filtering(trace):
    data = viz.timeline_data(trace)
    for row in range(trace.num_rows):
        s = trace.settings[row]
        for step in range(int(trace.lengths[row])):
            final = np.asarray(sampling.filter_logits(trace.logits[row, step], temperature=s.temperature,
                                                      top_k=s.top_k, top_p=s.top_p, min_p=s.min_p))
            probs = np.asarray(sampling.probabilities(final))
            assert data.num_kept[row, step] == np.isfinite(final).sum()
            assert data.chosen_prob[row, step] == pytest.approx(probs[trace.token_ids[row, step]], abs=1e-6)
            assert data.entropy_after[row, step] == pytest.approx(float(sampling.entropy(final)), abs=1e-5)
        assert np.isnan(data.chosen_prob[row, int(trace.lengths[row]):]).all()


def test_every_view_renders(trace, tiny_tok):
    figures = [viz.step_view(trace, tiny_tok, 0), viz.pipeline_view(trace, tiny_tok, 1, row=1),
               viz.timeline_view(trace), viz.heatmap_view(trace, tiny_tok),
               viz.distribution_view(trace.logits[0, 0], tiny_tok, SamplingSettings(0.7, 5, 0.9))]
    for fig in figures:
        assert isinstance(fig, Figure)
        assert render(fig).startswith(b"\x89PNG")
    assert viz.figure_to_png(figures[0]).startswith(b"\x89PNG")


def test_long_generations_paginate_and_overlay(tiny_tok):
    trace = long_trace()
    assert render(viz.timeline_view(trace, labels=["a", "b"]))
    assert len(viz.timeline_view(trace).axes[0].get_lines()) == 2
    pages = [viz.heatmap_view(trace, tiny_tok, row=0, max_steps=40, page=p) for p in range(5)]
    assert "page 5 of 5" in pages[-1].axes[0].get_title(loc="left")
    assert len(pages[0].axes[0].get_yticklabels()) == 40
    with pytest.raises(ValueError, match="page must be between 0 and 4"):
        viz.heatmap_view(trace, tiny_tok, max_steps=40, page=5)
    with pytest.raises(ValueError, match="step must be between 0 and 149"):
        viz.step_data(trace, tiny_tok, step=150, row=1)


@pytest.mark.parametrize("color_by", ["probability", "rank", "entropy"])
def test_colored_text_escapes_and_saves(tiny_model, tiny_tok, tmp_path, color_by):
    model, params, _ = tiny_model
    evil = "<script>alert(1)</script>"
    trace = generate(model, params, tiny_tok, evil, max_new_tokens=6, trace=True).trace
    text = viz.colored_text(trace, tiny_tok, color_by=color_by)
    assert "<script>alert" not in text.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in text.html
    assert text.html.count('class="tg-tok"') == int(trace.lengths[0])
    assert text._repr_html_() == text.html
    path = text.save(tmp_path / "story.html")
    saved = path.read_text(encoding="utf-8")
    assert saved.startswith("<!DOCTYPE html>") and "&lt;script&gt;" in saved and "<script>alert" not in saved
    with pytest.raises(ValueError, match="color_by"):
        viz.colored_text(trace, tiny_tok, color_by="mood")


def test_temperature_view_uses_apply_temperature(trace, tiny_tok):
    logits = trace.logits[0, 0]
    fig = viz.temperature_view(logits, tiny_tok, temperatures=[0.5, 2.0], top_n=8)
    bars = fig.axes[0].containers
    ids = np.argsort(-logits, kind="stable")[:8]
    for container, t in zip(bars, [0.5, 2.0]):
        want = np.asarray(sampling.probabilities(sampling.apply_temperature(logits, t)))[ids]
        np.testing.assert_allclose([bar.get_height() for bar in container], want, rtol=1e-6)
    assert render(fig).startswith(b"\x89PNG")


def test_entropy_shown_is_never_negative_zero(tiny_tok):
    peaked = np.full(300, -50.0, np.float32)
    peaked[7] = 50.0
    data = viz.distribution_data(peaked, tiny_tok, SamplingSettings(1.0, 0, 0.9))
    assert data.num_kept == 1 and f"{data.entropy_after:.2f}" == "0.00"


def test_token_labels_are_readable(tiny_tok):
    from txtgen_nb.tokenizer import show_token

    labels = {show_token(tiny_tok, i) for i in range(tiny_tok.get_vocab_size())}
    assert {"<0x00>", "<0x1D>", "↵", "␣", "<bos>"} <= labels
    assert all(ch.isprintable() for label in labels for ch in label)
    assert all(len(label) <= 12 for label in labels)


def test_token_html_marks_steps_changes_and_alternatives(trace, tiny_tok):
    data = viz.text_data(trace, tiny_tok)
    n = len(data.pieces)
    changed = [i % 2 == 0 for i in range(n)]
    page = viz.token_html(data, selected=1, changed=changed, summary="2 of 6 <changed>")
    assert page.count('tabindex="0"') == n  # a tap focuses a token: its alternatives show on touch screens
    assert [int(x) for x in re.findall(r'data-step="(\d+)"', page)] == list(range(n))
    assert page.count("tg-tok tg-current") == 1 and page.count("tg-changed\"") == sum(changed)
    assert "2 of 6 &lt;changed&gt;" in page
    assert page.count('class="tg-tip"') == n and "tg-side" in page  # alternatives in a panel inside the view
    tip = data.tips[0]
    assert f"step 0: p={data.values[0]:.3f}" in tip and len(tip.splitlines()) == 3 + min(5, tiny_tok.get_vocab_size())


def test_change_summary_counts_or_explains():
    assert viz.change_summary([1, 2, 3], [1, 5, 3], "seed 0 → 1") == "1 of 3 tokens changed after seed 0 → 1."
    assert viz.change_summary([1, 2, 3], [1, 2]) == "1 of 3 tokens changed."
    assert "same seed" in viz.change_summary([1, 2], [1, 2], "temperature 0.8 → 0.9")
    greedy = viz.change_summary([1, 2], [1, 2], "seed 0 → 1", greedy=True)
    assert "greedy" in greedy and "same seed" not in greedy
    assert [SamplingSettings(t, k, p).is_greedy() for t, k, p in [(0, 50, 1), (1, 1, 1), (1, 0, 0), (1, 50, 0.9)]] == [
        True, True, True, False]
    np.testing.assert_array_equal(viz.changed_tokens([1, 2], [1, 3, 4]), [False, True, True])


def test_timeline_plots_mirostat_mu_surprise_and_tau(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    rows = [SamplingSettings(1.0, 0), SamplingSettings(1.5, 0, mirostat_tau=3.0, mirostat_eta=0.5)]
    trace = generate(model, params, tiny_tok, "Once upon", settings=rows, seed=[0, 0], max_new_tokens=20,
                     trace=True).trace
    assert len(viz.timeline_view(trace, rows=[0]).axes) == 3  # no Mirostat row: no panel
    fig = viz.timeline_view(trace)
    assert len(fig.axes) == 4 and render(fig)
    replay, n = trace.mirostat(1), int(trace.lengths[1])
    mu, surprise, mean, tau = fig.axes[3].get_lines()
    np.testing.assert_allclose(mu.get_ydata(), replay.mu)
    np.testing.assert_allclose(surprise.get_ydata(), replay.surprise)
    assert mean.get_ydata()[-1] == pytest.approx(replay.surprise.mean(), abs=1e-5)
    assert list(tau.get_ydata()) == [3.0, 3.0] and tau.get_linestyle() == "--"
    legend = [t.get_text() for t in fig.axes[3].get_legend().get_texts()]
    assert [text[0] for text in legend] == ["μ", "s", "m", "τ"]
    assert fig.axes[3].get_ylabel() and fig.axes[3].get_xlabel() == "generation step"
    # the other panels filter the Mirostat row with the replayed μ, not with its start 2τ
    data = viz.timeline_data(trace)
    kept = np.isfinite(np.asarray(trace.row_stages(1).final)).sum(-1)
    assert data.num_kept[1, :n].tolist() == kept.tolist()
    at_start = np.isfinite(np.asarray(sampling.filter_logits(trace.logits[1, :n], rows[1]))).sum(-1)
    assert (kept != at_start).any()


def test_top_order_is_the_stable_argsort_prefix():
    """The partial sort the views use at a 49k vocabulary orders like a full stable argsort, ties included."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        shape = (3, 4096)
        logits = (rng.integers(0, 4, size=shape) if trial % 2 else rng.normal(size=shape)).astype(np.float32)
        n = int(rng.integers(1, 60))
        np.testing.assert_array_equal(viz.top_order(logits, n), np.argsort(-logits, axis=-1, kind="stable")[:, :n])
    assert viz.top_order(np.array([1.0, 3.0, 2.0]), 5).tolist() == [1, 2, 0]


@pytest.mark.parametrize("where", [0, 7, 16, 19])
def test_sampled_marker_sits_on_the_sampled_bar(where):
    """The "sampled" marker's arrow points at the sampled bar (above it: centred on the pair of bars;
    beside a tall bar: its arrow next to the bar's edge), wherever the bar is."""
    rng = np.random.default_rng(where)
    logits = np.sort(rng.normal(size=64).astype(np.float32) * 2)[::-1].copy()
    for settings in (SamplingSettings(1.0, 0), SamplingSettings(0.05, 0)):  # low bars, then one tall bar
        data = viz.distribution_data(logits, _Vocab(), settings, chosen=where)
        plot = viz.StepPlot(20)
        figure = plot.update(data)
        renderer = FigureCanvasAgg(figure).get_renderer()
        box = plot.sampled.get_window_extent(renderer)
        left, right = (plot.ax.transData.transform((x, 0))[0] for x in (where - 0.4, where + 0.4))
        text = plot.sampled.get_text()
        if "▼" in text:  # the arrow over the bar: centred under the word, or at the word's end
            arrow = {"sampled\n▼": (box.x0 + box.x1) / 2, "sampled ▼": box.x1 - 4, "▼ sampled": box.x0 + 4}[text]
            assert left <= arrow <= right, (where, text, box, left, right)
            assert box.x1 <= plot.ax.bbox.x1 + 2 and box.x0 >= plot.ax.bbox.x0 - 2, (where, text)  # inside the plot
        else:
            arrow = box.x1 if text.endswith("▶") else box.x0
            assert left - 20 <= arrow <= right + 20, (where, text, box, left, right)


class _Vocab:
    """A stand-in tokenizer whose tokens are named by their ids."""

    def id_to_token(self, token_id: int) -> str:
        return f"t{token_id}"

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(f"t{i}" for i in ids)


def _peak_rss_growth_mb(fn) -> float:
    """How far the process's peak RSS rises above its current RSS while ``fn`` runs (Linux: writing
    5 to /proc/self/clear_refs resets the peak)."""
    def status(field: str) -> float:
        line = next(x for x in open("/proc/self/status") if x.startswith(field))
        return int(line.split()[1]) / 1024

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS:")
    fn()
    return status("VmHWM:") - base


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc peak-RSS reset")
def test_timeline_data_memory_stays_small_at_a_50k_vocabulary():
    trace = long_trace(steps=100, vocab=50_000, rows=4)  # 80 MB of raw logits; all stages at once: 1.1 GB
    viz.timeline_data(trace)  # compiles the block's program once
    # measured 0-2 MB; 20-70 MB while each block's 14 stages (28 MB) lived on into the next block;
    # a timeline holding every stage would add 1.1 GB
    growth = _peak_rss_growth_mb(lambda: viz.timeline_data(trace))
    assert growth < 50, f"timeline_data raised peak RSS by {growth:.0f} MB"


def test_comparison_view_plots_each_setting_against_temperature_alone():
    from txtgen_nb import metrics

    def row(t, d2, g, **fields):
        base = metrics.summarise(["She ran."], ["eos"], SamplingSettings(t, **{"top_k": 0, **fields}))
        return dataclasses.replace(base, distinct_2=d2, grammatical=g, grammatical_se=0.02)

    alone = [row(0.5, 0.3, 1.0), row(1.0, 0.4, 0.8), row(2.0, 0.8, 0.1)]
    families = {"min-p 0.1": [row(1.0, 0.35, 0.95, min_p=0.1), row(2.0, 0.9, 0.05, min_p=0.1)],
                "top-k 1": [row(1.0, 0.2, 1.0, top_k=1)]}
    fig = viz.comparison_view(alone, families)
    trade, gain = fig.axes[:2]
    assert [t.get_text() for t in gain.get_yticklabels()] == ["min-p 0.1", "top-k 1"]
    dots = [line.get_xdata()[0] for line in gain.lines if line.get_marker() == "o"]  # not the error bar caps
    assert dots == pytest.approx([0.95 - 0.9])  # T=1: 0.95 against 0.9 on the curve at distinct-2 0.35
    notes = [t.get_text() for t in gain.texts]
    assert "T=2: more diverse than any T alone" in notes  # 0.9 is past the curve's 0.8: no comparison
    assert "T=1: less diverse than any T alone" in notes  # 0.2 is below the curve's 0.3
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["temperature alone", "min-p 0.1", "top-k 1"]


def test_tuning_view_shows_every_value_tried_and_fills_each_rules_best():
    from txtgen_nb import metrics

    def row(t, d2, g, **fields):
        base = metrics.summarise(["She ran."], ["eos"], SamplingSettings(t, **{"top_k": 0, **fields}))
        return dataclasses.replace(base, distinct_2=d2, grammatical=g, grammatical_se=0.02)

    alone = [row(0.5, 0.3, 1.0), row(1.0, 0.4, 0.8), row(2.0, 0.8, 0.1)]
    groups = {"min-p": [row(1.0, 0.35, 0.95, min_p=0.1), row(2.0, 0.9, 0.05, min_p=0.1),
                        row(1.0, 0.36, 0.9, min_p=0.2), row(2.0, 0.5, 0.7, min_p=0.2)],
              "top-k": [row(1.0, 0.38, 0.85, top_k=40), row(2.0, 0.6, 0.5, top_k=40)]}
    fig = viz.tuning_view(alone, groups)
    cool, hot = fig.axes[:2]
    assert [a.get_title() for a in (cool, hot)] == ["T = 1", "T = 2"]
    assert [t.get_text() for t in cool.get_yticklabels()] == ["min-p 0.1", "min-p 0.2", "top-k 40"]
    dots = {int(line.get_ydata()[0]): (line.get_xdata()[0], line.get_markerfacecolor())
            for line in cool.lines if line.get_marker() not in ("|", "None", "")}
    assert dots[0][0] == pytest.approx(0.95 - 0.9) and dots[1][0] == pytest.approx(0.9 - 0.88)
    assert dots[0][1] != "white" and dots[1][1] == "white"  # min-p 0.1 is the better of the two at T=1
    assert "more diverse than any T alone" in [t.get_text() for t in hot.texts]  # min-p 0.1 at T=2: past 0.8
    assert not texts_outside(fig)


def test_step_legend_names_only_the_rules_that_are_on(trace, tiny_tok):
    def legend(settings):
        fig = viz.step_view(trace, tiny_tok, 2, settings=settings)
        return [t.get_text() for t in fig.axes[0].get_legend().get_texts() if t.get_visible()][3:]

    assert legend(SamplingSettings(1.0, 0, 1.0)) == ["cumulative p", "top-p off", "top-k off"]
    assert legend(SamplingSettings(1.0, 5, 0.9)) == ["cumulative p\nafter top-k", "top-p threshold (0.9)",
                                                     "top-k cut-off (k=5)"]


def test_timeline_small_multiples_give_each_row_its_own_line_of_panels():
    trace = long_trace(rows=4)
    fig = viz.timeline_view(trace, labels=["a", "b", "c", "d"], small_multiples=True)
    assert len(fig.axes) == 12  # 4 rows x (p(chosen), entropy, kept)
    assert [fig.axes[3 * i].get_title(loc="left") for i in range(4)] == ["a", "b", "c", "d"]
    data = viz.timeline_data(trace)
    for i in range(4):
        (line,) = fig.axes[3 * i + 2].get_lines()
        np.testing.assert_array_equal(line.get_ydata(), data.num_kept[i])  # each row's own numbers
    assert fig.axes[2].get_yscale() == "log" and fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[9])
    assert render(fig)


MANY = SamplingSettings(0.9, 40, 0.9, 0.05, repetition_penalty=1.2, presence_penalty=0.5, typical_p=0.9,
                        epsilon_cutoff=0.001, top_n_sigma=2.0, xtc_probability=0.5, dry_multiplier=0.8)


def texts_outside(fig: Figure) -> list[str]:
    """The titles and labels of ``fig`` that run past its edges (what a projector would cut off) or over
    each other."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer, box = canvas.get_renderer(), fig.bbox
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
    out, placed = [], []
    for text in texts:
        if text.get_visible() and text.get_text():
            extent = text.get_window_extent(renderer)
            if extent.x0 < box.x0 - 1 or extent.x1 > box.x1 + 1 or extent.y1 > box.y1 + 1:
                out.append(text.get_text())
            out += [f"{text.get_text()!r} over {other.get_text()!r}" for other, other_extent in placed
                    if extent.overlaps(other_extent)]
            placed.append((text, extent))
    return out


def test_no_title_runs_off_its_figure_with_every_sampler_on(trace, tiny_tok):
    """Several samplers on make the longest labels: the titles wrap or shorten, none is cut off."""
    label = MANY.label()
    assert len(label) > 90  # long enough to test the wrapping
    figures = {
        "step": viz.step_view(trace, tiny_tok, 3, settings=MANY),
        "pipeline": viz.pipeline_view(trace, tiny_tok, 3, settings=MANY),
        "timeline": viz.timeline_view(trace, MANY),
        "heatmap": viz.heatmap_view(trace, tiny_tok),
    }
    cut = {name: texts_outside(fig) for name, fig in figures.items()}
    assert not any(cut.values()), cut


@pytest.mark.parametrize("order", ["hf", "llama.cpp", "top_k;min_p;temperature"])
def test_before_filtering_is_before_every_cut_in_every_order(trace, tiny_tok, order):
    """In llama.cpp's order temperature comes last, after the cuts: "before filtering" is still the whole
    distribution at the settings' temperature (no cut in it), and what the cuts keep is what is kept after."""
    s = SamplingSettings(1.5, 5, 1.0, 0.05, order=order)
    data = viz.step_data(trace, tiny_tok, 3, settings=s, top_n=30)
    raw = trace.step_logits(0, 3)
    expected = np.asarray(sampling.probabilities(sampling.apply_temperature(raw, 1.5)))
    np.testing.assert_allclose(data.prob_before, expected[data.ids], atol=1e-6)
    assert (data.prob_before > 0).all() and not data.kept.all()  # the removed candidates keep their bars
    assert data.entropy_before == pytest.approx(float(sampling.entropy(sampling.apply_temperature(raw, 1.5))), abs=1e-4)
