"""GGUF files (llama.cpp, Ollama, LM Studio): the config, the weights and the tokenizer from one file.

Read with the ``gguf`` package (memory-mapped; no llama.cpp). The metadata becomes a Hugging Face
style config, and the tensors get their Hugging Face names, so the ``hf_llama`` / ``hf_gpt2``
importers map them onto our model: one mapping per architecture. Quantized tensors (Q8_0, Q4_0, Q4_1,
Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) are dequantized one at a time when the model is built
(:class:`~txtgen_nb.importers.base.LazyTensor`), straight into the config's dtype. The Q/K rows that
llama.cpp's converter permutes for its rotary layout are permuted back. Nothing is written.

Usage::

    reader = gguf_file.open_file(Path("SmolLM2-135M-Instruct.Q4_1.gguf"))
    config, arch = gguf_file.read_config(reader, path)
    params = gguf_file.read_params(reader, config, arch, path)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from txtgen_nb.config import ModelConfig
from txtgen_nb.importers import hf_gpt2, hf_llama
from txtgen_nb.importers.base import FlatParams, LazyTensor

LAYOUT = "GGUF"
SUFFIX = ".gguf"
ARCHITECTURES = ("llama", "gpt2")
TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")

_LLAMA_BLOCK = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
                "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
_LLAMA_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_GPT2_BLOCK = {"attn_norm": "ln_1", "ffn_norm": "ln_2", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj",
               "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}
_GPT2_TOP = {"token_embd": "wte", "position_embd": "wpe", "output_norm": "ln_f", "output": "lm_head"}
_ROWS_PER_CHUNK = 2048  # rows dequantized at once
_GPT2_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def find_file(path: Path) -> Path | None:
    """The GGUF file ``path`` names, or the one ``.gguf`` in the folder ``path``; ``None`` if there is
    none; an error if a folder holds several. Usage: ``gguf_file.find_file(Path("models/"))``"""
    if path.is_file():
        return path if path.suffix.lower() == SUFFIX else None
    if not path.is_dir():
        return None
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())
    if len(files) > 1:
        raise ValueError(f"{path}: several GGUF files ({', '.join(p.name for p in files[:4])}); "
                         "pass the one to load as --checkpoint")
    return files[0] if files else None


def open_file(path: Path) -> Any:
    """A memory-mapped ``gguf.GGUFReader``; a one-line error for a file that is not GGUF."""
    import gguf

    try:
        return gguf.GGUFReader(str(path), "r")
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise ValueError(f"{path}: not a readable GGUF file ({str(err)[:160]})") from None


def metadata(reader: Any) -> dict[str, Any]:
    """Every metadata field but the tokenizer's large arrays, as Python values."""
    skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    return {name: field.contents() for name, field in reader.fields.items() if name not in skip}


def field(reader: Any, name: str, default: Any = None) -> Any:
    """One metadata field's value (``default`` when absent)."""
    found = reader.fields.get(name)
    return default if found is None else found.contents()


