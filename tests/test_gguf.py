"""GGUF files load without a flag and agree with transformers' GGUF loader (PyTorch, CPU).

Tiny random Llama and GPT-2 models are written in the test with ``gguf.GGUFWriter`` the way
llama.cpp's converter writes them (Q/K rows permuted, GPT-2's Conv1D weights transposed), in every
supported tensor type (``gguf.quants.quantize`` where gguf-py can, random valid blocks for the
K-quants), then loaded by us and by ``transformers``: the logits agree.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import transformers
from gguf import GGMLQuantizationType as Q

from txtgen_nb import generate, load_model_and_tokenizer
from txtgen_nb.generation import next_token_logits
from txtgen_nb.tokenizer import decode, encode_prompt, special_tokens

from conftest import tiny_tokenizer

D, FF, HEADS, KV_HEADS, LAYERS, CTX = 256, 512, 4, 2, 1, 64  # K-quants need rows of 256
GPT2_FF, GPT2_CTX = 4 * D, 1024  # transformers' GGUF GPT-2 reads neither size from the file: its defaults
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
K_BLOCKS = {"Q4_K": (144, [0, 2]), "Q5_K": (176, [0, 2]), "Q6_K": (210, [208])}  # bytes per block; f16 fields


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's ``convert_hf_to_gguf`` permutation of Q/K rows."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode_tensor(array: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, Q | None]:
    """``array`` [out, in] in tensor type ``kind`` (K-quants: random blocks with small scales)."""
    if kind == "F32" or array.ndim == 1:
        return array.astype(np.float32), None
    if kind == "F16":
        return array.astype(np.float16), None
    if kind in K_BLOCKS:
        size, fields = K_BLOCKS[kind]
        blocks = rng.integers(0, 256, (array.shape[0], array.shape[1] // 256, size), dtype=np.uint8)
        scale = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
        for at in fields:
            blocks[..., at:at + 2] = scale
        return blocks.reshape(array.shape[0], -1), Q[kind]
    return gguf.quants.quantize(array.astype(np.float32), Q[kind]), Q[kind]


def add_tokenizer(writer: gguf.GGUFWriter) -> None:
    tok = tiny_tokenizer(vocab_size=300)
    data = json.loads(tok.to_str())
    vocab = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab] + [f"<extra_{i}>" for i in range(300 - len(vocab))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3 if t.startswith("<") and t.endswith(">") else 1 for t in tokens])
    writer.add_bos_token_id(tokens.index("<bos>"))
    writer.add_eos_token_id(tokens.index("<eos>"))
    writer.add_add_bos_token(False)


def llama_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """GGUF-named Llama tensors (untied head), Q/K permuted as llama.cpp stores them."""
    dh = D // HEADS
    w = lambda *shape: (0.08 * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
    out = {"token_embd.weight": w(300, D), "output_norm.weight": 1 + w(D), "output.weight": w(300, D)}
    for i in range(LAYERS):
        out.update({f"blk.{i}.attn_norm.weight": 1 + w(D), f"blk.{i}.ffn_norm.weight": 1 + w(D),
                    f"blk.{i}.attn_q.weight": permute(w(D, D), HEADS),
                    f"blk.{i}.attn_k.weight": permute(w(KV_HEADS * dh, D), KV_HEADS),
                    f"blk.{i}.attn_v.weight": w(KV_HEADS * dh, D), f"blk.{i}.attn_output.weight": w(D, D),
                    f"blk.{i}.ffn_gate.weight": w(FF, D), f"blk.{i}.ffn_up.weight": w(FF, D),
                    f"blk.{i}.ffn_down.weight": w(D, FF)})
    return out


def gpt2_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """GGUF-named GPT-2 tensors (tied head: no ``output.weight``), Linear layout [out, in]."""
    w = lambda *shape: (0.08 * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
    out = {"token_embd.weight": w(300, D), "position_embd.weight": w(GPT2_CTX, D), "output_norm.weight": 1 + w(D),
           "output_norm.bias": w(D)}
    for i in range(LAYERS):
        for name, shape in {"attn_norm": (D,), "ffn_norm": (D,)}.items():
            out[f"blk.{i}.{name}.weight"], out[f"blk.{i}.{name}.bias"] = 1 + w(*shape), w(*shape)
        for name, (rows, cols) in {"attn_qkv": (3 * D, D), "attn_output": (D, D), "ffn_up": (GPT2_FF, D),
                                   "ffn_down": (D, GPT2_FF)}.items():
            out[f"blk.{i}.{name}.weight"], out[f"blk.{i}.{name}.bias"] = w(rows, cols), w(rows)
    return out


def write_gguf(path: Path, arch: str, kind: str) -> Path:
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(CTX if arch == "llama" else GPT2_CTX)
    writer.add_embedding_length(D)
    writer.add_feed_forward_length(FF if arch == "llama" else GPT2_FF)
    writer.add_head_count(HEADS)
    if arch == "llama":
        writer.add_head_count_kv(KV_HEADS)
        writer.add_rope_freq_base(500.0)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_rope_dimension_count(D // HEADS)
        writer.add_vocab_size(300)
    else:
        writer.add_layer_norm_eps(1e-5)
    add_tokenizer(writer)
    for name, array in (llama_tensors(rng) if arch == "llama" else gpt2_tensors(rng)).items():
        data, raw = encode_tensor(array, kind, rng)
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def reference_logits(path: Path, ids: list[int]) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("arch,kind", [("llama", t) for t in TYPES] + [("gpt2", t) for t in ("F32", "Q8_0", "Q4_K")])
def test_gguf_logits_match_transformers(tmp_path, arch, kind):
    path = write_gguf(tmp_path / f"tiny-{arch}-{kind}.gguf", arch, kind)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    model, params, tok, config = load_model_and_tokenizer(path)
    assert (config.num_layers, config.d_model, config.max_len) == (LAYERS, D, CTX if arch == "llama" else GPT2_CTX)
    assert config.tie_embeddings == (arch == "gpt2")
    ids = encode_prompt(tok, "Once upon a time, there was")
    assert ids == tok.encode("Once upon a time, there was", add_special_tokens=False).ids  # add_bos_token false
    ours = np.asarray(model(np.array([ids], np.int32)))[0]
    ref = reference_logits(path, ids)
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(ours, ref, atol=2e-4 * max(1.0, np.abs(ref).max()), rtol=1e-4)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # loading never writes


def test_gguf_folder_and_special_tokens(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    write_gguf(folder / "only.gguf", "llama", "Q8_0")
    model, params, tok, config = load_model_and_tokenizer(folder)
    special = special_tokens(tok)
    assert special.bos is None and special.stop[0] == tok.token_to_id("<eos>")
    result = generate(model, params, tok, "Once upon", max_new_tokens=8, temperature=0.0)
    assert "<eos>" not in result.texts[0] and "<bos>" not in decode(tok, result.new_token_ids[0])
    write_gguf(folder / "second.gguf", "llama", "F32")
    with pytest.raises(ValueError, match="several GGUF files"):
        load_model_and_tokenizer(folder)
    with pytest.raises(ValueError, match="no chat template"):
        generate(model, params, tok, "Hi", max_new_tokens=2, chat=True)


def test_gguf_errors_name_the_problem(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        load_model_and_tokenizer(bad)
    writer = gguf.GGUFWriter(str(tmp_path / "mamba.gguf"), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"architecture 'mamba' is not supported \(supported: llama, gpt2\)"):
        load_model_and_tokenizer(tmp_path / "mamba.gguf")


def test_gguf_bfloat16_dtype(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", "llama", "Q4_1")
    _, params32, tok, _ = load_model_and_tokenizer(path)
    model, params, tok, config = load_model_and_tokenizer(path, dtype="bfloat16")
    assert config.dtype == "bfloat16"
    nbytes = lambda p: sum(x.nbytes for x in __import__("jax").tree.leaves(p))  # noqa: E731
    assert nbytes(params) * 2 == nbytes(params32)
    logits = next_token_logits(model, params, tok, "Once upon a time")
    assert np.isfinite(logits).all()


def spm_gguf(folder: Path) -> Path:
    """A tiny Llama GGUF with a SentencePiece-style vocabulary (scores, byte fallback, ``▁`` spaces)."""
    words = ["▁", "e", "t", "a", "o", "n", "h", "s", "r", "l", "d", "u", "c", "m", "w", "y", ",", ".", "▁t", "he",
             "▁the", "▁a", "an", "on", "in", "er", "▁w", "▁h", "ll", "▁s", "or", "en", "▁c", "▁he", "▁hello", "hel",
             "lo", "ello", "▁wor", "ld", "▁world", "▁and", "nd", "▁an", "▁on", "▁o", "é", "▁é"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + words
    writer = gguf.GGUFWriter(str(folder / "spm.gguf"), "llama")
    for name, value in [("block_count", 1), ("context_length", 64), ("embedding_length", 32),
                        ("feed_forward_length", 64), ("head_count", 4), ("head_count_kv", 4),
                        ("layer_norm_rms_eps", 1e-5), ("vocab_size", len(tokens))]:
        getattr(writer, f"add_{name}")(value)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(words))])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(words))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (len(tokens), 32), "output_norm.weight": (32,), "output.weight": (len(tokens), 32),
              "blk.0.attn_norm.weight": (32,), "blk.0.ffn_norm.weight": (32,), "blk.0.attn_q.weight": (32, 32),
              "blk.0.attn_k.weight": (32, 32), "blk.0.attn_v.weight": (32, 32), "blk.0.attn_output.weight": (32, 32),
              "blk.0.ffn_gate.weight": (64, 32), "blk.0.ffn_up.weight": (64, 32), "blk.0.ffn_down.weight": (32, 64)}
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return folder / "spm.gguf"


def test_sentencepiece_vocabulary_matches_transformers(tmp_path):
    path = spm_gguf(tmp_path)
    _, _, tok, _ = load_model_and_tokenizer(path)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for text in ["hello world", "the and on", "Hello  World!", "é café", "x\ty 12", "日本"]:
        ours = tok.encode(text, add_special_tokens=False).ids
        assert ours == theirs(text, add_special_tokens=False)["input_ids"], text
        assert decode(tok, ours) == text  # byte fallback round-trips
    assert encode_prompt(tok, "hello")[0] == 1  # SentencePiece vocabularies add BOS (llama.cpp's default)
    # leading spaces: llama.cpp prepends one space and keeps every space (transformers drops one)
    assert tok.encode("  leading", add_special_tokens=False).tokens[:3] == ["▁", "▁", "▁"]
    assert decode(tok, tok.encode("  leading", add_special_tokens=False).ids) == "  leading"
