"""Step finders: each returned step satisfies its rule, every earlier step does not, on the demo model."""

from __future__ import annotations

import numpy as np
import pytest

from txtgen_nb import SamplingSettings, generate, load_model_and_tokenizer, sampling, steps, viz
from txtgen_nb.generation import Trace

SETTINGS = [SamplingSettings(1.0, 0, 0.9), SamplingSettings(0.0, 0, 1.0), SamplingSettings(0.5, 0, 1.0),
            SamplingSettings(1.0, 0, 1.0)]


@pytest.fixture(scope="module")
def trace() -> Trace:
    model, params, tokenizer, _ = load_model_and_tokenizer()
    result = generate(model, params, tokenizer, "Once upon a time", settings=SETTINGS, seed=[3] * len(SETTINGS),
                      max_new_tokens=40, trace=True)
    return result.trace


def kept(trace: Trace, settings: SamplingSettings, step: int, row: int = 0) -> np.ndarray:
    """The kept set at one step, straight from the sampler's filter."""
    logits = trace.logits[row, step]
    return np.isfinite(np.asarray(sampling.filter_logits(logits, temperature=settings.temperature, top_k=settings.top_k,
                                                         top_p=settings.top_p, min_p=settings.min_p)))


def synthetic(entropies_equal: bool = False) -> Trace:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 50)).astype(np.float32) * 4
    if entropies_equal:
        logits[:] = logits[0, 0]
    return Trace.from_logits(prompt_ids=[[2], [2]], token_ids=logits.argmax(-1).astype(np.int32), lengths=np.array([6, 4]),
                 logits=logits, settings=[SamplingSettings(1.0, 0, 1.0)] * 2, seeds=[0, 1], eos_id=3)


def test_most_informative_step_is_the_most_uncertain_of_the_first_steps(trace):
    step = steps.most_informative_step(trace, row=0)
    scaled = np.asarray(sampling.apply_temperature(trace.logits[0, :12], 1.0))
    entropy = np.asarray(sampling.entropy(scaled))  # [12]
    assert 0 <= step < 12
    assert entropy[step] == pytest.approx(entropy.max(), abs=1e-5)
    assert entropy[step] > entropy[0] + 0.1  # step 0 after "Once upon a time" is nearly certain


def test_most_informative_step_respects_within_and_settings(trace):
    assert steps.most_informative_step(trace, row=0, within=1) == 0
    assert steps.most_informative_step(trace, row=0, within=5) < 5
    # greedy: the temperature stage is certain everywhere, so the model's own entropy decides
    greedy = steps.most_informative_step(trace, row=1)
    assert greedy == steps.most_informative_step(trace, row=1, settings=SamplingSettings(1.0, 0, 1.0))
    assert greedy > 0


def test_most_informative_step_ties_go_to_the_earliest():
    assert steps.most_informative_step(synthetic(entropies_equal=True)) == 0
    assert steps.most_informative_step(synthetic(entropies_equal=True), row=1, within=3) == 0


def test_first_step_where_differ_is_the_first_step_with_different_kept_sets(trace):
    nucleus, top5 = SamplingSettings(1.0, 0, 0.9), SamplingSettings(1.0, 5, 1.0)
    step = steps.first_step_where_differ(trace, nucleus, top5)
    assert step is not None
    assert not np.array_equal(kept(trace, nucleus, step), kept(trace, top5, step))
    for earlier in range(step):
        assert np.array_equal(kept(trace, nucleus, earlier), kept(trace, top5, earlier))
    assert steps.first_step_where_differ(trace, nucleus, nucleus) is None


def test_first_step_where_differ_min_kept_skips_near_certain_steps(trace):
    nucleus, top5 = SamplingSettings(1.0, 0, 0.9), SamplingSettings(1.0, 5, 1.0)
    step = steps.first_step_where_differ(trace, nucleus, top5, min_kept=3)
    assert step is not None and kept(trace, nucleus, step).sum() >= 3
    assert not np.array_equal(kept(trace, nucleus, step), kept(trace, top5, step))
    assert step >= steps.first_step_where_differ(trace, nucleus, top5)


def test_first_step_where_removes_finds_min_p_at_work(trace):
    settings = SamplingSettings(1.2, 20, 0.95, min_p=0.1)
    step = steps.first_step_where_removes(trace, settings, row=3)
    assert step is not None
    without_min_p = SamplingSettings(1.2, 20, 0.95)
    assert kept(trace, settings, step, row=3).sum() < kept(trace, without_min_p, step, row=3).sum()
    for earlier in range(step):
        assert np.array_equal(kept(trace, settings, earlier, row=3), kept(trace, without_min_p, earlier, row=3))
    assert steps.first_step_where_removes(trace, without_min_p, row=3) is None


