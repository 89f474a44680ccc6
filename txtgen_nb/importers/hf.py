"""Hugging Face model folders: ``config.json`` + ``model.safetensors`` (or sharded with
``model.safetensors.index.json``) + ``tokenizer.json``.

The architecture named in ``config.json`` picks the importer (``hf_gpt2``, ``hf_llama``), which maps
the config onto a ``ModelConfig`` and the tensors onto our parameter paths. Tensors are read with
``safetensors`` (float32, bfloat16 or float16; no PyTorch) and run as float32. Nothing is written.

Usage::

    folder = hf.find_folder(Path("gpt2"))          # None if it is not a Hugging Face folder
    config, arch = hf.read_config(folder)
    params = hf.read_params(folder, config, arch)
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
from safetensors import safe_open

from txtgen_nb.config import ModelConfig
from txtgen_nb.importers import hf_gpt2, hf_llama
from txtgen_nb.importers.base import FlatParams

LAYOUT = "Hugging Face"
IMPORTERS: dict[str, ModuleType] = {
    "GPT2LMHeadModel": hf_gpt2, "GPT2Model": hf_gpt2, "gpt2": hf_gpt2,
    "LlamaForCausalLM": hf_llama, "LlamaModel": hf_llama, "llama": hf_llama,
}
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def find_folder(path: Path) -> Path | None:
    """``path`` if it holds ``config.json`` and safetensors weights; an error if it holds a Hugging
    Face config with other weights only; else ``None``. Usage: ``hf.find_folder(Path("gpt2"))``"""
    if not (path / "config.json").is_file():
        return None
    if (path / SINGLE).is_file() or (path / INDEX).is_file():
        return path
    others = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".h5", ".msgpack"))
    if others:
        raise ValueError(f"{path}: a Hugging Face folder without {SINGLE} (found {', '.join(others[:3])}); "
                         "save it with save_pretrained(..., safe_serialization=True)")
    return None


def read_config(folder: Path) -> tuple[ModelConfig, str]:
    """``(config, architecture name)`` from ``config.json``. Usage: ``hf.read_config(Path("gpt2"))``"""
    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the Hugging Face config ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    names = [*(raw.get("architectures") or []), raw.get("model_type")]
    arch = next((n for n in names if n in IMPORTERS), None)
    if arch is None:
        found = ", ".join(str(n) for n in names if n) or "none named"
        raise ValueError(f"{path}: Hugging Face architecture {found} is not supported "
                         "(supported: GPT2LMHeadModel, LlamaForCausalLM)")
    return IMPORTERS[arch].config_from_hf(raw, source=path), arch


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of ``folder``: the single file, or every shard the index names."""
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    index = folder / INDEX
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{index}: not a safetensors index ({err})") from None
    files = [folder / name for name in dict.fromkeys(weight_map.values())]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{index}: shards not found: {', '.join(missing[:3])}")
    return files


def read_tensors(files: list[Path]) -> dict[str, np.ndarray]:
    """Every tensor of ``files`` by name, as NumPy (bfloat16 via ``ml_dtypes``)."""
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="flax") as handle:
                for name in handle.keys():
                    tensors[name] = np.asarray(handle.get_tensor(name))
        except (OSError, ValueError, RuntimeError) as err:
            raise ValueError(f"{path}: corrupted or unreadable safetensors file ({str(err)[:200]})") from None
    return tensors


def read_params(folder: Path, config: ModelConfig, arch: str) -> FlatParams:
    """Our parameters from the folder's safetensors. Usage: ``hf.read_params(folder, config, arch)``"""
    tensors = read_tensors(weight_files(folder))
    return IMPORTERS[arch].convert(tensors, config, source=folder)
