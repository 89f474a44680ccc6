"""Quality and diversity measures, and the batched sweep behind notebook 05."""

from __future__ import annotations

import pytest

import dataclasses

import numpy as np

from txtgen_nb import SamplingSettings, generate, metrics, viz
from txtgen_nb.corpus import complete_sentences, generate_stories

ROW = metrics.summarise(["She ran."], ["eos"], SamplingSettings(1.0, 0))


def test_distinct_n_and_repetition():
    assert metrics.distinct_n(["the cat sat", "the cat ran"], n=2) == pytest.approx(3 / 4)
    assert metrics.distinct_n("the the the the", n=1) == pytest.approx(1 / 4)
    assert metrics.distinct_n([], n=2) == 0.0
    assert metrics.repetition("a b c a b c", n=3) == pytest.approx(1 / 4)
    assert metrics.repetition("a b c d e", n=3) == 0.0
    assert metrics.repetition("a b", n=3) == 0.0
    assert metrics.words('She said, "Hi!"') == ["she", "said", ",", '"', "hi", "!", '"']


def test_summarise_counts_grammatical_sentences():
    stories = generate_stories(3, seed=4)
    salad = "happy the was Lily . dog named a there"
    row = metrics.summarise([*stories, salad + "."], ["eos", "eos", "eos", "max_new_tokens"], SamplingSettings(1.0, 0))
    assert row.sentences > 3 and 0.8 < row.grammatical < 1.0  # every story sentence, not the salad
    assert row.eos_share == 0.75 and row.samples == 4 and row.temperature == 1.0 and row.top_k == 0
    assert 0 < row.grammatical_se < 0.5 and row.distinct_2_se > 0


def test_grammatical_share_error_treats_a_story_as_one_cluster():
    good = generate_stories(1, seed=1)[0]  # several grammatical sentences
    bad = "Dog the ran. The happy was. Named a there."
    share, se, n = metrics.grammatical_share([good, bad])
    k = len(complete_sentences(good))
    assert n == k + 3 and share == pytest.approx(k / (k + 3))
    # two clusters: residuals k - share * k and 0 - share * 3, scaled by m / (m - 1) = 2
    expected = np.sqrt(2 * ((k - share * k) ** 2 + (share * 3) ** 2)) / (k + 3)
    assert se == pytest.approx(expected)
    assert metrics.grammatical_share([good] * 5)[1] == 0.0  # no spread, no error
    assert metrics.grammatical_share(["no full stop"]) == (0.0, 0.0, 0)


def test_gain_at_equal_diversity_reads_the_reference_curve():
    def row(d2, g, se=0.01):
        return dataclasses.replace(ROW, distinct_2=d2, grammatical=g, grammatical_se=se)

    curve = [row(0.6, 0.5, 0.02), row(0.2, 0.9, 0.02), row(0.4, 0.7, 0.04)]  # any order
    gain, se = metrics.gain_at_equal_diversity(row(0.5, 0.8, 0.03), curve)
    assert gain == pytest.approx(0.8 - 0.6) and se == pytest.approx(np.hypot(0.03, 0.03))
    assert all(np.isnan(metrics.gain_at_equal_diversity(row(0.7, 0.9), curve)))  # outside the curve
    # a row whose own distinct-2 is uncertain: that error times the curve's slope (here -1) counts too
    shaky = dataclasses.replace(row(0.5, 0.8, 0.03), distinct_2_se=0.04)
    assert metrics.gain_at_equal_diversity(shaky, curve)[1] == pytest.approx(np.sqrt(0.03 ** 2 + 0.03 ** 2 + 0.04 ** 2))


def test_sweep_is_one_batched_call_per_setting_block(tiny_model, tiny_tok, capsys):
    model, params, _ = tiny_model
    rows = metrics.sweep(model, params, tiny_tok, "Once", temperatures=[0.0, 1.5], top_ps=[1.0, 0.5], seeds=3,
                         max_new_tokens=8)
    assert "sweep: 12 texts" in capsys.readouterr().err  # the progress bar
    assert [(r.temperature, r.top_p) for r in rows] == [(0.0, 1.0), (0.0, 0.5), (1.5, 1.0), (1.5, 0.5)]
    assert all(r.samples == 3 for r in rows)
    assert len(set(rows[0].texts)) == 1  # greedy: every seed gives the same text
    single = generate(model, params, tiny_tok, "Once", temperature=1.5, top_p=0.5, top_k=0, seed=2, max_new_tokens=8)
    assert rows[3].texts[2] == single.texts[0]  # row = (setting, seed), same as a single call
    assert rows[0].distinct_2 < rows[2].distinct_2 or rows[2].distinct_2 == 1.0
    table = metrics.format_table(rows)
    assert len(table.splitlines()) == 2 + len(rows) and "grammatical" in table and "T=1.5 · top-p 0.5" in table
    assert viz.sweep_view(rows).axes[0].get_title() == "grammatical sentences"
    with pytest.raises(ValueError, match="seeds"):
        metrics.sweep(model, params, tiny_tok, "Once", temperatures=[1.0], seeds=0)


