"""The bundled demo model: loads, tells grammatical stories at low temperature, runs the quick start."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from txtgen_nb import SamplingSettings, demo_checkpoint, generate, load_model_and_tokenizer
from txtgen_nb.api import DEMO_DIR
from txtgen_nb.corpus import complete_sentences, grammatical_rate

from conftest import REPO


@pytest.fixture(scope="module")
def demo():
    return load_model_and_tokenizer()


def test_demo_is_small_and_in_the_seed_layout():
    assert demo_checkpoint() == DEMO_DIR / "best_checkpoint"
    assert (DEMO_DIR / "tokenizer.json").is_file() and (DEMO_DIR / "model_config.json").is_file()
    size = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert size < 20 * 2**20


def test_demo_tells_grammatical_stories_at_low_temperature(demo):
    model, params, tokenizer, config = demo
    result = generate(model, params, tokenizer, "", num_samples=16, temperature=0.3, top_k=0, seed=0,
                      max_new_tokens=config.max_len)
    assert sum(len(complete_sentences(t)) for t in result.texts) >= 16 * 3
    assert grammatical_rate(result.texts) >= 0.9
    assert result.stop_reasons.count("eos") >= 14


def test_demo_greedy_story_starts_well(demo):
    model, params, tokenizer, _ = demo
    text = generate(model, params, tokenizer, "Once upon a time", temperature=0.0).texts[0]
    first = complete_sentences(text)[0]
    assert first.startswith("Once upon a time, there was") and grammatical_rate(first) == 1.0


def test_quick_start_on_the_demo(tmp_path):
    shutil.copytree(DEMO_DIR, tmp_path / "output")
    result = subprocess.run([sys.executable, str(REPO / "generate_text.py"), "--checkpoint", "output/best_checkpoint",
                             "--prompt", "Once upon a time"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Vocab size: 2048" in result.stdout and "Layers: 4" in result.stdout
    assert result.stdout.split("Generated text:")[1].split("─" * 80)[1].strip().startswith("Once upon a time")


def test_cli_without_checkpoint_uses_demo():
    result = subprocess.run([sys.executable, str(REPO / "generate_text.py"), "--prompt", "Once upon a time",
                             "--max-length", "10"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "No --checkpoint given: using the bundled demo model" in result.stdout


def test_min_new_tokens_keeps_a_story_going_past_its_end(demo):
    model, params, tokenizer, _ = demo
    rows = [SamplingSettings(0.0, 0), SamplingSettings(0.0, 0, min_new_tokens=90)]
    result = generate(model, params, tokenizer, ["Once upon a time"] * 2, settings=rows, max_new_tokens=110,
                      trace=True)
    natural, held = (len(ids) for ids in result.new_token_ids)
    assert result.stop_reasons[0] == "eos" and natural < 90 <= held  # greedy ends at EOS, unless told not yet
    assert result.new_token_ids[1][:natural - 1] == result.new_token_ids[0][:natural - 1]  # the same story until then
    trace, eos = result.trace, list(result.trace.stop_ids)
    early, late = trace.stages(1, 89).min_new_tokens, trace.stages(1, 90).min_new_tokens  # the replay masks as the loop
    assert not np.isfinite(np.asarray(early)[eos]).any() and np.isfinite(np.asarray(late)[eos]).all()
