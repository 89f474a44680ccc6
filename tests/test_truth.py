"""Cutoffs judged by an oracle (``txtgen_nb.truth``) and the views that mark the grammar's verdict: exact
numbers on a synthetic trace with a fixed oracle, brute-force checks on the demo model with the grammar."""

from __future__ import annotations

import numpy as np
import pytest

from txtgen_nb import SamplingSettings, corpus, generate, load_model_and_tokenizer, truth, viz
from txtgen_nb.generation import Trace
from txtgen_nb.tokenizer import decode

from test_viz import texts_outside

ALLOWED = {0, 1, 5}


def fixed_oracle(tokenizer, text):
    return ALLOWED


@pytest.fixture(scope="module")
def demo():
    model, params, tok, _ = load_model_and_tokenizer()
    result = generate(model, params, tok, ["Once upon a time"] * 3, settings=SamplingSettings(1.0, 0, 1.0),
                      seed=[0, 1, 2], max_new_tokens=24, trace=True)
    return result.trace, tok


@pytest.fixture(scope="module")
def synthetic(demo):
    _, tok = demo
    logits = np.log(np.array([[0.4, 0.3, 0.1, 0.1, 0.05, 0.05, 0, 0, 0, 0]] * 3, np.float32) + 1e-12)
    logits = np.stack([logits, logits[:, ::-1]])  # [2 rows, 3 steps, V=10]
    return Trace.from_logits(prompt_ids=[[2], [2]], token_ids=np.array([[0, 2, 1], [9, 8, 7]], np.int32),
                             lengths=np.array([3, 3]), logits=logits, settings=[SamplingSettings(1.0, 0, 1.0)] * 2,
                             seeds=[0, 1], eos_id=3)


def test_exact_numbers_on_a_fixed_distribution_and_oracle(synthetic, demo):
    _, tok = demo
    q = truth.cutoff_quality(synthetic, tok, SamplingSettings(1.0, 2), row=0, oracle=fixed_oracle)
    # top-k 2 keeps ids 0 and 1 (p .4 and .3), both allowed; the allowed mass is .4 + .3 + .05
    np.testing.assert_allclose(q.valid_mass, 0.75, rtol=1e-5)
    np.testing.assert_allclose(q.valid_kept, 0.7 / 0.75, rtol=1e-5)
    np.testing.assert_array_equal(q.invalid_kept, 0)
    np.testing.assert_allclose(q.invalid_chance, 0, atol=1e-6)
    np.testing.assert_array_equal(q.kept, 2)
    np.testing.assert_array_equal(q.chosen_valid, [True, False, True])
    # the best top-r cut: +.4 +.3 -.1 -.1 -.05 +.05 peaks after two tokens
    np.testing.assert_array_equal(q.best_rank, 2)
    loose = truth.cutoff_quality(synthetic, tok, SamplingSettings(1.0, 0, 1.0), row=0, oracle=fixed_oracle)
    np.testing.assert_allclose(loose.valid_kept, 1, rtol=1e-5)
    np.testing.assert_allclose(loose.invalid_chance, 0.25, rtol=1e-4)  # nothing cut: the invalid share itself
    np.testing.assert_array_equal(loose.invalid_kept, 7)
    reversed_row = truth.cutoff_quality(synthetic, tok, SamplingSettings(1.0, 1), row=1, oracle=fixed_oracle)
    np.testing.assert_allclose(reversed_row.invalid_chance, 1, rtol=1e-5)  # its top token (id 9) is not allowed


def test_the_best_cut_is_the_best_of_every_rank_by_brute_force(demo):
    trace, tok = demo
    q = truth.cutoff_quality(trace, tok, SamplingSettings(1.0, 0, 0.9))
    valid = truth.valid_mask(trace, tok)
    probs = np.exp(trace.row_logits(0)[: len(q.best_rank)].astype(np.float64))
    probs /= probs.sum(-1, keepdims=True)
    for step in range(len(q.best_rank)):
        order = np.argsort(-probs[step], kind="stable")
        signed = np.where(valid[step, order], probs[step, order], -probs[step, order])
        gains = [signed[:r].sum() for r in range(1, probs.shape[1] + 1)]
        assert q.best_rank[step] == int(np.argmax(gains)) + 1
        kept = order[: q.best_rank[step]]
        share = probs[step, kept][valid[step, kept]].sum() / probs[step][valid[step]].sum()
        np.testing.assert_allclose(q.best_valid_kept[step], share, rtol=1e-4)
        invalid = probs[step, kept][~valid[step, kept]].sum() / probs[step, kept].sum()
        np.testing.assert_allclose(q.best_invalid_chance[step], invalid, atol=1e-6)


