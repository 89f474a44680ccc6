"""Run folders: find the files, restore Orbax checkpoints, check shapes, save atomically.

A run folder has the seed's layout::

    output/
    ├── tokenizer.json
    ├── model_config.json
    └── best_checkpoint/      (Orbax checkpoint)

``restore_params`` accepts the layouts Flax training scripts write: a bare params tree (an
``nnx.State`` or a pure dict), ``{'params': ...}``, a train state with extra entries (step,
optimiser state: the params are never taken from inside it), a ``CheckpointManager`` folder with
numbered steps (newest wins), and params stored as bfloat16/float16 (cast to the config's dtype).
Arrays restore as NumPy on the host, whatever device saved them. ``load_run`` also detects the
foreign layouts of ``txtgen_nb.importers`` (the JAX miniGPT tutorial's checkpoints, Hugging Face
GPT-2/Llama folders) from parameter names and config keys. Loading never writes to the run folder.

Usage::

    model, params, tokenizer, config = load_run("output/best_checkpoint")
    save_run("my_run", model, config, tokenizer)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import jax
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb.config import CHOICES, ModelConfig, load_config, save_config
from txtgen_nb.importers import gguf as gguf_file
from txtgen_nb.importers import gguf_vocab, hf, minigpt
from txtgen_nb.importers.base import FlatParams, build_model, expected_params, flatten
from txtgen_nb.model import Transformer
from txtgen_nb.tokenizer import attach_special_tokens, load_tokenizer

CHECKPOINT_NAME = "best_checkpoint"
_PYTREE_MARKERS = ("_METADATA", "manifest.ocdbt")
_STEP_DIR = re.compile(r"^(?:[a-z_]*?_)?(\d+)$")
OPTIMISER_NAMES = frozenset({"opt_state", "optimizer", "optimiser", "opt", "tx", "tx_state", "optax_state",
                             "inner_state", "mu", "nu", "exp_avg", "exp_avg_sq", "momentum", "trace", "grads",
                             "gradients", "updates"})
"""Path components that mark optimiser state (Adam moments mirror the params tree): never loaded as params."""
Log = Callable[[str], None]


def _locate(checkpoint: Path, tokenizer_path: str | Path | None) -> tuple[Path, Path | None, list[Path], Path | None,
                                                                         list[Path]]:
    """``(checkpoint, config or None, configs tried, tokenizer or None, tokenizers tried)`` as the seed places them."""
    if (checkpoint / CHECKPOINT_NAME).is_dir() and not _is_pytree_dir(checkpoint):
        checkpoint = checkpoint / CHECKPOINT_NAME
    places = [checkpoint.parent, checkpoint]
    config_tried = [p / "model_config.json" for p in places]
    tok_tried = [Path(tokenizer_path)] if tokenizer_path is not None else [p / "tokenizer.json" for p in places]
    return (checkpoint, next((p for p in config_tried if p.is_file()), None), config_tried,
            next((p for p in tok_tried if p.is_file()), None), tok_tried)


def _check_exists(checkpoint: Path) -> None:
    if not checkpoint.exists():
        raise FileNotFoundError(f"Checkpoint not found: {checkpoint}")
    if not checkpoint.is_dir():
        raise ValueError(f"Checkpoint must be a directory (or a .gguf file): {checkpoint}")


def _config_not_found(tried: list[Path]) -> FileNotFoundError:
    return FileNotFoundError("Model config not found (tried: " + ", ".join(map(str, tried)) + ")")


def _tokenizer_not_found(tried: list[Path], explicit: bool) -> FileNotFoundError:
    hint = "" if explicit else "; pass --tokenizer-path"
    return FileNotFoundError("Could not find tokenizer.json (tried: " + ", ".join(map(str, tried)) + ")" + hint)


def find_run_files(checkpoint_dir: str | Path, tokenizer_path: str | Path | None = None) -> tuple[Path, Path, Path]:
    """Locate ``(checkpoint, model_config.json, tokenizer.json)`` as the seed describes.

    The config lives in the checkpoint folder's parent or the folder itself; the tokenizer is
    ``tokenizer_path`` if given, else found in the same places. A run folder given in place of
    its checkpoint resolves to its ``best_checkpoint``.

    Usage: ``ckpt, cfg_path, tok_path = find_run_files("output/best_checkpoint")``
    """
    checkpoint = Path(checkpoint_dir)
    _check_exists(checkpoint)
    checkpoint, config_path, config_tried, tok, tok_tried = _locate(checkpoint, tokenizer_path)
    if config_path is None:
        raise _config_not_found(config_tried)
    if tok is None:
        raise _tokenizer_not_found(tok_tried, tokenizer_path is not None)
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
    import orbax.checkpoint as ocp  # imported when used: Orbax and TensorStore add ~30 MB to every process

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


def _subtrees(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every dict in ``tree`` (lists and tuples looked into), with its path."""
    if isinstance(tree, dict):
        yield prefix, tree
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return
    for key, value in items:
        yield from _subtrees(value, (*prefix, str(key)))