def read_config(reader: Any, path: Path) -> tuple[ModelConfig, str]:
    """``(config, architecture)`` from the metadata; an unsupported architecture names what loads."""
    arch = field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: GGUF architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    get = lambda key, default=None: field(reader, f"{arch}.{key}", default)  # noqa: E731
    names = {t.name for t in reader.tensors}
    vocab = get("vocab_size") or len(field(reader, "tokenizer.ggml.tokens", []) or []) or _rows(reader, "token_embd.weight")
    raw = {"vocab_size": vocab, "tie_word_embeddings": "output.weight" not in names}
    if arch == "llama":
        heads = get("attention.head_count")
        d = get("embedding_length")
        if get("rope.dimension_count", d // heads) != d // heads:
            raise ValueError(f"{path}: GGUF llama with partial rotary dimensions is not supported")
        raw.update(hidden_size=d, intermediate_size=get("feed_forward_length"), num_hidden_layers=get("block_count"),
                   num_attention_heads=heads, num_key_value_heads=get("attention.head_count_kv", heads),
                   max_position_embeddings=get("context_length"), rms_norm_eps=get("attention.layer_norm_rms_epsilon"),
                   rope_theta=get("rope.freq_base", 10000.0))
        if get("rope.scaling.type", "none") not in ("none", "linear") or get("rope.scaling.factor", 1.0) not in (0.0, 1.0):
            raise ValueError(f"{path}: GGUF rotary scaling is not supported (only the default)")
        return hf_llama.config_from_hf(raw, source=path), arch
    raw.update(n_embd=get("embedding_length"), n_inner=get("feed_forward_length"), n_layer=get("block_count"),
               n_head=get("attention.head_count"), n_positions=get("context_length"),
               layer_norm_epsilon=get("attention.layer_norm_epsilon", 1e-5))
    return hf_gpt2.config_from_hf(raw, source=path), arch


def drop_metadata(reader: Any) -> None:
    """Free the parsed metadata (the vocabulary as ~150 MB of small objects) once the config and the
    tokenizer are read, so it does not sit beside the weights while they are built."""
    reader.fields.clear()


def _rows(reader: Any, name: str) -> int:
    tensor = next((t for t in reader.tensors if t.name == name), None)
    return 0 if tensor is None else int(tensor.shape[-1])


def _unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary permutation of Q/K rows ``[heads * Dh, in]`` (its converter's ``permute``)."""
    rows = weights.shape[0]
    return weights.reshape(heads, rows // heads // 2, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _lazy(tensor: Any, path: Path, heads: int | None) -> LazyTensor:
    """One tensor as a :class:`LazyTensor` in NumPy order (``[out, in]``), dequantized on use."""
    import gguf

    kind = tensor.tensor_type.name
    if kind not in TENSOR_TYPES:
        raise ValueError(f"{path}: GGUF tensor {tensor.name} has type {kind}, which is not supported "
                         f"(supported: {', '.join(TENSOR_TYPES)})")
    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))

    def load(dtype: np.dtype) -> np.ndarray:
        data = tensor.data.reshape(shape[0], -1) if len(shape) > 1 else tensor.data
        out = np.empty(shape, dtype)
        for start in range(0, len(data), _ROWS_PER_CHUNK):  # a few MB at a time: no large temporaries
            rows = data[start: start + _ROWS_PER_CHUNK]
            out[start: start + len(rows)] = gguf.quants.dequantize(rows, tensor.tensor_type).reshape(
                out[start: start + len(rows)].shape)
        return out if heads is None else _unpermute(out, heads)

    return LazyTensor(shape, load)


def _hf_name(name: str, arch: str) -> str | None:
    """The Hugging Face name of a GGUF tensor name (``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``)."""
    parts = name.split(".")
    block, top = (_LLAMA_BLOCK, _LLAMA_TOP) if arch == "llama" else (_GPT2_BLOCK, _GPT2_TOP)
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in block:
        prefix = "model.layers" if arch == "llama" else "h"
        return f"{prefix}.{parts[1]}.{block[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in top:
        return f"{top[parts[0]]}.{parts[1]}"
    return None


def read_params(reader: Any, config: ModelConfig, arch: str, path: Path) -> FlatParams:
    """Our parameters from the file's tensors (lazy: each is dequantized when the model is built).

    Usage: ``params = gguf_file.read_params(reader, config, "llama", path)``
    """
    tensors: dict[str, Any] = {}
    for tensor in reader.tensors:
        if tensor.name in ("rope_freqs.weight",):
            continue
        name = _hf_name(tensor.name, arch)
        if name is None:
            raise ValueError(f"{path}: unexpected GGUF tensor {tensor.name} for architecture {arch}")
        heads = None
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_heads if "q_proj" in name else config.num_kv_heads
        lazy = _lazy(tensor, path, heads)
        tensors[name] = lazy.T if arch == "gpt2" and name.endswith(_GPT2_TRANSPOSED) else lazy
    importer = hf_llama if arch == "llama" else hf_gpt2
    return importer.convert(tensors, config, source=path)
