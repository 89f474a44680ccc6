"""A class leaves the checkout clean: `make lab` works on a git-ignored copy of the tutorials."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A fresh git repository with the project's Makefile, .gitignore and tutorials, committed."""
    repo = tmp_path / "checkout"
    (repo / "notebooks").mkdir(parents=True)
    for name in ("Makefile", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    for name in NOTEBOOKS:
        shutil.copy(REPO / "notebooks" / name, repo / "notebooks" / name)
    identity = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "."], [*identity, "commit", "-qm", "c"]):
        assert git(repo, *args).returncode == 0
    return repo


def lab_copy(repo: Path) -> str:
    proc = subprocess.run(["make", "--no-print-directory", "lab-copy"], cwd=repo, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_lab_folder_and_generated_files_are_ignored_but_tutorials_are_not():
    assert git(REPO, "check-ignore", "-q", "lab/02_temperature.ipynb").returncode == 0
    assert git(REPO, "check-ignore", "-q", "notebooks/story.html").returncode == 0
    assert git(REPO, "check-ignore", "-q", "notebooks/02_temperature.ipynb").returncode == 1


def test_lab_copy_keeps_student_work_and_the_checkout_clean(checkout):
    assert lab_copy(checkout).count("copied") == len(NOTEBOOKS)
    lab = checkout / "lab"
    assert sorted(p.name for p in lab.glob("*.ipynb")) == NOTEBOOKS
    # a class: JupyterLab autosaves outputs and the student's edits, a notebook saves story.html
    work = lab / NOTEBOOKS[1]
    book = nbformat.read(work, as_version=4)
    book.cells.append(nbformat.v4.new_code_cell("print('my experiment')", execution_count=1,
                                                outputs=[nbformat.v4.new_output("stream", text="my experiment\n")]))
    nbformat.write(book, work)
    (lab / "story.html").write_text("<p>story</p>")
    (lab / NOTEBOOKS[0]).unlink()  # a student who wants a fresh copy of one notebook deletes it
    assert lab_copy(checkout).strip() == f"copied notebooks/{NOTEBOOKS[0]} to lab/"
    assert "my experiment" in work.read_text()  # the next `make lab` keeps the student's work
    assert git(checkout, "status", "--porcelain").stdout == ""


@pytest.mark.slow
def test_a_notebook_run_in_the_lab_folder_leaves_the_checkout_clean(checkout, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel imports this checkout's package
    lab_copy(checkout)
    path = checkout / "lab" / "03_top_k_top_p.ipynb"  # it saves story.html next to itself
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    nbformat.write(book, path)  # what JupyterLab's autosave does
    assert not [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert (path.parent / "story.html").is_file()
    assert git(checkout, "status", "--porcelain").stdout == ""
