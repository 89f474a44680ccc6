"""Every tutorial notebook runs top to bottom in a fresh ``python3`` kernel, and shows what it should."""

from __future__ import annotations

import json
import time

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"


def outputs(book: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in book.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def test_the_nine_tutorials_exist():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08", "09"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean(path):
    book = json.loads(path.read_text(encoding="utf-8"))
    assert book["metadata"]["kernelspec"]["name"] == "python3"  # no kernel dialog in JupyterLab
    for cell in book["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "run `make strip`"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # Agg would hide the inline plots
    book = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(book, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    print(f"{path.name}: {time.perf_counter() - start:.0f} s")

    outs = outputs(book)
    assert not [o for o in outs if o.get("output_type") == "error"]
    texts = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outs)
    text_only = [o for o in outs if "image/png" not in o.get("data", {})]
    assert not [o for o in text_only if "<Figure size" in o.get("data", {}).get("text/plain", "")], \
        "a figure showed as text instead of an image"
    assert "Traceback" not in texts
    images = sum("image/png" in o.get("data", {}) for o in outs)
    widgets = sum(WIDGET in o.get("data", {}) for o in outs)
    expected = {"01": (0, 0), "02": (2, 0), "03": (6, 0), "04": (0, 4), "05": (2, 0), "06": (2, 0),
                "07": (15, 0), "08": (6, 0), "09": (3, 0)}[path.name[:2]]
    assert images >= expected[0] and widgets >= expected[1], (images, widgets)
