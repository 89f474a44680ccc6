"""What every importer shares: flat parameter dicts keyed by txtgen-nb paths, and building the model
from one with every shape checked.

Usage::

    model, params = build_model(config, {("embed", "embedding"): array, ...}, source="run/ckpt")
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from txtgen_nb.config import ModelConfig
from txtgen_nb.model import Transformer, compute_dtype

FlatParams = dict[tuple[str, ...], Any]
"""Parameter arrays keyed by their path in the model, e.g. ``("blocks", "0", "attn", "qkv", "kernel")``."""


class LazyTensor:
    """A tensor read (dequantized) only when :func:`build_model` needs it, straight into the dtype
    asked for, so a large file never needs a float32 copy of its weights; ``.T`` stays lazy.
    ``load(dtype)`` returns the array in ``dtype``.

    Usage: ``LazyTensor((2, 3), lambda dtype: np.zeros((2, 3), dtype)).T.shape  # (3, 2)``
    """

    def __init__(self, shape: tuple[int, ...], load: Callable[[np.dtype], np.ndarray]) -> None:
        self.shape, self._load = tuple(shape), load

    @property
    def T(self) -> "LazyTensor":  # noqa: N802 (NumPy's name)
        return LazyTensor(self.shape[::-1], lambda dtype: self._load(dtype).T)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._load(np.dtype(np.float32) if dtype is None else np.dtype(dtype))


def key_name(key: Any) -> str:
    """One component of a JAX key path as a string."""
    return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))


def flatten(tree: Any) -> FlatParams:
    """Array leaves keyed by string paths, with NNX's trailing ``value`` key removed.

    Usage: ``flatten({"a": {"b": np.ones(2)}})  # {("a", "b"): array}``
    """
    flat: FlatParams = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = tuple(key_name(k) for k in key_path)
        if keys and keys[-1] == "value":
            keys = keys[:-1]
        if hasattr(leaf, "shape"):
            flat[keys] = leaf
    return flat


@functools.lru_cache(maxsize=8)
def _abstract(config: ModelConfig) -> tuple[Transformer, nnx.State, FlatParams]:
    model = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))  # traced once per config (0.1-0.2 s)
    state = nnx.state(model, nnx.Param)
    return model, state, flatten(nnx.to_pure_dict(state))


def expected_params(config: ModelConfig) -> tuple[Transformer, nnx.State, FlatParams]:
    """An abstract model for ``config``, its param state (a fresh copy: the caller may fill it) and
    the flat shapes it expects."""
    model, state, flat = _abstract(config)
    return model, jax.tree_util.tree_map(lambda leaf: leaf, state), dict(flat)


def build_model(config: ModelConfig, found: FlatParams, source: Any) -> tuple[Transformer, nnx.State]:
    """``(model, params)`` from flat arrays at the model's own paths, cast to the config's dtype;
    a shape mismatch names every differing path.

    Usage: ``model, params = build_model(config, flat, source="run/best_checkpoint")``
    """
    model, state, expected = expected_params(config)
    missing = sorted("/".join(k) for k in set(expected) - set(found))
    if missing:
        raise ValueError(f"{source}: parameters missing for the model config: {', '.join(missing[:5])}")
    mismatches = [
        f"{'/'.join(k)} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(expected) if tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    if mismatches:
        raise ValueError(
            f"{source}: checkpoint does not match the model config (checkpoint vs config shape): "
            + "; ".join(mismatches[:6]) + (f"; and {len(mismatches) - 6} more" if len(mismatches) > 6 else "")
        )
    dtype = compute_dtype(config)
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))
    leaves = []
    for key_path, _ in leaves_with_paths:
        keys = tuple(key_name(k) for k in key_path)
        value = found[keys]  # a LazyTensor is read straight into ``dtype``, on the host
        array = np.asarray(value, dtype=dtype) if isinstance(value, LazyTensor) else np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
            raise ValueError(f"{source}: parameter {'/'.join(keys)} has non-float dtype {array.dtype}")
        leaves.append(jax.device_put(array.astype(dtype, copy=False)))  # cast on the host: no XLA op to compile
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, leaves))
    model = nnx.merge(nnx.graphdef(model), state)
    return model, nnx.state(model, nnx.Param)


def strip_prefix(tensors: dict[str, Any], prefixes: tuple[str, ...], ignore: tuple[str, ...]) -> dict[str, Any]:
    """Tensors with a model prefix (``transformer.``, ``model.``) removed and buffers ending in ``ignore`` dropped.

    Usage: ``strip_prefix(tensors, ("transformer.",), (".attn.bias",))``
    """
    out = {}
    for name, array in tensors.items():
        if not name.endswith(ignore):
            out[next((name[len(p):] for p in prefixes if name.startswith(p)), name)] = array
    return out


def mapped(tensors: dict[str, Any], mapping: dict[str, tuple[tuple[str, ...], bool]], source: Any,
           layout: str) -> FlatParams:
    """Apply ``mapping`` (their name -> (our path, transpose?)); an error lists missing and unexpected names.

    Usage: ``mapped(tensors, {"wte.weight": (("embed", "embedding"), False)}, folder, "Hugging Face GPT-2")``
    """
    missing = sorted(set(mapping) - set(tensors))
    unexpected = sorted(set(tensors) - set(mapping))
    if missing or unexpected:
        raise ValueError(f"{source}: {layout} weights do not match its config.json (missing: "
                         f"{', '.join(missing[:5]) or 'none'}; unexpected: {', '.join(unexpected[:5]) or 'none'})")
    return {ours: (tensors[theirs].T if transpose else tensors[theirs]) for theirs, (ours, transpose) in mapping.items()}
