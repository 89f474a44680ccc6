"""Every command and snippet of the seed guide (docs/generate_text_guide.md) works verbatim."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO

GUIDE = REPO / "docs" / "generate_text_guide.md"
SHARED_SEED = REPO.parent / "shared" / "seed" / "000_275681734b286157.txt"
BASE = "python generate_text.py --checkpoint output/best_checkpoint --prompt Hello"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)


def commands() -> list[str]:
    """Standalone commands, and argument fragments (``--top-k 20``) appended to a base command."""
    found = []
    for block in blocks("bash"):
        if "<< 'EOF'" in block:
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("python generate_text.py") and "..." not in line:
                found.append(line)
            elif line.startswith("--"):
                found.append(f"{BASE} {line}")
    inline = re.findall(r"`(--[a-z-]+ [^`]+)`", GUIDE.read_text(encoding="utf-8"))
    return list(dict.fromkeys(found + [f"{BASE} {fragment}" for fragment in inline]))


def scripts() -> list[str]:
    return [block for block in blocks("bash") if "<< 'EOF'" in block]


def run_bash(script: str, cwd: Path, stdin: str = "Hello\nquit\n") -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", script], cwd=cwd, input=stdin, capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def workdir(tiny_run, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seed")
    shutil.copytree(tiny_run, root / "output")
    shutil.copy(REPO / "generate_text.py", root / "generate_text.py")
    return root


def test_guide_is_the_seed():
    if SHARED_SEED.exists():
        assert GUIDE.read_text(encoding="utf-8") == SHARED_SEED.read_text(encoding="utf-8")
    assert len(commands()) >= 35 and len(scripts()) == 2 and len(blocks("python")) == 1


@pytest.mark.slow
def test_every_command_works_verbatim(workdir):
    cmds = commands()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda c: run_bash(c, workdir), cmds))
    for cmd, result in zip(cmds, results):
        assert result.returncode == 0, f"{cmd}\n{result.stderr}"
        assert "✓ Model loaded successfully!" in result.stdout, cmd
        assert "Generated text:" in result.stdout, cmd
        assert "Traceback" not in result.stderr, cmd


@pytest.mark.slow
def test_batch_and_interactive_scripts(workdir):
    batch, interactive = scripts()
    result = run_bash(batch, workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Generating for prompt:") == 4
    assert result.stdout.count("Generated text:") == 4
    result = run_bash(interactive, workdir, stdin="Hello\nOnce upon a time\nquit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Generated text:") == 2
    assert (workdir / "batch_generate.sh").exists() and (workdir / "interactive_generate.sh").exists()


def test_python_api_snippet(workdir):
    (snippet,) = blocks("python")
    result = subprocess.run([sys.executable, "-c", snippet], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time")