def test_the_mask_is_the_grammar_at_each_steps_context(demo):
    trace, tok = demo
    mask = truth.valid_mask(trace, tok, row=1)
    for step in (0, 5, int(trace.lengths[1]) - 1):
        text = decode(tok, trace.context_ids(1, step))
        assert set(np.flatnonzero(mask[step])) == corpus.valid_next_tokens(tok, text)
    q = truth.cutoff_quality(trace, tok, row=1, valid=mask)
    np.testing.assert_array_equal(q.judged, mask.any(-1))
    np.testing.assert_array_equal(q.chosen_valid, mask[np.arange(mask.shape[0]), trace.token_ids[1, : mask.shape[0]]])


def test_the_sweep_summarises_the_judged_steps_of_every_row(demo):
    trace, tok = demo
    families = {"top-k": [SamplingSettings(1.0, 3), SamplingSettings(1.0, 20)],
                "min-p": [SamplingSettings(1.0, 0, 1.0, min_p=0.1)]}
    rows, best = truth.cutoff_sweep(trace, tok, families)
    assert [r.family for r in rows] == ["top-k", "top-k", "min-p"]
    per_row = [truth.cutoff_quality(trace, tok, SamplingSettings(1.0, 20), row) for row in range(trace.num_rows)]
    kept = np.concatenate([q.valid_kept[q.judged] for q in per_row])
    assert rows[1].steps == kept.size == best.steps
    np.testing.assert_allclose(rows[1].valid_kept, kept.mean(), rtol=1e-6)
    np.testing.assert_allclose(rows[1].valid_kept_se, kept.std(ddof=1) / np.sqrt(kept.size), rtol=1e-6)
    assert rows[0].valid_kept < rows[1].valid_kept  # keeping 3 tokens loses more of the valid probability than 20
    assert best.valid_kept >= max(r.valid_kept - r.invalid_chance for r in rows) - 1e-6


def test_the_step_plot_and_the_pipeline_mark_the_grammars_verdict(demo):
    trace, tok = demo
    data = viz.step_data(trace, tok, 4, oracle=corpus.valid_next_tokens)
    allowed = corpus.valid_next_tokens(tok, data.context)
    np.testing.assert_array_equal(data.valid, [i in allowed for i in data.ids])
    plot = viz.StepPlot()
    plot.update(data)
    marks = [m.get_text() for m in plot.marks if m.get_visible()]
    assert marks == ["✓" if v else "✗" for v in data.valid]
    assert plot.legend.get_texts()[-1].get_visible()
    plot.update(viz.step_data(trace, tok, 4))  # without an oracle: no marks, no legend entry
    assert not any(m.get_visible() for m in plot.marks) and not plot.legend.get_texts()[-1].get_visible()
    fig = viz.pipeline_view(trace, tok, 4, oracle=corpus.valid_next_tokens)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    twelve = viz.step_data(trace, tok, 4, top_n=12, oracle=corpus.valid_next_tokens)
    assert labels == [("✓ " if v else "✗ ") + label for v, label in zip(twelve.valid, twelve.labels)]


def test_a_context_off_the_grammar_says_so(synthetic, demo):
    _, tok = demo
    data = viz.step_data(synthetic, tok, 1, oracle=lambda tokenizer, text: set())
    assert data.off_grammar and "off the grammar" in viz.StepPlot().update(data).axes[0].get_title(loc="left")


def test_the_cutoff_views_draw_what_they_are_given(demo):
    trace, tok = demo
    q = truth.cutoff_quality(trace, tok, SamplingSettings(1.0, 0, 0.9))
    fig = viz.cutoff_view(q)
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float), np.where(q.judged, q.valid_kept, np.nan))
    assert f"{np.mean(q.valid_kept[q.judged]):.1%}" in fig.get_suptitle()
    many = SamplingSettings(0.9, 40, 0.9, 0.05, repetition_penalty=1.2, typical_p=0.9, epsilon_cutoff=0.001,
                            top_n_sigma=2.0, xtc_probability=0.5, dry_multiplier=0.8)
    assert not texts_outside(viz.cutoff_view(truth.cutoff_quality(trace, tok, many)))  # long labels: shortened
    rows, best = truth.cutoff_sweep(trace, tok, {"top-p": [SamplingSettings(1.0, 0, p) for p in (0.5, 0.9)]})
    fig = viz.cutoff_sweep_view(rows, best)
    assert not texts_outside(fig)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "top-p" in texts and any("knows the answer" in t for t in texts)
