"""The grammar as a prefix oracle: ``corpus.valid_next_tokens`` knows, at every step, which tokens keep
a text on the way to a grammatical story. Checked against ``is_grammatical`` (sentences and mutated
sentences), against the tokens of generated stories, and by random walks that may only take valid tokens."""

import random

import pytest

from txtgen_nb import corpus
from txtgen_nb.api import DEMO_DIR
from txtgen_nb.tokenizer import load_tokenizer, special_tokens


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(DEMO_DIR / "tokenizer.json")


def test_every_token_of_a_generated_story_is_valid_and_the_story_may_end_only_between_sentences(tok):
    eos = special_tokens(tok).eos
    for story in corpus.generate_stories(12, seed=3):
        ids = tok.encode(story).ids
        for k in range(len(ids) + 1):
            text = tok.decode(ids[:k])
            valid = corpus.valid_next_tokens(tok, text)
            if k < len(ids):
                assert ids[k] in valid, f"{tok.decode([ids[k]])!r} after {text[-60:]!r}"
            assert (eos in valid) == (k > 0 and text.endswith((".", "!", "?", '"')) and any(
                " ".join(corpus.split_sentences(story)[:n]) == text for n in range(1, 40))), text[-60:]
        assert eos in corpus.valid_next_tokens(tok, story)


def test_any_character_prefix_of_a_story_reads_and_a_wrong_character_does_not():
    rng = random.Random(0)
    for story in corpus.generate_stories(20, seed=4):
        cut = rng.randrange(1, len(story))
        assert corpus.story_prefix_states(story[:cut]), story[:cut]
        assert not corpus.story_prefix_states(story[:cut] + "#"), story[:cut]
    assert corpus.story_prefix_states("") == {((), "")}
    assert corpus.story_prefix_states("Once upon a ti") == {(("Once", "upon", "a"), " ti")}
    assert not corpus.story_prefix_states("once upon a time")  # a story starts with a capital
    assert not corpus.story_prefix_states("Once  upon")  # words are joined by one space


def _mutate(words: list[str], rng: random.Random, vocabulary: list[str]) -> list[str]:
    out = list(words)
    kind = rng.randrange(5)
    if kind == 1:
        out[rng.randrange(len(out))] = rng.choice(vocabulary)
    elif kind == 2 and len(out) > 2:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    elif kind == 3 and len(out) > 2:
        del out[rng.randrange(len(out))]
    elif kind == 4:
        out = [{"a": "an", "an": "a"}.get(w, w) for w in out]
    return out


def test_a_text_may_end_exactly_when_is_grammatical_accepts_it(tok):
    """EOS is valid after a sentence iff ``is_grammatical`` accepts it: on generated sentences and on
    mutations of them (a word replaced, two swapped, one dropped, a/an swapped, the capital lost)."""
    eos = special_tokens(tok).eos
    vocabulary = sorted(corpus.vocabulary()) + [",", ".", "!", "?", '"']
    verdicts = {True: 0, False: 0}
    for i in range(1200):
        rng = random.Random(i)
        sentence = corpus.generate_sentence(rng.choice(corpus.SENTENCE_TYPES), rng)
        text = corpus._finish(_mutate(corpus.tokenize(sentence), rng, vocabulary))
        if i % 7 == 0:
            text = text[0].lower() + text[1:]
        grammatical = corpus.is_grammatical(text)
        assert (eos in corpus.valid_next_tokens(tok, text)) == grammatical, text
        verdicts[grammatical] += 1
    assert min(verdicts.values()) > 300, verdicts  # both kinds of sentence were tried


def test_random_walks_on_valid_tokens_never_get_stuck_and_write_grammatical_sentences(tok):
    eos = special_tokens(tok).eos
    rng = random.Random(5)
    ended = 0
    for _ in range(12):
        ids: list[int] = []
        for _ in range(120):
            valid = corpus.valid_next_tokens(tok, tok.decode(ids))
            assert valid, f"no way on from {tok.decode(ids)!r}"
            token = eos if eos in valid and rng.random() < 0.3 else rng.choice(sorted(valid))
            if token == eos:
                ended += 1
                break
            ids.append(token)
        sentences = corpus.complete_sentences(tok.decode(ids))
        assert all(corpus.is_grammatical(s) for s in sentences), sentences
    assert ended > 0


def test_the_token_layer_agrees_with_reading_the_text(tok):
    """A token is valid exactly when the text with it still reads as a story's start."""
    rng = random.Random(6)
    vocab = [i for i in range(tok.get_vocab_size()) if tok.decode([i])]
    for story in corpus.generate_stories(6, seed=7):
        ids = tok.encode(story).ids
        text = tok.decode(ids[: rng.randrange(len(ids))])
        valid = corpus.valid_next_tokens(tok, text)
        for token in rng.sample(vocab, 300) + sorted(valid):
            with_token = tok.decode(tok.encode(text).ids + [token])
            assert (token in valid) == bool(corpus.story_prefix_states(with_token)), (text[-40:], token)


def test_text_off_the_grammar_has_no_valid_token(tok):
    assert corpus.valid_next_tokens(tok, "The capital of France is") == set()
    assert corpus.valid_next_tokens(tok, "Once upon a time, a little girl named Lily lived in an park.") == set()
