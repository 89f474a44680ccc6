"""Remove outputs and execution counts from notebooks, so git diffs show only what was written.

Usage: ``python tools/strip_notebooks.py notebooks/*.ipynb`` (``make strip``); ``--check`` only
reports notebooks that still have outputs and exits 1 if there are any.
"""

from __future__ import annotations

import argparse
import sys

import nbformat

VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled")


def strip(book: nbformat.NotebookNode) -> bool:
    """Strip one notebook in place; returns whether anything changed."""
    changed = False
    for cell in book.cells:
        for key in VOLATILE_CELL_METADATA:
            changed |= cell.metadata.pop(key, None) is not None
        if cell.cell_type == "code":
            changed |= bool(cell.outputs) or cell.execution_count is not None
            cell.outputs, cell.execution_count = [], None
    changed |= book.metadata.pop("widgets", None) is not None
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--check", action="store_true", help="report, do not write")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths:
        book = nbformat.read(path, as_version=4)
        if strip(book):
            dirty.append(path)
            if not args.check:
                nbformat.write(book, path)
    for path in dirty:
        print(f"{'has outputs' if args.check else 'stripped'}: {path}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
