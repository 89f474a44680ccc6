"""Grammar-constrained decoding: ``generate(..., constrain="grammar")`` draws every token from those the story
grammar allows (asked from inside the compiled loop), so every story is grammatical, and it changes nothing
else: with the same seed it writes what the unconstrained model writes until that one takes a wrong token."""

from __future__ import annotations

import numpy as np
import pytest

from txtgen_nb import SamplingSettings, corpus, generate, generate_stream, generation, load_model_and_tokenizer
from txtgen_nb.tokenizer import decode

from test_viz import texts_outside

HOT = SamplingSettings(2.0, 0, 1.0)  # hot enough that the model alone goes wrong within a few tokens
SEEDS = list(range(6))


@pytest.fixture(scope="module")
def demo():
    model, params, tok, _ = load_model_and_tokenizer()
    run = lambda **kw: generate(model, params, tok, ["Once upon a time"] * len(SEEDS), settings=HOT,  # noqa: E731
                                seed=SEEDS, max_new_tokens=48, trace=True, **kw)
    return model, params, tok, run(), run(constrain="grammar")


def test_every_constrained_token_is_one_the_grammar_allows(demo):
    _, _, tok, free, constrained = demo
    for row, ids in enumerate(constrained.new_token_ids):
        context = constrained.trace.prompt_ids[row]
        for token in ids:
            assert token in corpus.valid_next_tokens(tok, decode(tok, context)), (row, decode(tok, context)[-50:])
            context = [*context, token]
        assert all(corpus.is_grammatical(s) for s in corpus.complete_sentences(constrained.texts[row]))
    unconstrained_rate = np.mean([corpus.grammatical_rate(t) for t in free.texts])
    assert unconstrained_rate < 0.8, unconstrained_rate  # the mask did the work, not an easy setting


def _first_invalid(tok, prompt_ids: list[int], ids: list[int]) -> int:
    for step, token in enumerate(ids):
        if token not in corpus.valid_next_tokens(tok, decode(tok, [*prompt_ids, *ids[:step]])):
            return step
    return len(ids)


def test_the_constraint_changes_nothing_until_the_model_would_go_wrong(demo):
    """The same key draws the same token from the masked distribution whenever the free draw was valid
    (a Gumbel-max draw: masking only removes competitors, at a temperature with no other rule)."""
    _, _, tok, free, constrained = demo
    diverged = 0
    for row in range(len(SEEDS)):
        cut = _first_invalid(tok, free.trace.prompt_ids[row], free.new_token_ids[row])
        assert constrained.new_token_ids[row][:cut] == free.new_token_ids[row][:cut]
        if cut < len(free.new_token_ids[row]):
            diverged += 1
            assert constrained.new_token_ids[row][cut] != free.new_token_ids[row][cut]
    assert diverged >= 3


def test_the_trace_keeps_what_the_sampler_saw_and_what_the_grammar_cost(demo):
    _, _, tok, free, constrained = demo
    trace = constrained.trace
    row = 0
    logits = trace.row_logits(row)
    for step in range(4):
        allowed = set(trace.allowed_after(trace.context_ids(row, step)))
        assert set(np.flatnonzero(np.isfinite(logits[step]))) == allowed
        window = trace.top_ids[row, step][np.isfinite(trace.top_logits[row, step])]
        assert set(window) <= allowed
    mass = trace.constraint_mass(row)
    cut = _first_invalid(tok, free.trace.prompt_ids[row], free.new_token_ids[row])
    raw = free.trace.row_logits(row)[:cut].astype(np.float64)
    probs = np.exp(raw - raw.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = [probs[step, sorted(trace.allowed_after(trace.context_ids(row, step)))].sum() for step in range(cut)]
    np.testing.assert_allclose(mass[:cut], expected, rtol=1e-4)
    assert np.all((mass > 0) & (mass <= 1 + 1e-6))
    with pytest.raises(ValueError, match="not of a constrained generation"):
        free.trace.constraint_mass(0)


def test_new_settings_do_not_recompile_and_a_stream_leaves_nothing_behind(demo):
    model, params, tok, _, _ = demo
    before = generation.compiled_programs()
    result = generate(model, params, tok, ["Once upon a time"] * len(SEEDS), settings=SamplingSettings(1.3, 40, 0.95),
                      seed=SEEDS, max_new_tokens=48, trace=True, constrain="grammar")
    assert generation.compiled_programs() == before
    assert all(corpus.grammatical_rate(t) == 1.0 for t in result.texts if corpus.complete_sentences(t))
    stream = generate_stream(model, params, tok, "Once upon a time, there was", max_new_tokens=20, constrain="grammar",
                             temperature=1.5)
    text = "".join(pieces[0] for pieces in stream)
    assert corpus.story_prefix_states("Once upon a time, there was" + text)
    assert not generation._CONSTRAINTS


def test_bad_constraints_and_prompts_off_the_grammar_are_refused(demo):
    model, params, tok, _, _ = demo
    with pytest.raises(ValueError, match="constrain must be None or 'grammar'"):
        generate(model, params, tok, "Once upon a time", constrain="json")
    with pytest.raises(ValueError, match="no grammatical story starts with 'The capital of France is'"):
        generate(model, params, tok, "The capital of France is", constrain="grammar")


def test_the_views_say_what_the_constraint_took_away(demo):
    from txtgen_nb import viz

    _, _, tok, _, constrained = demo
    trace = constrained.trace
    data = viz.step_data(trace, tok, 3)
    assert data.constraint_mass == pytest.approx(float(trace.constraint_mass(0)[3]))
    title = viz.StepPlot().update(data).axes[0].get_title(loc="left")
    assert f"the grammar kept {data.constraint_mass:.0%} of p" in title
    fig = viz.constraint_view(trace, rows=[0, 1])
    assert not texts_outside(fig)
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[1].get_ydata(), 1 - trace.constraint_mass(1), rtol=1e-6)
    every = np.concatenate([1 - trace.constraint_mass(r) for r in (0, 1)])
    assert f"{every.mean():.1%} of the model's probability on average" in fig.axes[0].get_title(loc="left")
