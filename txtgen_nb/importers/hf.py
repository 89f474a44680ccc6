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
from typing import Any

import numpy as np
from safetensors import safe_open
from tokenizers import Tokenizer

from txtgen_nb.config import ModelConfig
from txtgen_nb.importers import hf_gpt2, hf_llama
from txtgen_nb.importers.base import FlatParams
from txtgen_nb.tokenizer import SpecialTokens, end_of_turn_ids

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


def _json(path: Path) -> dict[str, Any]:
    """A JSON object file, ``{}`` when absent; a one-line error when unreadable."""
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from None
    return raw if isinstance(raw, dict) else {}


def _token_id(tokenizer: Tokenizer, token: Any) -> int | None:
    """The id of a ``tokenizer_config.json`` token entry (a string or ``{"content": ...}``)."""
    content = token.get("content") if isinstance(token, dict) else token
    return tokenizer.token_to_id(content) if isinstance(content, str) else None


def _ids(value: Any) -> list[int]:
    return [int(v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, int)]


def _chat_template(raw: Any) -> str | None:
    """A chat template: a string, or the ``default`` of a list of named templates."""
    if isinstance(raw, list):
        named = {t.get("name"): t.get("template") for t in raw if isinstance(t, dict)}
        raw = named.get("default", next(iter(named.values()), None))
    return raw if isinstance(raw, str) else None


def special_tokens(folder: Path, tokenizer: Tokenizer) -> SpecialTokens:
    """The model's own special tokens: BOS where the tokenizer adds one (its post-processor or
    ``add_bos_token``), the stop set (``generation_config.json`` ``eos_token_id``, maybe a list, else
    ``config.json``'s, plus end-of-turn tokens) and the chat template (``tokenizer_config.json``, or
    ``chat_template.jinja``). Usage: ``hf.special_tokens(Path("gpt2"), tok)``"""
    tok_config = _json(folder / "tokenizer_config.json")
    model_config, generation = _json(folder / "config.json"), _json(folder / "generation_config.json")
    with_special = tokenizer.encode("a", add_special_tokens=True).ids
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    bos = _token_id(tokenizer, tok_config.get("bos_token"))
    if len(with_special) > len(plain) and with_special[-len(plain):] == plain:
        bos = with_special[0]  # the post-processor prepends it
    elif not tok_config.get("add_bos_token", False):
        bos = None
    eos = _ids(generation.get("eos_token_id", model_config.get("eos_token_id")))
    if not eos and _token_id(tokenizer, tok_config.get("eos_token")) is not None:
        eos = [_token_id(tokenizer, tok_config.get("eos_token"))]
    template_file = folder / "chat_template.jinja"
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
    start = _ids(model_config.get("bos_token_id")) or eos
    return SpecialTokens(bos=bos, stop=end_of_turn_ids(tokenizer, *eos),
                         chat_template=_chat_template(tok_config.get("chat_template")) or template,
                         start=start[0] if start else None, source=str(folder))
