"""Streaming: the compiled decode loop in chunks, text pieces per row, stop strings that end the
loop early, a stop request, and the CLI printing as it goes."""

import io

import numpy as np
import pytest

from txtgen_nb import generate, generate_stream, generate_text, load_model_and_tokenizer, stream_text
from txtgen_nb.cli import main
from txtgen_nb import generation
from txtgen_nb.generation import Stream, _held_back, compiled_programs

PROMPTS = ["Once upon", "The quick brown fox jumps"]
STEP_BY_STEP = 1e-9  # chunk_seconds so small that every chunk after the first is one step


@pytest.fixture(autouse=True)
def _no_measured_speeds(monkeypatch):
    """Every test starts as the very first stream: a first chunk of ``FIRST_CHUNK`` steps."""
    monkeypatch.setattr(generation, "_STEP_SECONDS", {})


@pytest.fixture(scope="module")
def demo():
    return load_model_and_tokenizer()


def test_pieces_join_to_the_result_and_equal_one_call(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    whole = generate(model, params, tiny_tok, PROMPTS, max_new_tokens=20, temperature=1.0, top_k=0, seed=[3, 4],
                     trace=True)
    stream = generate_stream(model, params, tiny_tok, PROMPTS, max_new_tokens=20, temperature=1.0, top_k=0,
                             seed=[3, 4], trace=True, chunk_seconds=STEP_BY_STEP)
    chunks = list(stream)
    assert len(chunks) > 10  # the first chunk of 4 steps, then one step a chunk
    assert all(len(pieces) == 2 for pieces in chunks)
    for b in range(2):
        assert "".join(pieces[b] for pieces in chunks) == whole.continuations[b]
    result = stream.result
    assert result.texts == whole.texts and result.new_token_ids == whole.new_token_ids
    assert result.stop_reasons == whole.stop_reasons
    np.testing.assert_array_equal(result.trace.top_ids, whole.trace.top_ids)
    np.testing.assert_allclose(result.trace.logsumexp, whole.trace.logsumexp, rtol=1e-6)


def test_chunks_follow_the_last_measured_speed(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    first = generate_stream(model, params, tiny_tok, "Once upon", max_new_tokens=40, chunk_seconds=10.0)
    assert next(iter(first)) is not None and first.steps_done == Stream.FIRST_CHUNK  # nothing measured yet
    generate(model, params, tiny_tok, "Once upon", max_new_tokens=40)  # compiled by now: measures the speed
    again = generate_stream(model, params, tiny_tok, "Once upon", max_new_tokens=40, chunk_seconds=10.0)
    assert len(list(again)) == 1  # 10 s at the measured speed: every step in one chunk


def test_chunk_sizes_never_recompile(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    list(generate_stream(model, params, tiny_tok, "Once upon", max_new_tokens=12, chunk_seconds=STEP_BY_STEP))
    compiled = compiled_programs()
    for seconds in (1e-4, 0.05, 10.0):
        list(generate_stream(model, params, tiny_tok, "Once upon", max_new_tokens=12, chunk_seconds=seconds))
    assert compiled_programs() == compiled


def test_stop_string_ends_the_loop_where_it_appears(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    kwargs = dict(max_new_tokens=40, temperature=1.0, top_k=0, seed=7)
    free = generate(model, params, tiny_tok, "Once upon", **kwargs)
    ids = free.new_token_ids[0]
    assert len(ids) > 16  # the test needs a long free run
    stop = tiny_tok.decode(ids[10:12])  # text that appears by the 12th new token, or earlier
    assert stop.strip() and stop in free.continuations[0]
    stream = generate_stream(model, params, tiny_tok, "Once upon", stop=stop, chunk_seconds=STEP_BY_STEP, **kwargs)
    pieces = [p[0] for p in stream]
    result = stream.result
    cut = free.continuations[0].index(stop)
    assert result.continuations == [free.continuations[0][:cut]] == ["".join(pieces)]
    assert result.stop_reasons == ["stop"]
    assert stream.steps_done <= 12 < len(ids)  # the loop ended at the stop string
    assert generate(model, params, tiny_tok, "Once upon", stop=stop, **kwargs).texts == result.texts


def test_stop_request_interrupts_after_the_current_chunk(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    full = generate(model, params, tiny_tok, "Once upon", max_new_tokens=30, temperature=1.0, top_k=0, seed=7)
    assert len(full.new_token_ids[0]) > Stream.FIRST_CHUNK + 2
    stream = generate_stream(model, params, tiny_tok, "Once upon", max_new_tokens=30, temperature=1.0, top_k=0,
                             seed=7, chunk_seconds=STEP_BY_STEP)
    for count, _pieces in enumerate(stream):
        if count == 1:
            stream.stop()
            stopped_at = stream.steps_done
    result = stream.result
    assert result.stop_reasons == ["interrupted"]
    assert len(result.new_token_ids[0]) == stopped_at < len(full.new_token_ids[0])
    assert full.new_token_ids[0][:stopped_at] == result.new_token_ids[0]


def test_result_before_the_end_is_an_error(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    with pytest.raises(ValueError, match="not finished"):
        generate_stream(model, params, tiny_tok, "Hi", max_new_tokens=3).result


@pytest.mark.parametrize("text,stops,held", [
    ("plain", [], 0),
    ("broken \ufffd", [], 1),  # an unfinished UTF-8 character may still complete
    ("the e", ["end"], 1),
    ("the en", ["end", "\n\n"], 2),
    ("line\n", ["\n\n"], 1),
    ("the end", ["xyz"], 0),
])
def test_text_that_may_still_change_is_held_back(text, stops, held):
    assert _held_back(text, stops) == held


def test_stream_text_joins_to_generate_text(demo):
    model, params, tok, _ = demo
    pieces = list(stream_text(model, params, tok, "Once upon a time", max_length=30, rng_seed=5))
    assert pieces[0] == "Once upon a time" and len(pieces) >= 2
    assert "".join(pieces) == generate_text(model, params, tok, "Once upon a time", max_length=30, rng_seed=5)


class _Recorder(io.StringIO):
    """stdout that remembers what each flush sent."""

    def __init__(self):
        super().__init__()
        self.flushed: list[str] = []

    def flush(self):
        self.flushed.append(self.getvalue())


def test_cli_prints_the_text_as_it_is_generated(monkeypatch):
    monkeypatch.setattr(Stream, "FIRST_CHUNK", 2)
    out = _Recorder()
    monkeypatch.setattr("sys.stdout", out)
    assert main(["--prompt", "Once upon a time", "--max-length", "60", "--seed", "1"]) == 0
    text = out.getvalue()
    body = text.split("Generated text:\n")[1].split("\n", 1)[1]  # after the header's rule
    story = body.split("\n[")[0]
    assert story.startswith("Once upon a time") and len(story) > len("Once upon a time") + 10
    partial = [f for f in out.flushed if "Generated text:" in f and "new tokens;" not in f]
    assert partial, "nothing was flushed between the header and the end of the text"
    grown = [f.split("Generated text:\n")[1].split("\n", 1)[1] for f in partial]
    assert any("Once upon a time" in g and len(g) < len(story) for g in grown)  # seen before the end


def test_stop_during_a_long_prompt_ends_before_the_next_chunk(tiny_tok):
    """A Stop asked while the prompt runs: prefill ends after the chunk in flight, no step is
    decoded, and the row is "interrupted"."""
    from conftest import tiny_config
    from flax import nnx
    from txtgen_nb.model import Transformer

    model = Transformer(tiny_config(max_len=512), rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    prompt = "The quick brown fox jumps over the lazy dog. " * 30
    asked = []

    def stop_on_second_ask():
        asked.append(1)
        return len(asked) >= 2

    stream = generate_stream(model, params, tiny_tok, prompt, max_new_tokens=20)
    a = stream.request.arrays
    _, _, finished = generation.prefill(nnx.graphdef(model), params, model.config, a,
                                        max_steps=stream.request.max_steps, should_stop=stop_on_second_ask)
    assert not finished and len(asked) == 2  # one chunk ran, of several
    prompt_len = a["prompt"].shape[1]
    assert len(generation.prefill_plan(prompt_len, int(a["pad"].min()), generation.prefill_sizes(1, prompt_len))) > 2
    stream.stop()
    assert list(stream) == []
    assert stream.result.stop_reasons == ["interrupted"] and stream.result.new_token_ids == [[]]
    assert stream.result.texts == [prompt]


def test_a_stream_runs_once_and_says_so(tiny_model, tiny_tok):
    model, params, _ = tiny_model
    stream = generate_stream(model, params, tiny_tok, "Once upon", max_new_tokens=5)
    pieces = list(stream)
    assert "".join(p[0] for p in pieces) == stream.result.continuations[0]
    with pytest.raises(ValueError, match="runs once"):
        list(stream)
