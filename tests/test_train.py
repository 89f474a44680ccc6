"""The trainer: a tiny run learns and writes a loadable run folder; resume; crash-safe saves; CLI errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from txtgen_nb.train import MIN_VOCAB_SIZE, TrainConfig, make_rows, train, train_tokenizer

TINY = dict(num_stories=400, steps=30, batch_size=16, lr=3e-3, warmup_steps=5, vocab_size=300, d_model=32,
            layers=1, heads=2, max_len=32, eval_every=10, seed=0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    result = train(out=str(out), progress=False, dtype="bfloat16", **TINY)
    return out, result


def test_tokenizer_round_trips_any_text():
    tok = train_tokenizer(["Once upon a time, there was a little girl named Lily."] * 5, 300)
    for text in ["Once upon a time", "naïve café ✨ 😀\n\ttabs  and  spaces", ""]:
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text
    assert [tok.token_to_id(t) for t in ("<pad>", "<unk>", "<bos>", "<eos>")] == [0, 1, 2, 3]


def test_make_rows_cuts_long_documents_with_one_token_overlap():
    rows = make_rows([[5, 6], list(range(10, 17))], max_len=4, bos=2, eos=3, pad=0)
    assert rows.tolist() == [[2, 5, 6, 3, 0], [2, 10, 11, 12, 13], [13, 14, 15, 16, 3]]


def test_tiny_model_learns_and_writes_the_run_folder(tiny_run):
    out, result = tiny_run
    for name in ("tokenizer.json", "model_config.json", "best_checkpoint", "train_log.json", "loss_curve.png",
                 "train_state"):
        assert (out / name).exists(), name
    log = json.loads((out / "train_log.json").read_text())
    assert [s for s, _ in log["eval"]] == [10, 20, 30]
    assert log["eval"][-1][1] < log["eval"][0][1] - 0.3
    assert np.mean([l for _, l in log["train"][-5:]]) < np.mean([l for _, l in log["train"][:5]]) - 0.5
    assert result.best_eval_loss == min(l for _, l in log["eval"])
    assert result.steps == 30 and result.tokens_per_second > 0
    assert log["flags"]["d_model"] == 32 and log["model_config"]["dtype"] == "float32"


def test_run_folder_loads_and_generates(tiny_run):
    from txtgen_nb.checkpoint import load_run
    from txtgen_nb.generation import generate

    out, _ = tiny_run
    model, params, tokenizer, config = load_run(out / "best_checkpoint")
    assert config.d_model == 32 and config.max_len == 32
    result = generate(model, params, tokenizer, ["Once upon a time"], max_new_tokens=8, seed=0)
    assert result.texts[0].startswith("Once upon a time")


def test_resume_continues_to_the_new_step_count(tiny_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    result = train(out=str(out), steps=40, eval_every=10, resume=True, progress=False)
    log = json.loads((out / "train_log.json").read_text())
    assert [s for s, _ in log["train"]] == list(range(1, 41))
    assert [s for s, _ in log["eval"]] == [10, 20, 30, 40]
    assert result.steps == 40 and log["flags"]["d_model"] == 32
    assert result.best_eval_loss <= tiny_run[1].best_eval_loss


def test_crash_while_saving_a_new_best_keeps_the_previous_one(tiny_run, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    from txtgen_nb.checkpoint import load_run

    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    _, before, _, _ = load_run(out / "best_checkpoint")

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash mid-save")

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(out=str(out), steps=40, eval_every=10, resume=True, progress=False)
    monkeypatch.undo()
    _, after, _, _ = load_run(out / "best_checkpoint")
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name.endswith(".saving")]


@pytest.mark.parametrize("kwargs, error", [
    (dict(heads=3, d_model=32), ValueError),
    (dict(vocab_size=MIN_VOCAB_SIZE - 1), ValueError),
    (dict(steps=0), ValueError),
    (dict(lr=-1.0), ValueError),
    (dict(text=("does/not/exist.txt",)), FileNotFoundError),
])
def test_bad_settings_raise_before_training(kwargs, error, tmp_path):
    with pytest.raises(error):
        train(TrainConfig(out=str(tmp_path / "run")), progress=False, **kwargs)
    assert not (tmp_path / "run").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "txtgen_nb.train", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_bad_input_gives_a_one_line_error_and_exit_code_2(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n\n")
    out = str(tmp_path / "run")
    cases = [
        (["--text", str(tmp_path / "missing.txt")], "not found"),
        (["--text", str(empty)], "empty"),
        (["--vocab-size", "100"], "too small"),
        (["--d-model", "64", "--heads", "5"], "must divide"),
        (["--steps", "0"], "positive"),
        (["--lr", "0"], "positive"),
        (["--resume"], "nothing to resume"),
        (["--steps", "ten"], "invalid int"),
    ]
    for args, phrase in cases:
        proc = _cli("--out", out, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], (args, proc.stderr)
    assert not Path(out).exists()


def test_trains_on_your_own_text(tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("\n\n".join(f"The cat number {i} sat on the mat and purred." for i in range(40)))
    result = train(out=str(tmp_path / "run"), text=[str(text)], progress=False,
                   **{**TINY, "steps": 10, "eval_every": 10})
    assert (result.checkpoint_dir / "_METADATA").exists() or any(result.checkpoint_dir.iterdir())
    assert result.log["num_documents"] == 40


def test_progress_bar_and_final_line_report_the_same_best_loss(tmp_path, capsys):
    from txtgen_nb.train import main

    out = tmp_path / "run"
    flags = {"--num-stories": 400, "--steps": 20, "--batch-size": 16, "--warmup-steps": 5, "--vocab-size": 300,
             "--d-model": 32, "--layers": 1, "--heads": 2, "--max-len": 32, "--eval-every": 10}
    assert main(["--out", str(out), *[str(x) for item in flags.items() for x in item]]) == 0
    captured = capsys.readouterr()
    bar_best = re.findall(r"best_eval=([0-9.]+)", captured.err)[-1]  # the bar's last state
    final_best = re.search(r"best held-out loss ([0-9.]+)", captured.out).group(1)
    evals = [loss for _, loss in json.loads((out / "train_log.json").read_text())["eval"]]
    assert evals[-1] == min(evals)  # the last evaluation set the best: the case the bar used to miss
    assert bar_best == final_best == f"{min(evals):.3f}"
