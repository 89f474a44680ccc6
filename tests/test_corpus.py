"""The story grammar: deterministic generation, size, recognition and pronoun consistency."""

from __future__ import annotations

import random
import re
import time

import pytest

from txtgen_nb import corpus


@pytest.fixture(scope="module")
def stories() -> list[corpus.Story]:
    rng = random.Random(123)
    return [corpus.tell_story(rng) for _ in range(300)]


def test_same_seed_same_stories_and_different_seed_different():
    assert corpus.generate_stories(20, seed=1) == corpus.generate_stories(20, seed=1)
    assert corpus.generate_stories(20, seed=1) != corpus.generate_stories(20, seed=2)


def test_grammar_is_large_enough():
    assert len(corpus.STORY_SHAPES) >= 30
    assert len(corpus.vocabulary()) >= 1500


def test_stories_are_short_and_start_with_an_opening():
    texts = corpus.generate_stories(200, seed=0)
    lengths = [len(t.split()) for t in texts]
    assert 35 <= min(lengths) and max(lengths) <= 150
    assert sum(t.startswith("Once upon a time, there was a") for t in texts) > 20
    assert len({t.split(",")[0] for t in texts}) > 5


def test_every_generated_sentence_is_grammatical(stories):
    sentences = [s for story in stories for s in corpus.split_sentences(story.text)]
    assert len(sentences) > 2000
    bad = [s for s in sentences if not corpus.is_grammatical(s)]
    assert not bad, bad[:5]
    assert corpus.grammatical_rate([s.text for s in stories]) == 1.0


def test_word_salad_is_rejected(stories):
    rng = random.Random(0)
    sentences = [s for story in stories[:100] for s in corpus.split_sentences(story.text)]
    salad = []
    for sentence in sentences:
        tokens = corpus.tokenize(sentence)
        rng.shuffle(tokens)
        salad.append(" ".join(tokens))
    accepted = sum(corpus.is_grammatical(s) for s in salad)
    assert accepted < 0.05 * len(salad)


@pytest.mark.parametrize("sentence", [
    '"Can we play?" asked Lily.',
    "Once upon a time, there was a little girl named Lily.",
    "She loved to play outside.",
    'He said, "I am so happy."',
    "A little owl was stuck in a tree.",
])
def test_known_sentences_are_grammatical(sentence):
    assert corpus.is_grammatical(sentence)


@pytest.mark.parametrize("sentence", [
    "", "she loved to play outside.", "She loved to play outside", "A little owl was stuck in an tree.",
    "She were happy.", '"Can we play." asked Lily.', "Lily Lily Lily.", "She loved to 42 outside.",
])
def test_broken_sentences_are_not(sentence):
    assert not corpus.is_grammatical(sentence)


def test_pronouns_stay_consistent_within_a_story(stories):
    forms = {"she": {"she", "her"}, "he": {"he", "him", "his"}}
    for story in stories:
        used = {w.lower() for w in re.findall(r"[A-Za-z]+", story.text)}
        cast_pronouns = {c.pronoun for c in story.cast.values()}
        for pronoun, words in forms.items():
            if pronoun not in cast_pronouns:
                assert not used & words, (story.text, story.cast)
        hero = story.cast["H"]
        assert hero.name in story.text


def test_split_sentences_keeps_dialogue_with_its_speaker():
    text = '"Can we play?" asked Lily. She smiled. Tom said, "Yes!" "Hooray!" said Lily. Then she'
    assert corpus.split_sentences(text) == [
        '"Can we play?" asked Lily.', "She smiled.", 'Tom said, "Yes!"', '"Hooray!" said Lily.', "Then she",
    ]
    assert corpus.complete_sentences(text)[-1] == '"Hooray!" said Lily.'
    assert corpus.complete_sentences('She smiled. "Can we play?"') == ["She smiled."]


def test_grammatical_rate_ignores_the_trailing_incomplete_sentence():
    assert corpus.grammatical_rate("She loved to play outside. Lily Lily") == 1.0
    assert corpus.grammatical_rate(["She loved to play outside.", "Lily Lily."]) == 0.5
    assert corpus.grammatical_rate("no sentence here") == 0.0


def test_recogniser_is_fast(stories):
    sentences = [s for story in stories for s in corpus.split_sentences(story.text)][:1000]
    start = time.perf_counter()
    for s in sentences:
        corpus.is_grammatical(s)
    assert time.perf_counter() - start < 2.0
