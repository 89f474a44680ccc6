"""Run folders: find the files, restore Orbax checkpoints, check shapes, save atomically.

A run folder has the seed's layout::

    output/
    ├── tokenizer.json
    ├── model_config.json
    └── best_checkpoint/      (Orbax checkpoint)

``restore_params`` accepts the layouts Flax training scripts write: a bare params tree (an
``nnx.State`` or a pure dict), ``{'params': ...}``, a train state with extra entries (step,
optimiser state), a ``CheckpointManager`` folder with numbered steps (newest wins), and params
stored as bfloat16/float16 (cast to the config's dtype). Arrays restore as NumPy on the host,
whatever device saved them. Loading never writes to the run folder.

Usage::

    model, params, tokenizer, config = load_run("output/best_checkpoint")
    save_run("my_run", model, config, tokenizer)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb.config import ModelConfig, load_config, save_config
from txtgen_nb.model import Transformer, compute_dtype
from txtgen_nb.tokenizer import load_tokenizer

CHECKPOINT_NAME = "best_checkpoint"
_PYTREE_MARKERS = ("_METADATA", "manifest.ocdbt")
_STEP_DIR = re.compile(r"^(?:[a-z_]*?_)?(\d+)$")
FlatParams = dict[tuple[str, ...], np.ndarray]


def find_run_files(checkpoint_dir: str | Path, tokenizer_path: str | Path | None = None) -> tuple[Path, Path, Path]:
    """Locate ``(checkpoint, model_config.json, tokenizer.json)`` as the seed describes.

    The config lives in the checkpoint folder's parent or the folder itself; the tokenizer is
    ``tokenizer_path`` if given, else found in the same places. A run folder given in place of
    its checkpoint resolves to its ``best_checkpoint``.

    Usage: ``ckpt, cfg_path, tok_path = find_run_files("output/best_checkpoint")``
    """
    checkpoint = Path(checkpoint_dir)
    if not checkpoint.exists():
        raise FileNotFoundError(f"Checkpoint not found: {checkpoint}")
    if not checkpoint.is_dir():
        raise ValueError(f"Checkpoint must be a directory: {checkpoint}")
    if (checkpoint / CHECKPOINT_NAME).is_dir() and not _is_pytree_dir(checkpoint):
        checkpoint = checkpoint / CHECKPOINT_NAME
    places = [checkpoint.parent, checkpoint]
    config_tried = [p / "model_config.json" for p in places]
    config_path = next((p for p in config_tried if p.is_file()), None)
    if config_path is None:
        raise FileNotFoundError("Model config not found (tried: " + ", ".join(map(str, config_tried)) + ")")
    if tokenizer_path is not None:
        tok = Path(tokenizer_path)
        if not tok.is_file():
            raise FileNotFoundError(f"Could not find tokenizer.json (tried: {tok})")
        return checkpoint, config_path, tok
    tok_tried = [p / "tokenizer.json" for p in places]
    tok = next((p for p in tok_tried if p.is_file()), None)
    if tok is None:
        raise FileNotFoundError(
            "Could not find tokenizer.json (tried: " + ", ".join(map(str, tok_tried)) + "); pass --tokenizer-path"
        )
    return checkpoint, config_path, tok


def _is_pytree_dir(path: Path) -> bool:
    return any((path / marker).exists() for marker in _PYTREE_MARKERS)


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """The Orbax PyTree folder inside ``path``: itself, the newest numbered step of a
    ``CheckpointManager`` folder, or its single item sub-folder.

    Usage: ``resolve_checkpoint_dir("run/checkpoints")  # run/checkpoints/300/default``
    """
    path = Path(path)
    if _is_pytree_dir(path):
        return path
    children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.is_dir() else []
    if not children:
        raise ValueError(f"checkpoint folder is empty or holds no Orbax checkpoint: {path}")
    steps = [(int(m.group(1)), p) for p in children if (m := _STEP_DIR.match(p.name))]
    if steps:
        return resolve_checkpoint_dir(max(steps)[1])
    items = [p for p in children if _is_pytree_dir(p)]
    preferred = [p for p in items if p.name in ("params", "state", "default", "model", "train_state")]
    if items:
        return (preferred or items)[0]
    raise ValueError(f"no Orbax checkpoint found in {path} (looked for {', '.join(_PYTREE_MARKERS)})")


def _restore_tree(path: Path) -> Any:
    """Restore an Orbax PyTree checkpoint as NumPy arrays on the host."""
    checkpointer = ocp.PyTreeCheckpointer()
    path = path.absolute()
    try:
        metadata = checkpointer.metadata(path)
        tree = getattr(metadata, "item_metadata", metadata)
        tree = getattr(tree, "tree", tree)
        restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    except Exception as err:  # Orbax and TensorStore raise many types for damaged files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"could not restore checkpoint {path}: corrupted or unreadable ({reason[:200]})") from None


def _flatten(tree: Any) -> FlatParams:
    """Array leaves keyed by string paths, with NNX's trailing ``value`` key removed."""
    flat: FlatParams = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in key_path)
        if keys and keys[-1] == "value":
            keys = keys[:-1]
        if hasattr(leaf, "shape"):
            flat[keys] = leaf
    return flat


