"""The notebook explorers, driven from code with the bundled demo model (no browser needed)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from txtgen_nb import generation, load_model_and_tokenizer, sampling, viz, widgets
from txtgen_nb.generation import SamplingSettings
from txtgen_nb.sampling import filter_logits
from txtgen_nb.tokenizer import decode, encode_prompt

STEPS = 12


@pytest.fixture(scope="module")
def demo():
    model, params, tokenizer, _config = load_model_and_tokenizer()
    return model, params, tokenizer


@pytest.fixture(scope="module")
def tok(demo):
    return demo[2]


def assert_same_step_data(got: viz.StepData, want: viz.StepData) -> None:
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.prob_before, want.prob_before, rtol=1e-6)
    np.testing.assert_allclose(got.prob_after, want.prob_after, rtol=1e-6)
    np.testing.assert_array_equal(got.kept, want.kept)
    assert (got.num_kept, got.chosen, got.settings) == (want.num_kept, want.chosen, want.settings)


def test_explorer_opens_on_the_most_uncertain_early_step(demo):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=40, seed=0)
    first = min(12, int(ex.trace.lengths[0]))
    stages = sampling.filter_stages(ex.trace.logits[0, :first], ex.settings())
    entropy = np.asarray(sampling.entropy(stages.temperature))
    assert ex.step.value == int(np.argmax(entropy)) and ex.step.value > 0
    assert ex.current_step_data().num_kept > 1  # not a step where one token has probability 1
    assert ex.text.selected == ex.step.value  # the shown step is outlined in the text
    assert 'class="tg-tok tg-current"' not in ex.text.html  # ... by the widget's selected trait, not the HTML


def test_sampling_explorer_sliders_refilter_and_regenerate(demo, tok):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS, seed=0)
    assert ex.generate_calls == 1 and ex.error.value == ""
    assert ex.trace.token_ids.shape == (1, STEPS)
    ex.step.value = 3
    before, png, text = ex.current_step_data(), ex.plot.value, ex.result.texts[0]

    ex.top_k.value = 3  # re-filter the shown step, then regenerate
    assert ex.generate_calls == 2
    data = ex.current_step_data()
    assert data.settings == SamplingSettings(0.8, 3, 1.0, 0.0) == ex.trace.settings[0]
    assert data.num_kept <= 3 < before.num_kept
    assert_same_step_data(data, viz.step_data(ex.trace, tok, 3, settings=SamplingSettings(0.8, 3, 1.0, 0.0)))
    assert ex.plot.value != png

    html = ex.text.html
    ex.top_k.value, ex.temperature.value = 0, 2.0  # hot and unfiltered: a different continuation
    assert ex.generate_calls == 4
    assert ex.result.texts[0] != text and ex.text.html != html
    data = ex.current_step_data()
    assert_same_step_data(data, viz.step_data(ex.trace, tok, 3, settings=SamplingSettings(2.0, 0, 1.0, 0.0)))
    assert data.entropy_before > before.entropy_before


def test_every_change_says_what_changed_or_why_nothing_did(demo):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=40, seed=0)
    ids = ex.result.new_token_ids[0]
    ex.generate_button.click()  # same everything: same text, and the explorer says why
    assert ex.result.new_token_ids[0] == ids and "No token changed" in ex.text.html and "same seed" in ex.text.html
    assert "tg-tok tg-changed" not in ex.text.html
    ex.temperature.value = 0.0  # greedy, then a new seed: nothing changes, and the seed is not blamed
    ex.seed.value = 99
    assert "greedy, the most likely token every time" in ex.text.html and "same seed" not in ex.text.html
    ex.temperature.value, ex.seed.value = 0.8, 0
    ids = ex.result.new_token_ids[0]

    ex.seed.value = 12345  # other random draws: tokens change, are counted and underlined
    new = ex.result.new_token_ids[0]
    changed = viz.changed_tokens(ids, new)
    assert changed.any()
    assert f"{int(changed.sum())} of {max(len(ids), len(new))} tokens changed after seed 0 → 12345" in ex.text.html
    assert ex.text.html.count("tg-tok tg-changed") == int(changed.sum())

    seeds = set()
    for _ in range(3):
        ex.new_sample.click()  # a fresh seed each time, each a new generation
        seeds.add(ex.seed.value)
    assert len(seeds) == 3 and ex.generate_calls == 10


def test_clicking_a_token_selects_its_step(demo):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS, seed=1)
    png = bytes(ex.plot.value)
    target = 2 if ex.step.value != 2 else 3
    ex.text.selected = target  # what a click in the browser sends back
    assert ex.step.value == target and ex.current_step_data().step == target and bytes(ex.plot.value) != png
    ex.step.value = 5
    assert ex.text.selected == 5 and ex.generate_calls == 1


def test_sampling_explorer_refilters_stored_logits_without_model_call(demo, tok):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS, seed=0)
    ex.auto_regenerate.value = False
    trace, png = ex.trace, ex.plot.value
    ex.step.value = 0
    ex.top_p.value = 0.5
    assert ex.generate_calls == 1 and ex.trace is trace
    settings = SamplingSettings(0.8, 50, 0.5, 0.0)
    assert_same_step_data(ex.current_step_data(), viz.step_data(trace, tok, 0, settings=settings))
    assert ex.plot.value != png
    ex.color_by.value = "entropy"
    assert "coloured by entropy" in ex.text.html and ex.generate_calls == 1
    step_png = bytes(ex.plot.value)
    ex.view.value = "pipeline"
    assert bytes(ex.plot.value).startswith(b"\x89PNG") and bytes(ex.plot.value) != step_png


def test_step_slider_walks_the_generation(demo):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS, seed=1)
    assert (ex.step.min, ex.step.max) == (0, int(ex.trace.lengths[0]) - 1)
    images = set()
    for step in (0, 1, ex.step.max):
        ex.step.value = step
        assert ex.current_step_data().chosen == ex.trace.token_ids[0, step]
        images.add(bytes(ex.plot.value))
    assert len(images) == 3 and ex.generate_calls == 1


def test_errors_show_inside_the_widget(demo, tmp_path):
    ex = widgets.SamplingExplorer(checkpoint="/nonexistent")
    assert "/nonexistent" in ex.error.value and ex.trace is None and ex.generate_button.disabled
    ex.generate_button.click()  # nothing to run, nothing raised
    assert ex.generate_calls == 0

    odd = tmp_path / "<b>not a checkpoint"
    odd.write_text("x")
    ex = widgets.DistributionExplorer(checkpoint=odd)
    assert "&lt;b&gt;not a checkpoint" in ex.error.value and "<b>not" not in ex.error.value

    ex = widgets.SamplingExplorer(*demo, top_p=1.5, max_new_tokens=STEPS)
    assert "top_p" in ex.error.value and ex.top_p.value == 1.0 and ex.generate_calls == 1

    ex = widgets.CompareExplorer(*demo, settings=[SamplingSettings()])
    assert "2 to 4" in ex.error.value and ex.generate_calls == 0

    ex = widgets.SamplingExplorer(demo[0], max_new_tokens=STEPS)
    assert "together" in ex.error.value


def test_busy_state_and_callback_errors(demo, monkeypatch):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS)
    seen = []

    def failing_generate(*args, **kwargs):
        seen.append(("Generating…" in ex.status.value, ex.generate_button.disabled, ex.new_sample.disabled,
                     "tg-is-busy" in ex.widget._dom_classes))
        raise ValueError("bad setting\nsecond line")

    monkeypatch.setattr(generation, "generate_stream", failing_generate)
    ex.generate_button.click()
    assert seen == [(True, True, True, True)]
    assert "bad setting second line" in ex.error.value and "\n" not in ex.error.value
    assert not ex.generate_button.disabled and ex.status.value == "" and "tg-is-busy" not in ex.widget._dom_classes
    monkeypatch.undo()
    ex.generate_button.click()
    assert ex.error.value == "" and ex.generate_calls == 2


def test_text_grows_while_generating_and_stop_ends_it(demo, monkeypatch):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=40)
    monkeypatch.setattr(generation, "_STEP_SECONDS", {})  # as the first generation: a short first chunk
    shown = []

    def live(prompts, texts):  # what the view shows after each chunk; Stop pressed at the first
        shown.append((ex.stop_button.layout.display, texts[0]))
        ex.stop_button.click()

    ex.show_live = live
    ex.run()
    assert shown and shown[0][0] == "" and shown[0][1]  # Stop visible, some text already
    assert ex.result.stop_reasons == ["interrupted"] and ex.result.continuations[0] == shown[-1][1]
    assert len(ex.result.new_token_ids[0]) < 40 and ex.stop_button.layout.display == "none"
    assert 'class="tg-live"' not in ex.text.html and ex.text.html  # the finished view replaced the live text


def test_live_text_in_the_view(demo):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS)
    ex.show_live(["Once upon a <time>"], [", there"])
    assert 'class="tg-live"' in ex.text.html and "&lt;time&gt;" in ex.text.html and ", there" in ex.text.html


def test_background_generation_runs_the_newest_request(demo):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS, seed=1)
    ex.background = True
    calls = ex.generate_calls
    for seed in (2, 3, 4):
        ex.seed.value = seed  # each change asks for a generation while the previous may still run
    ex.wait(timeout=120)
    assert ex._worker is None and ex.stop_button.layout.display == "none"
    assert ex.trace.seeds == [4] and calls + 1 <= ex.generate_calls <= calls + 3
    assert ex.current_step_data().step == ex.shown_step and "tg-is-busy" not in ex.widget._dom_classes


def test_background_errors_show_in_the_widget(demo, monkeypatch):
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS)
    ex.background = True

    def broken(*args, **kwargs):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(generation, "generate_stream", broken)
    ex.run()
    ex.wait(timeout=60)
    assert "RuntimeError: the model broke" in ex.error.value and ex._worker is None


def test_distribution_explorer_refilters_without_model_call(demo):
    ex = widgets.DistributionExplorer(*demo, prompt="The cat sat on the")
    assert ex.generate_calls == 1 and ex.logits().shape == (demo[2].get_vocab_size(),)
    png = ex.plot.value
    for top_k in (7, 0):
        ex.top_k.value = top_k
        kept = np.isfinite(np.asarray(filter_logits(ex.logits(), temperature=0.8, top_k=top_k))).sum()
        assert ex.current_step_data().num_kept == kept
    assert ex.generate_calls == 1 and ex.plot.value != png
    ex.prompt.value = "Once upon a time"
    assert ex.generate_calls == 2


def test_compare_explorer_one_batched_call(demo):
    settings = [SamplingSettings(0.0, 0), SamplingSettings(1.0, 0), SamplingSettings(2.0, 0)]
    ex = widgets.CompareExplorer(*demo, settings=settings, max_new_tokens=STEPS, seed=0)
    assert ex.generate_calls == 1 and ex.error.value == ""
    assert ex.trace.settings == settings and ex.trace.seeds == [0, 0, 0]
    assert len(set(ex.result.texts)) == 3
    assert ex.labels == ["greedy", "T=1", "T=2"]
    assert all(label in ex.text_html.value for label in ex.labels)
    assert ex.text_html.value.count('class="tg-view tg-below"') == 3  # alternatives below each narrow column
    # one legend for all columns, above them, so every column's text starts at the same height
    assert ex.text_html.value.count('class="tg-legend"') == 1
    assert ex.text_html.value.index('class="tg-legend"') < ex.text_html.value.index("display:flex")
    assert bytes(ex.plot.value).startswith(b"\x89PNG") and ex.plot.layout.display is None


def test_an_empty_plot_is_hidden_not_a_broken_image():
    from txtgen_nb.widgets.layout import plot_image

    image = plot_image()
    assert image.layout.display == "none"
    image.value = b"\x89PNG..."
    assert image.layout.display is None
    image.value = b""
    assert image.layout.display == "none"


def test_branch_explorer_offers_kept_alternatives_first(demo):
    ex = widgets.BranchExplorer(*demo, max_new_tokens=STEPS, seed=0, top_k=3)
    data = ex.current_step_data()
    kept = [int(t) for t, k in zip(data.ids, data.kept) if k]
    values = [value for _label, value in ex.alternative.options]
    assert values[: len(kept)] == kept  # kept candidates first
    assert all("removed" in label for label, value in ex.alternative.options if value not in kept)
    default = ex.alternative.value
    assert default in kept and default != data.chosen  # never a token the filters removed, nor the sampled one
    probs = dict(zip(data.ids.tolist(), data.prob_after))
    assert probs[default] == max(p for t, p in probs.items() if t in kept and t != data.chosen)


def test_branch_continues_for_the_chosen_length_at_any_step(demo, tok):
    ex = widgets.BranchExplorer(*demo, max_new_tokens=30, seed=0)
    step = int(ex.trace.lengths[0]) - 3  # late in the text: the branch still gets 30 new tokens
    ex.step.value = step
    alt = ex.alternative.value
    ex.branch_button.click()
    assert ex.generate_calls == 2 and ex.error.value == ""
    prefix = decode(tok, ex.trace.context_ids(0, step)) + tok.decode([alt])
    assert ex.branch_result.texts[0].startswith(prefix)
    assert len(ex.branch_result.new_token_ids[0]) == 30 or ex.branch_result.stop_reasons[0] == "eos"
    html = ex.branch_html.value
    assert f"Branch at step {step}" in html and "Original:" in html and "Branch:" in html
    assert html.count('class="tg-view tg-below"') == 2 and "tg-tok tg-changed" in html  # side by side, differences marked
    ex.top_k.value = 2  # re-filters the shown step and its alternatives, no model call
    assert ex.generate_calls == 2 and ex.current_step_data().num_kept <= 2


def test_explorers_display_as_one_widget(demo):
    ex = widgets.CompareExplorer(*demo, max_new_tokens=4)
    bundle = ex._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id
    assert ex.error in ex.widget.children


def test_a_prompt_longer_than_the_context_says_what_was_cut(demo):
    model, params, tok = demo
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=8)
    ex.prompt.value = "Once upon a time, there was a little girl. " * 40  # far past the demo's context
    cut = len(encode_prompt(tok, ex.prompt.value)) - (model.config.max_len - 1)
    assert "tg-notice" in ex.error.value and f"the first {cut} were cut" in ex.error.value
    ex.prompt.value = "Once upon a time"  # a short prompt again: the notice goes
    assert ex.error.value == ""


def test_a_regeneration_stays_on_an_informative_step_and_leaves_a_certain_one(demo):
    from txtgen_nb.steps import most_informative_step
    from txtgen_nb.widgets.sampling_explorer import MIN_CHOICE_NATS

    ex = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS, seed=0, prompt="Once upon a time, there was a")
    entropy = ex.trace.entropy[0, : int(ex.trace.lengths[0])]
    certain, unsure = np.flatnonzero(entropy < MIN_CHOICE_NATS), np.flatnonzero(entropy >= MIN_CHOICE_NATS)
    assert certain.size and unsure.size  # the demo's grammar has both kinds of step
    ex.step.value = int(unsure[-1])
    ex.generate_button.click()  # the same text again: its step is still a choice, so the view stays
    assert ex.step.value == int(unsure[-1])
    ex.step.value = int(certain[0])
    ex.generate_button.click()  # a step where the model was sure: the view moves to the most informative one
    assert ex.step.value == most_informative_step(ex.trace, settings=ex.settings()) != int(certain[0])


def test_after_the_background_warm_up_nothing_compiles(demo):
    """In a kernel the explorer warms up after its first result: then new prompts of any length, the
    sliders, the advanced samplers and the order never compile (issue: the first Mirostat change
    froze the explorer for 9.5 s)."""
    ex = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS, seed=1)
    ex.background = True
    ex._warmed = False
    ex.run()
    ex.wait(timeout=300)
    assert ex._warmed and ex._worker is None and ex.status.value == ""
    compiled = generation.compiled_programs()
    words = "the little dog ran to the park and saw a big red ball".split()
    for length, field, value in [(3, "mirostat_tau", 4.0), (60, "repetition_penalty", 1.3), (110, "xtc_probability", 0.5)]:
        ex.prompt.value = " ".join(words[i % len(words)] for i in range(length))
        ex.controls.advanced[field].value = value
        ex.temperature.value = 0.5 + length / 100
        ex.wait(timeout=120)
    ex.controls.order.value = "llama.cpp"
    ex.wait(timeout=120)
    assert not ex.error.value and generation.compiled_programs() == compiled
    assert ex.generate_calls >= 2


def test_a_saved_notebook_shows_a_note_in_place_of_a_dead_explorer(demo, monkeypatch):
    """In a notebook the explorer is shown after a note that CSS hides while the explorer is live;
    reopened without its kernel, the note says what to do instead of "model not found"."""
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    ex = widgets.DistributionExplorer(*demo, prompt="The cat sat on the")
    ex._ipython_display_()
    note, widget = shown
    assert "run this cell" in note.data and 'class="tg-offline"' in note.data and widget is ex.widget
    assert ":has(+ .jp-OutputArea-child .tg-explorer)" in note.data and "tg-explorer" in ex.widget._dom_classes


def test_the_base_explorers_usage_builds_a_working_explorer(demo):
    """The code in ``widgets.base``'s docstring runs as written: a new explorer in a dozen lines."""
    from txtgen_nb.widgets import base
    from txtgen_nb.widgets.controls import SamplingControls
    from txtgen_nb.widgets.layout import explorer_row, plot_image

    code = base.__doc__.split("Usage (a new explorer)::")[1]
    namespace = dict(Explorer=base.Explorer, SamplingControls=SamplingControls, explorer_row=explorer_row,
                     plot_image=plot_image)
    exec(textwrap.dedent(code), namespace)
    explorer = namespace["MyExplorer"](*demo)  # its first run is at construction
    assert explorer.story and explorer.generate_calls == 1 and not explorer.error.value
    explorer.prompt.value = "The dragon"
    assert explorer.generate_calls == 2 and explorer.story


