"""Quality and diversity measures, and the batched sweep behind notebook 05."""

from __future__ import annotations

import pytest

from txtgen_nb import generate, metrics, viz
from txtgen_nb.corpus import generate_stories


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
    row = metrics.summarise([*stories, salad + "."], ["eos", "eos", "eos", "max_new_tokens"], temperature=1.0,
                            top_p=1.0, top_k=0)
    assert row.sentences > 3 and 0.8 < row.grammatical < 1.0  # every story sentence, not the salad
    assert row.eos_share == 0.75 and row.samples == 4


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
    assert len(table.splitlines()) == 2 + len(rows) and "grammatical" in table
    assert viz.sweep_view(rows).axes[0].get_title() == "grammatical sentences"
    with pytest.raises(ValueError, match="seeds"):
        metrics.sweep(model, params, tiny_tok, "Once", temperatures=[1.0], seeds=0)