def test_removed_and_kept_counts_add_up(trace):
    settings = SamplingSettings(1.0, 10, 0.9, min_p=0.05)
    length = int(trace.lengths[0])
    counts = steps.kept_counts(trace, settings)
    assert counts.shape == (length,) and (counts >= 1).all() and (counts <= 10).all()
    after_k = steps.kept_mask(trace, settings, stage="top_k").sum(-1)
    removed = steps.removed_counts(trace, settings, stage="top_p") + steps.removed_counts(trace, settings)
    assert (after_k - removed == counts).all()


def test_first_step_where_tokens_differ():
    t = synthetic()
    assert steps.first_step_where_tokens_differ(t, 0, 0) is None
    assert steps.first_step_where_tokens_differ(t, 0, 1) == int(np.argmax(t.token_ids[0, :4] != t.token_ids[1, :4]))
    same = Trace.from_logits(prompt_ids=t.prompt_ids, token_ids=np.stack([t.token_ids[0]] * 2), lengths=np.array([6, 4]),
                             logits=t.logits, settings=t.settings, seeds=t.seeds, eos_id=3)
    assert steps.first_step_where_tokens_differ(same, 0, 1) == 4  # row 1 stopped first


def test_bad_row_or_stage_is_one_clear_error(trace):
    with pytest.raises(ValueError, match="row must be between 0 and 3"):
        steps.most_informative_step(trace, row=4)
    with pytest.raises(ValueError, match="stage must be one of"):
        steps.removed_counts(trace, stage="top_q")


def test_stage_shift_finds_where_a_sampler_acts_most(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    rows = [SamplingSettings(1.0, 0, repetition_penalty=3.0), SamplingSettings(1.0, 0, epsilon_cutoff=0.004)]
    trace = generate(model, params, tiny_tok, "Once upon a time", settings=rows, seed=[0, 0], max_new_tokens=12,
                     trace=True).trace
    for row, stage, before in [(0, "penalties", "raw"), (1, "epsilon", "typical")]:
        shift = steps.stage_shift(trace, stage, row=row)
        for step in range(int(trace.lengths[row])):
            stages = trace.stages(row, step)
            p_in, p_out = (np.asarray(sampling.probabilities(getattr(stages, n))) for n in (before, stage))
            assert shift[step] == pytest.approx(0.5 * np.abs(p_out - p_in).sum(), abs=1e-5)
        assert shift.max() > 0.01
        assert steps.step_where_stage_acts_most(trace, stage, row=row) == int(np.argmax(shift))
    assert steps.step_where_stage_acts_most(trace, "xtc", row=0) is None  # XTC is off: it never acts
    with pytest.raises(ValueError, match="stage must be one of"):
        steps.stage_shift(trace, "top_q")


EVERY_RULE = [SamplingSettings(1.0, 0, repetition_penalty=1.5, typical_p=0.5),  # the review's disagreement
              SamplingSettings(1.0, 0, 0.9, presence_penalty=1.0, frequency_penalty=0.5),  # penalties reshape: with
              SamplingSettings(1.0, 0, no_repeat_ngram_size=2), SamplingSettings(1.0, 0, 0.9, dry_multiplier=0.8),  # top-p
              SamplingSettings(1.0, 0, top_n_sigma=1.0), SamplingSettings(1.0, 0, epsilon_cutoff=0.01),
              SamplingSettings(1.0, 0, eta_cutoff=0.01), SamplingSettings(1.0, 0, xtc_probability=1.0),
              SamplingSettings(1.0, 0, mirostat_tau=3.0), SamplingSettings(1.0, 10, 0.9, order="llama.cpp"),
              SamplingSettings(1.0, 0, min_p=0.02, dynatemp_range=0.8, order="llama.cpp"),
              SamplingSettings(1.0, 0, 0.9, min_new_tokens=20)]


@pytest.mark.parametrize("settings", EVERY_RULE, ids=lambda s: s.label())
def test_kept_counts_agree_with_the_timeline_on_every_rule(trace, settings):
    length = int(trace.lengths[1])
    counts = steps.kept_counts(trace, settings, row=1)
    timeline = viz.timeline_data(trace, settings).num_kept[1, :length]
    np.testing.assert_array_equal(counts, timeline)
    assert counts.min() < trace.vocab_size  # something is removed somewhere in 40 steps