def test_the_grammar_marks_each_candidate_for_the_demo_model_only(demo, tok):
    from txtgen_nb import corpus

    ex = widgets.SamplingExplorer(max_new_tokens=STEPS, seed=0)  # the demo, chosen in the Model menu
    assert ex.knows_grammar and ex.truth.layout.display == "" and ex.current_step_data().valid is None
    png = ex.plot.value
    ex.truth.value = True
    data = ex.current_step_data()
    allowed = corpus.valid_next_tokens(ex.tokenizer, decode(ex.tokenizer, ex.trace.context_ids(0, ex.shown_step)))
    assert list(data.valid) == [int(i) in allowed for i in data.ids]
    assert ex.plot.value != png  # redrawn with the marks
    ex.view.value = "pipeline"
    assert not ex.error.value
    branch = widgets.BranchExplorer(max_new_tokens=STEPS, seed=0)
    branch.truth.value = True
    assert all(label[:2] in ("✓ ", "✗ ") for label, _ in branch.alternative.options)
    prompt = "Once upon a time, there was a"
    dist = widgets.DistributionExplorer(prompt=prompt)
    dist.truth.value = True
    allowed = corpus.valid_next_tokens(dist.tokenizer, prompt)
    assert list(dist.current_step_data().valid) == [int(i) in allowed for i in dist.current_step_data().ids]
    own = widgets.SamplingExplorer(*demo, max_new_tokens=STEPS)  # a model given in code: the grammar may not apply
    own.truth.value = True
    assert not own.knows_grammar and own.truth.layout.display == "none" and own.oracle is None