def _subtrees(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(tree, dict):
        yield prefix, tree
        for key, value in tree.items():
            yield from _subtrees(value, (*prefix, str(key)))


def _expected_shapes(config: ModelConfig) -> tuple[Transformer, nnx.State, FlatParams]:
    model = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    return model, state, _flatten(nnx.to_pure_dict(state))


def _find_params(tree: Any, expected: FlatParams, source: Path) -> FlatParams:
    """The subtree of ``tree`` holding exactly the expected parameter paths."""
    best: tuple[int, tuple[str, ...], FlatParams] | None = None
    for prefix, sub in _subtrees(tree):
        flat = _flatten(sub)
        if set(flat) == set(expected):
            return flat
        overlap = len(set(flat) & set(expected))
        if best is None or overlap > best[0]:
            best = (overlap, prefix, flat)
    if best is None or best[0] == 0:
        raise ValueError(f"{source}: no model parameters found in the checkpoint")
    _, prefix, flat = best
    missing = sorted("/".join(k) for k in set(expected) - set(flat))
    where = "/".join(prefix) or "the root"
    raise ValueError(
        f"{source}: checkpoint parameters under {where} do not match the model config "
        f"(missing: {', '.join(missing[:5]) or 'none'}; unexpected: "
        f"{', '.join(sorted('/'.join(k) for k in set(flat) - set(expected))[:5]) or 'none'})"
    )


def restore_params(checkpoint_dir: str | Path, config: ModelConfig) -> tuple[Transformer, nnx.State]:
    """Restore ``(model, params)`` from any supported layout, checking every shape.

    Usage: ``model, params = restore_params("output/best_checkpoint", load_config(...))``
    """
    path = resolve_checkpoint_dir(checkpoint_dir)
    model, state, expected = _expected_shapes(config)
    found = _find_params(_restore_tree(path), expected, path)
    mismatches = [
        f"{'/'.join(k)} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(expected) if tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    if mismatches:
        raise ValueError(
            f"{path}: checkpoint does not match the model config (checkpoint vs config shape): "
            + "; ".join(mismatches[:6]) + (f"; and {len(mismatches) - 6} more" if len(mismatches) > 6 else "")
        )
    dtype = compute_dtype(config)
    pure = nnx.to_pure_dict(state)
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(pure)
    leaves = []
    for key_path, _ in leaves_with_paths:
        keys = tuple(str(getattr(k, "key", k)) for k in key_path)
        array = np.asarray(found[keys])
        if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
            raise ValueError(f"{path}: parameter {'/'.join(keys)} has non-float dtype {array.dtype}")
        leaves.append(jax.numpy.asarray(array, dtype=dtype))
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, leaves))
    model = nnx.merge(nnx.graphdef(model), state)
    return model, nnx.state(model, nnx.Param)


def load_run(
    checkpoint_dir: str | Path, tokenizer_path: str | Path | None = None
) -> tuple[Transformer, nnx.State, Tokenizer, ModelConfig]:
    """Load ``(model, params, tokenizer, config)`` from a run's checkpoint folder.

    Usage: ``model, params, tok, cfg = load_run("output/best_checkpoint")``
    """
    checkpoint, config_path, tok_path = find_run_files(checkpoint_dir, tokenizer_path)
    tokenizer = load_tokenizer(tok_path)
    config = load_config(config_path)
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(
            f"{config_path}: vocab_size {config.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.get_vocab_size()} tokens ({tok_path})"
        )
    model, params = restore_params(checkpoint, config)
    return model, params, tokenizer, config


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(params: nnx.State | Transformer | dict, path: str | Path) -> Path:
    """Write params as an Orbax checkpoint at ``path`` atomically: the old one stays intact
    until the new one is complete.

    Usage: ``save_checkpoint(nnx.state(model, nnx.Param), "run/best_checkpoint")``
    """
    path = Path(path).absolute()
    if isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    if isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".saving", dir=path.parent))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(staging / "ckpt", jax.tree_util.tree_map(np.asarray, params))
        old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(staging / "ckpt", path)
        except BaseException:
            if old.exists():
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def save_run(
    out_dir: str | Path,
    model_or_params: Transformer | nnx.State | dict,
    config: ModelConfig,
    tokenizer: Tokenizer,
    *,
    checkpoint_name: str = CHECKPOINT_NAME,
) -> Path:
    """Write the seed's layout ``out_dir/{tokenizer.json, model_config.json, best_checkpoint/}``.

    Params may be stored in a lower precision (e.g. bfloat16); loading casts them back.
    Returns the checkpoint path.

    Usage: ``save_run("output", model, config, tokenizer)``
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(out / "tokenizer.json", tokenizer.to_str(pretty=True))
    tmp_config = out / f".model_config.{uuid.uuid4().hex}.tmp"
    save_config(config, tmp_config)
    os.replace(tmp_config, out / "model_config.json")
    return save_checkpoint(model_or_params, out / checkpoint_name)
