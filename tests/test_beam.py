"""Beam search with Hugging Face's semantics: the same hypotheses and scores as ``transformers``' own beam search
on the same weights (a Hugging Face GPT-2 and Llama folder loaded by our importers), and the search kept step by
step for the view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from txtgen_nb import load_model_and_tokenizer
from txtgen_nb.beam import beam_search, beam_search_ids

from test_import_hf import save_folder
from test_viz import texts_outside

PROMPT = [5, 17, 42, 7, 99]


def likely_token(reference, ids: list[int], step: int) -> int:
    """The greedy token at ``step``: as EOS, it makes hypotheses end early (at step 0: at once)."""
    reference.generation_config.eos_token_id = reference.generation_config.pad_token_id = None
    with torch.no_grad():
        out = reference.generate(torch.tensor([ids]), max_new_tokens=step + 1, do_sample=False)
    return int(out[0, len(ids) + step])


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    reference = save_folder(request.param, torch.float32, False, {}, folder)
    model, params, _tokenizer, _config = load_model_and_tokenizer(folder)
    return reference, model, params


@pytest.mark.parametrize("beams,length_penalty,early_stopping,eos_after", [
    (4, 1.0, False, 0), (4, 1.0, False, 3), (3, 2.0, True, 2), (5, 0.0, "never", 4), (4, -1.0, False, 1),
    (2, 1.0, False, None),
])
def test_the_same_hypotheses_and_scores_as_transformers(pair, beams, length_penalty, early_stopping, eos_after):
    reference, model, params = pair
    eos = 299 if eos_after is None else likely_token(reference, PROMPT, eos_after)
    reference.generation_config.eos_token_id = eos
    reference.generation_config.pad_token_id = eos
    with torch.no_grad():
        out = reference.generate(torch.tensor([PROMPT]), num_beams=beams, num_return_sequences=beams,
                                 max_new_tokens=12, length_penalty=length_penalty, early_stopping=early_stopping,
                                 do_sample=False, output_scores=True, return_dict_in_generate=True)
    hypotheses, steps = beam_search_ids(model, params, PROMPT, stop_ids=[eos], num_beams=beams, max_new_tokens=12,
                                        length_penalty=length_penalty, early_stopping=early_stopping)
    expected = []
    for seq, score in zip(out.sequences[:, len(PROMPT):].tolist(), out.sequences_scores.tolist()):
        cut = seq.index(eos) + 1 if eos in seq else len(seq)
        expected.append((seq[:cut], score))
    assert [ids for ids, _ in hypotheses] == [ids for ids, _ in expected]
    np.testing.assert_allclose([s for _, s in hypotheses], [s for _, s in expected], rtol=1e-4, atol=1e-4)
    if eos_after == 0:  # the likeliest first token ends a hypothesis at once: filed at step 0 (kept if good enough)
        assert eos in [token for _parent, token, _score in steps[0].ended]
    assert len(steps) == max(len(ids) for ids, _ in hypotheses) or early_stopping is not True


def test_the_demo_search_keeps_its_steps_and_refuses_bad_arguments():
    model, params, tok, _ = load_model_and_tokenizer()
    result = beam_search(model, params, tok, "Once upon a time", num_beams=4, max_new_tokens=30)
    assert result.text.startswith("Once upon a time") and result.token_ids == result.hypotheses[0][0]
    assert result.score == max(s for _, s in result.hypotheses)
    for step in result.steps:
        assert step.tokens.shape == step.parents.shape == step.scores.shape == (4,)
        assert np.all(np.diff(step.scores) <= 1e-6)  # best first
    for bad, match in ((dict(num_beams=0), "num_beams"), (dict(early_stopping="soon"), "early_stopping"),
                       (dict(max_new_tokens=500), "context")):
        with pytest.raises(ValueError, match=match):
            beam_search(model, params, tok, "Once upon a time", **{"num_beams": 2, **bad})


def test_degeneration_counts_loops_and_the_views_draw_them():
    from txtgen_nb import metrics, viz

    assert metrics.ends_in_loop("she ran home. she ran home. she ran home.")
    assert not metrics.ends_in_loop("she ran home. she ran home.")  # said twice: not yet a loop
    assert metrics.ends_in_loop("and then the the the") and not metrics.ends_in_loop("the cat sat on the mat")
    d = metrics.degeneration(["a b a b a b", "one two three four"])
    assert d.loops == 0.5 and d.texts == 2 and d.loops_se == pytest.approx(0.5)
    fig = viz.degeneration_view({"greedy": d, "human": metrics.degeneration(["x y z"])}, "t",
                                paper=metrics.HOLTZMAN_REPETITION)
    bars = [patch.get_width() for patch in fig.axes[0].patches]
    assert bars == [0.5, 0.0] and "black ticks" in fig.get_suptitle() and not texts_outside(fig)


def test_the_beam_view_follows_the_best_hypothesis():
    from txtgen_nb import viz

    model, params, tok, _ = load_model_and_tokenizer()
    result = beam_search(model, params, tok, "Once upon a time, there was a little girl named Lily. She",
                         num_beams=3, max_new_tokens=12)
    path = result.best_path()
    assert len(path) == len(result.token_ids) and path[-1] == (len(result.token_ids) - 1, -1)
    for (step, beam), token in zip(path[:-1], result.token_ids):  # the path's beams took the best text's tokens
        assert int(result.steps[step].tokens[beam]) == token
    fig = viz.beam_view(result, tok)
    assert f"score {result.score:.2f}" in fig.axes[0].get_title(loc="left") and not texts_outside(fig)