class Found(NamedTuple):
    """A parameter tree found in a checkpoint: where, in which layout, as our config and paths."""

    prefix: tuple[str, ...]
    layout: str
    config: ModelConfig
    params: FlatParams

    @property
    def where(self) -> str:
        return "/".join(self.prefix) or "the root"


def _in_optimiser(prefix: tuple[str, ...]) -> bool:
    return any(part.lower() in OPTIMISER_NAMES for part in prefix)


def _candidates(tree: Any, config: ModelConfig | None, raw_config: dict | None, source: Path) -> tuple[
        list[Found], list[str], tuple[int, tuple[str, ...], FlatParams] | None]:
    """Every subtree that is a complete parameter tree; the foreign-layout problems met; the best partial match."""
    expected = set(expected_params(config)[2]) if config is not None else None
    found, problems, best = [], [], None
    for prefix, sub in _subtrees(tree):
        flat = flatten(sub)
        if expected is not None and set(flat) == expected:
            found.append(Found(prefix, "txtgen-nb", config, flat))
        elif minigpt.looks_like(flat):
            try:
                found.append(Found(prefix, minigpt.LAYOUT, *minigpt.convert(flat, raw_config, source)))
            except ValueError as err:
                problems.append(str(err))
        elif expected is not None:
            overlap = len(set(flat) & expected)
            if best is None or overlap > best[0]:
                best = (overlap, prefix, flat)
    return found, problems, best


def select_params(tree: Any, config: ModelConfig | None, source: Path, raw_config: dict | None = None) -> Found:
    """The one parameter tree in a restored checkpoint: txtgen-nb's own names (for ``config``) or a
    foreign layout. Never one inside optimiser state; where several remain, the one named ``params``;
    still ambiguous, an error naming the candidate paths.

    Usage: ``found = select_params(tree, config, Path("run/best_checkpoint"))``
    """
    found, problems, best = _candidates(tree, config, raw_config, source)
    usable = [f for f in found if not _in_optimiser(f.prefix)]
    if len(usable) > 1:
        named = [f for f in usable if f.prefix and f.prefix[-1] == "params"]
        if len(named) != 1:
            raise ValueError(f"{source}: several parameter trees match the model ("
                             + ", ".join(f.where for f in usable) + "); keep one or name it 'params'")
        usable = named
    if usable:
        return usable[0]
    if found:
        raise ValueError(f"{source}: parameters found only inside optimiser state ("
                         + ", ".join(f.where for f in found) + "), not loaded; save the params themselves")
    if problems:
        raise ValueError(problems[0])
    if best is None or best[0] == 0:
        raise ValueError(f"{source}: no model parameters found in the checkpoint (neither txtgen-nb's parameter "
                         f"names for its model_config.json nor the {minigpt.LAYOUT}'s)")
    _, prefix, flat = best
    expected = expected_params(config)[2]
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
    found = select_params(_restore_tree(path), config, path)
    return build_model(found.config, found.params, path)


def _check_vocab(tokenizer: Tokenizer, config: ModelConfig, config_source: Any, tok_path: Path) -> None:
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(
            f"{config_source}: vocab_size {config.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.get_vocab_size()} tokens ({tok_path})"
        )


def _with_dtype(config: ModelConfig, dtype: str | None) -> ModelConfig:
    """``config`` computing in ``dtype`` (``None``: as the run says)."""
    if dtype is None or dtype == config.dtype:
        return config
    return dataclasses.replace(config, dtype=dtype, extra=config.extra)


def _load_hf(folder: Path, tokenizer_path: str | Path | None, log: Log, dtype: str | None) -> tuple[
        Transformer, nnx.State, Tokenizer, ModelConfig]:
    config, arch = hf.read_config(folder)
    config = _with_dtype(config, dtype)
    tok_path = Path(tokenizer_path) if tokenizer_path is not None else folder / "tokenizer.json"
    if not tok_path.is_file():
        raise _tokenizer_not_found([tok_path], tokenizer_path is not None)
    log(f"Loading tokenizer from: {tok_path}")
    tokenizer = load_tokenizer(tok_path)
    attach_special_tokens(tokenizer, hf.special_tokens(folder, tokenizer))
    log(f"Loading config from: {folder / 'config.json'} ({hf.LAYOUT} {arch})")
    _check_vocab(tokenizer, config, folder / "config.json", tok_path)
    log("Creating model...")
    files = hf.weight_files(folder)
    log(f"Loading checkpoint from: {files[0] if len(files) == 1 else f'{folder / hf.INDEX} ({len(files)} shards)'}")
    model, params = build_model(config, hf.read_params(folder, config, arch), folder)
    return model, params, tokenizer, config


