"""The command line through subprocess: banner, options, and one-line errors without tracebacks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BIN = Path(sys.executable).parent


def run_cli(args, cwd, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "generate_text.py"), *args], cwd=cwd, input=stdin or "",
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def workdir(tiny_run, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(tiny_run, root / "output")
    return root


def test_banner_matches_the_seed(workdir):
    result = run_cli(["--checkpoint", "output/best_checkpoint", "--prompt", "Once upon a time"], workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["=" * 80, " " * 30 + "TEXT GENERATION" + " " * 35, "=" * 80]
    expected = ["Backend: CPU", "Loading tokenizer from: output/tokenizer.json",
                "Loading config from: output/model_config.json", "Creating model...",
                "Loading checkpoint from: output/best_checkpoint", "✓ Model loaded successfully!",
                "  Vocab size: 300", "  Max length: 32", "  Model size: 32", "  Layers: 2", "", "=" * 80,
                "GENERATING TEXT", "=" * 80, "Prompt: Once upon a time"]
    assert lines[4:4 + len(expected)] == expected
    rest = lines[4 + len(expected):]
    assert rest[0].startswith("Prompt tokens: ") and int(rest[0].split(": ")[1]) > 0
    allowed = 32 - int(rest[0].split(": ")[1])  # the tiny model's context is 32 tokens
    assert rest[1:5] == [f"Max new tokens: 100 (the model's context of 32 allows {allowed} after this prompt)",
                         "Temperature: 0.8", "Top-k: 50", "Top-p: disabled"]
    assert rest[6:9] == ["─" * 80, "Generated text:", "─" * 80]
    assert rest[9].startswith("Once upon a time")
    assert "Traceback" not in result.stderr


def test_options_shown_and_newline_escape(workdir):
    result = run_cli(["--checkpoint", "output/best_checkpoint", "--prompt", "Person A: Hi\\nPerson B:",
                      "--top-k", "0", "--top-p", "0.9", "--temperature", "0", "--max-length", "5"], workdir)
    assert result.returncode == 0, result.stderr
    assert "Prompt: Person A: Hi\nPerson B:" in result.stdout
    assert "Top-k: disabled" in result.stdout and "Top-p: 0.9" in result.stdout
    assert "Temperature: 0.0 (greedy)" in result.stdout


def test_same_seed_same_text(workdir):
    args = ["--checkpoint", "output/best_checkpoint", "--prompt", "Hello", "--max-length", "10", "--seed", "7",
            "--top-k", "0", "--temperature", "1.5"]
    first, second = run_cli(args, workdir), run_cli(args, workdir)
    text = lambda r: r.stdout.split("Generated text:")[1].split("tokens in")[0]  # noqa: E731
    assert text(first) == text(second)


def test_num_samples_and_tokenizer_path(workdir):
    result = run_cli(["--checkpoint", "output/best_checkpoint", "--tokenizer-path", "output/tokenizer.json",
                      "--prompt", "Hi", "--num-samples", "3", "--max-length", "4"], workdir)
    assert result.returncode == 0, result.stderr
    for i in (1, 2, 3):
        assert f"Generated text {i}/3 (seed {41 + i}):" in result.stdout


def test_interactive_loop(workdir):
    result = run_cli(["--checkpoint", "output/best_checkpoint", "--interactive", "--max-length", "3"], workdir,
                     stdin="Hello\nOnce upon\nquit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("GENERATING TEXT") == 2
    assert result.stdout.count("✓ Model loaded successfully!") == 1


def test_max_length_within_the_context_is_the_seed_line(workdir):
    result = run_cli(["--checkpoint", "output/best_checkpoint", "--prompt", "Hi", "--max-length", "5"], workdir)
    assert result.returncode == 0, result.stderr
    assert "\nMax new tokens: 5\n" in result.stdout


def test_no_prompt_and_no_terminal_is_an_argument_error(workdir):
    result = run_cli(["--checkpoint", "output/best_checkpoint"], workdir)  # empty stdin: nothing to read
    assert result.returncode == 2
    assert "error: the following arguments are required: --prompt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    done = subprocess.run([sys.executable, str(REPO / "generate_text.py"), "--checkpoint", "output/best_checkpoint"],
                          cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--prompt" in done.stderr


def test_prompts_piped_to_stdin_are_generated(workdir):
    result = run_cli(["--checkpoint", "output/best_checkpoint", "--max-length", "3"], workdir, stdin="Hello\nquit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Generated text:") == 1 and "Hello" in result.stdout


def test_cli_uses_the_api_loader_and_its_vocabulary_check(tiny_run, tmp_path):
    from tokenizers import Tokenizer

    shutil.copytree(tiny_run, tmp_path / "output")
    tok = Tokenizer.from_file(str(tmp_path / "output" / "tokenizer.json"))
    tok.add_tokens([f"extra{i}" for i in range(50)])
    tok.save(str(tmp_path / "output" / "tokenizer.json"))
    result = run_cli(["--checkpoint", "output/best_checkpoint", "--prompt", "Hi"], tmp_path)
    assert result.returncode == 1
    assert "vocab_size 300 is smaller than the tokenizer's 350 tokens" in result.stderr


def test_run_folder_note_and_hugging_face_folder(workdir, tmp_path):
    result = run_cli(["--checkpoint", "output", "--prompt", "Hi", "--max-length", "2"], workdir)
    assert result.returncode == 0, result.stderr
    assert "Note: output is a run folder; using its checkpoint output/best_checkpoint" in result.stdout
    import torch
    from test_import_hf import save_folder

    save_folder("gpt2", torch.bfloat16, False, {}, tmp_path / "gpt2")
    result = run_cli(["--checkpoint", "gpt2", "--prompt", "Hi", "--max-length", "3"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Loading config from: gpt2/config.json (Hugging Face GPT2LMHeadModel)" in result.stdout
    assert "Loading checkpoint from: gpt2/model.safetensors" in result.stdout and "Generated text:" in result.stdout


@pytest.mark.parametrize("args,fragment,code", [
    (["--temperature", "-1"], "argument --temperature: must be >= 0, got -1", 2),
    (["--top-p", "1.5"], "argument --top-p: must be between 0 and 1, got 1.5", 2),
    (["--top-k", "-5"], "argument --top-k: must be >= 0, got -5", 2),
    (["--max-length", "-1"], "argument --max-length: must be >= 0, got -1", 2),
    (["--temperature", "warm"], "argument --temperature: must be a number, got 'warm'", 2),
    (["--top-k", "2.5"], "argument --top-k: must be an integer, got '2.5'", 2),
    (["--temperature", "nan"], "argument --temperature: must be a finite number", 2),
    (["--seed", "abc"], "argument --seed: invalid int value: 'abc'", 2),
    (["--checkpoint", "missing/best_checkpoint"], "error: Checkpoint not found: missing/best_checkpoint", 1),
    (["--tokenizer-path", "nope.json"], "Could not find tokenizer.json (tried: nope.json)", 1),
])
def test_bad_arguments_one_line_error(workdir, args, fragment, code):
    base = {"--checkpoint": "output/best_checkpoint", "--prompt": "Hi"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    result = run_cli([x for pair in base.items() for x in pair], workdir)
    assert result.returncode == code
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("damage,fragment", [
    ("config", "model config is not valid JSON"),
    ("tokenizer", "tokenizer is not valid JSON"),
    ("checkpoint", "holds no Orbax checkpoint"),
    ("no_config", "Model config not found (tried:"),
])
def test_bad_run_folder_one_line_error(tiny_run, tmp_path, damage, fragment):
    shutil.copytree(tiny_run, tmp_path / "output")
    if damage == "config":
        (tmp_path / "output" / "model_config.json").write_text("{oops")
    elif damage == "tokenizer":
        (tmp_path / "output" / "tokenizer.json").write_text("")
    elif damage == "checkpoint":
        shutil.rmtree(tmp_path / "output" / "best_checkpoint")
        (tmp_path / "output" / "best_checkpoint").mkdir()
    else:
        (tmp_path / "output" / "model_config.json").unlink()
    result = run_cli(["--checkpoint", "output/best_checkpoint", "--prompt", "Hi"], tmp_path)
    assert result.returncode == 1
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_console_script_installed():
    assert shutil.which("txtgen-generate", path=str(BIN)), "pip install -e . should install txtgen-generate"


def test_run_in_subprocess_shows_output_and_errors(workdir, capsys):
    from txtgen_nb.cli import run_in_subprocess

    checkpoint = workdir / "output" / "best_checkpoint"
    run_in_subprocess(f'--checkpoint "{checkpoint}" --prompt "Hello" --max-length 3 --seed 1')
    out = capsys.readouterr().out
    assert out.startswith("$ python generate_text.py --checkpoint") and "✓ Model loaded successfully!" in out
    assert "exit status" not in out
    run_in_subprocess(f'--checkpoint "{checkpoint}" --prompt "Hello" --temperature -1')
    out = capsys.readouterr().out
    assert "--temperature: must be >= 0" in out and out.rstrip().endswith("[exit status 2]")
    assert "Traceback" not in out


def test_stop_strings_cut_the_text(workdir):
    result = run_cli(["--checkpoint", "output/best_checkpoint", "--prompt", "Hello", "--max-length", "30", "--seed", "7",
                      "--top-k", "0", "--temperature", "1.5", "--stop", " ", "--stop", "\\n"], workdir)
    assert result.returncode == 0, result.stderr
    assert "Stop: ' ', '\\n'" in result.stdout and "stopped at a stop string]" in result.stdout
    text = result.stdout.split("Generated text:")[1].split("─" * 80)[1].split("\n[")[0].strip("\n")
    assert text.startswith("Hello") and " " not in text[len("Hello"):] and "\n" not in text