def test_sweep_of_any_settings_runs_in_calls_of_one_shape(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    grid = [SamplingSettings(1.0, 0, min_p=0.2), SamplingSettings(1.5, 0, typical_p=0.5),
            SamplingSettings(0.0, 0, repetition_penalty=1.3)]
    rows = metrics.sweep(model, params, tiny_tok, "Once", settings=grid, seeds=3, max_new_tokens=6, batch=4,
                         progress=False)  # 9 texts in calls of 4 rows: 4, 4 and 1 filled to 4
    assert [r.settings for r in rows] == grid and all(r.samples == 3 for r in rows)
    single = generate(model, params, tiny_tok, "Once", settings=grid[1], seed=2, max_new_tokens=6)
    assert rows[1].texts[2] == single.texts[0]  # the last text of the middle call
    alone = generate(model, params, tiny_tok, "Once", settings=grid[2], seed=2, max_new_tokens=6)
    assert rows[2].texts[2] == alone.texts[0]  # the row before the filler
    with pytest.raises(ValueError, match="not both"):
        metrics.sweep(model, params, tiny_tok, "Once", settings=grid, temperatures=[1.0])
    with pytest.raises(ValueError, match="at least one setting"):
        metrics.sweep(model, params, tiny_tok, "Once", settings=[])


def test_sweep_keeps_orders_apart_and_compiles_once_per_chain(tiny_model, tiny_tok):
    from txtgen_nb.generation import compiled_programs

    model, params, _ = tiny_model
    grid = [SamplingSettings(1.0, 0, min_p=0.1), SamplingSettings(1.0, 0, min_p=0.1, order="llama.cpp")]
    rows = metrics.sweep(model, params, tiny_tok, "Once", settings=grid, seeds=3, max_new_tokens=5, batch=4,
                         progress=False)  # 3 + 3 rows: one call per order, never a batch of both
    alone = generate(model, params, tiny_tok, "Once", settings=grid[1], seed=1, max_new_tokens=5)
    assert rows[1].texts[1] == alone.texts[0]
    before = compiled_programs()
    again = [SamplingSettings(1.7, 0, min_p=0.3), SamplingSettings(0.5, 0, min_p=0.02, order="llama.cpp")]
    metrics.sweep(model, params, tiny_tok, "Once", settings=again * 3, seeds=3, max_new_tokens=5, batch=4,
                  progress=False)
    assert compiled_programs() == before  # new values, more calls: the same programs


def test_grouped_distinct_n_does_not_fall_as_texts_are_added():
    stories = generate_stories(64, seed=3)
    pooled = [metrics.distinct_n(stories[:n], 2) for n in (16, 64)]
    assert pooled[1] < pooled[0]  # pooled: more texts share more 2-grams
    small, large = metrics.grouped_distinct_n(stories[:16], 2, size=8), metrics.grouped_distinct_n(stories, 2, size=8)
    groups = [metrics.distinct_n(stories[i:i + 8], 2) for i in range(0, 64, 8)]
    assert large[0] == pytest.approx(np.mean(groups)) and large[1] == pytest.approx(np.std(groups, ddof=1) / np.sqrt(8))
    assert abs(small[0] - large[0]) < 3 * small[1]  # the same quantity on fewer texts
    assert metrics.grouped_distinct_n(stories[:5], 2, size=8) == (metrics.distinct_n(stories[:5], 2),
                                                                 metrics.distinct_n_se(stories[:5], 2))


def test_sweep_adds_seeds_where_the_error_is_above_the_target():
    from txtgen_nb import load_model_and_tokenizer

    model, params, tok, _ = load_model_and_tokenizer()  # the demo model: its stories have sentences to judge
    grid = [SamplingSettings(0.0, 0), SamplingSettings(1.4, 0)]  # greedy: no spread; hot: about half wrong
    rows = metrics.sweep(model, params, tok, "", settings=grid, seeds=4, target_se=1e-9, max_seeds=12,
                         max_new_tokens=32, batch=4, progress=False)
    greedy, hot = rows
    assert greedy.grammatical_se == 0.0 and greedy.samples == 4  # below any target after the first round
    assert hot.grammatical_se > 0 and hot.samples == 12  # topped up to max_seeds in rounds of 4
    again = generate(model, params, tok, "", settings=grid[1], seed=9, max_new_tokens=32)
    assert hot.texts[9] == again.texts[0]  # the added stories are seeds 4.. 11, as a single call gives them
    plain = metrics.sweep(model, params, tok, "", settings=grid[1:], seeds=12, max_new_tokens=32, batch=4,
                          progress=False)[0]
    assert plain.texts == hot.texts and plain.distinct_2 == hot.distinct_2  # the same stories, the same numbers
    with pytest.raises(ValueError, match="target_se"):
        metrics.sweep(model, params, tok, "", settings=grid, seeds=4, target_se=0.0)


def test_tuned_keeps_each_temperatures_best_gain_at_equal_diversity():
    def row(t, d2, g, **fields):
        base = metrics.summarise(["She ran."], ["eos"], SamplingSettings(t, 0, **fields))
        return dataclasses.replace(base, distinct_2=d2, grammatical=g, grammatical_se=0.01)

    curve = [row(0.5, 0.3, 1.0), row(1.0, 0.5, 0.8), row(2.0, 0.9, 0.0)]
    tried = [row(1.0, 0.4, 0.92, min_p=0.1), row(2.0, 0.6, 0.9, min_p=0.1),  # gains +0.02, +0.3
             row(1.0, 0.45, 0.9, min_p=0.2), row(2.0, 0.95, 0.5, min_p=0.2)]  # +0.05; outside the curve
    best = metrics.tuned(tried, curve)
    assert [(r.temperature, r.settings.min_p) for r in best] == [(1.0, 0.2), (2.0, 0.1)]
    assert metrics.tuned([tried[3]], curve) == [tried[3]]  # nothing comparable: the row it has


def test_sweep_groups_gives_each_name_its_rows(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    groups = {"cool": [SamplingSettings(0.5, 0)], "hot": [SamplingSettings(1.5, 0), SamplingSettings(2.0, 0)]}
    rows = metrics.sweep_groups(model, params, tiny_tok, "Once", groups, seeds=2, max_new_tokens=5, progress=False)
    assert {name: [r.settings for r in rs] for name, rs in rows.items()} == groups