def _load_gguf(path: Path, tokenizer_path: str | Path | None, log: Log, dtype: str | None) -> tuple[
        Transformer, nnx.State, Tokenizer, ModelConfig]:
    reader = gguf_file.open_file(path)
    config, arch = gguf_file.read_config(reader, path)
    config = _with_dtype(config, dtype)
    if tokenizer_path is not None:
        log(f"Loading tokenizer from: {tokenizer_path}")
        tokenizer = load_tokenizer(tokenizer_path)
        attach_special_tokens(tokenizer, gguf_vocab.special_tokens_of(reader, tokenizer, path))
    else:
        log(f"Loading tokenizer from: {path} (GGUF metadata)")
        tokenizer = gguf_vocab.read_tokenizer(reader, path)
    log(f"Loading config from: {path} ({gguf_file.LAYOUT} {arch}, {config.num_layers} layers, d {config.d_model})")
    _check_vocab(tokenizer, config, path, Path(tokenizer_path or path))
    gguf_file.drop_metadata(reader)
    log("Creating model...")
    log(f"Loading checkpoint from: {path} (dequantized to {config.dtype})")
    model, params = build_model(config, gguf_file.read_params(reader, config, arch, path), path)
    return model, params, tokenizer, config


def _restore_if_foreign(checkpoint: Path) -> Any | None:
    """The restored tree when it holds a layout that needs no model_config.json, else ``None``."""
    try:
        tree = _restore_tree(resolve_checkpoint_dir(checkpoint))
    except ValueError:
        return None
    return tree if any(minigpt.looks_like(flatten(sub)) for _, sub in _subtrees(tree)) else None


def load_run(
    checkpoint_dir: str | Path, tokenizer_path: str | Path | None = None, *, log: Log | None = None,
    dtype: str | None = None,
) -> tuple[Transformer, nnx.State, Tokenizer, ModelConfig]:
    """Load ``(model, params, tokenizer, config)`` from a run's checkpoint folder, a JAX miniGPT
    tutorial checkpoint, a Hugging Face folder or a GGUF file (or a folder with one; detected, no
    flags). ``log`` receives the seed's loading lines (``Loading tokenizer from: ...``) as each step
    starts. ``dtype`` (``"float32"``, ``"bfloat16"``, ``"float16"``) overrides the run's: bfloat16
    halves the memory of the weights.

    Usage: ``model, params, tok, cfg = load_run("output/best_checkpoint", log=print)``
    """
    log = log or (lambda line: None)
    if dtype is not None and dtype not in CHOICES["dtype"]:
        raise ValueError(f"dtype must be one of {', '.join(CHOICES['dtype'])}, got {dtype!r}")
    requested = Path(checkpoint_dir)
    if not requested.exists():
        raise FileNotFoundError(f"Checkpoint not found: {requested}")
    gguf_path = gguf_file.find_file(requested)
    if gguf_path is not None:
        return _load_gguf(gguf_path, tokenizer_path, log, dtype)
    _check_exists(requested)
    folder = hf.find_folder(requested)
    if folder is not None:
        return _load_hf(folder, tokenizer_path, log, dtype)
    checkpoint, config_path, config_tried, tok_path, tok_tried = _locate(requested, tokenizer_path)
    tree = None
    if config_path is None:
        tree = _restore_if_foreign(checkpoint)
        if tree is None:
            raise _config_not_found(config_tried)
    if tok_path is None:
        raise _tokenizer_not_found(tok_tried, tokenizer_path is not None)
    if checkpoint != requested:
        log(f"Note: {requested} is a run folder; using its checkpoint {checkpoint}")
    log(f"Loading tokenizer from: {tok_path}")
    tokenizer = load_tokenizer(tok_path)
    config = raw_config = None
    if config_path is not None:
        log(f"Loading config from: {config_path}")
        config = load_config(config_path)
        raw_config = json.loads(config_path.read_text(encoding="utf-8"))
        _check_vocab(tokenizer, config, config_path, tok_path)
    else:
        log(f"Loading config from: the checkpoint's shapes ({minigpt.LAYOUT} layout; no model_config.json)")
    log("Creating model...")
    log(f"Loading checkpoint from: {checkpoint}")
    path = resolve_checkpoint_dir(checkpoint)
    found = select_params(_restore_tree(path) if tree is None else tree, config, path, raw_config)
    if found.config is not config:
        _check_vocab(tokenizer, found.config, path, tok_path)
    config = _with_dtype(found.config, dtype)
    model, params = build_model(config, found.params, path)
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
    import orbax.checkpoint as ocp  # imported when used (see _restore_tree)

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
