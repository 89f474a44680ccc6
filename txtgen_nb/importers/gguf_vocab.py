"""The tokenizer and special tokens stored in a GGUF file's metadata, as a ``tokenizers.Tokenizer``.

Two vocabulary kinds (``tokenizer.ggml.model``): ``gpt2`` (byte-level BPE with merges; the
pre-tokenizer named by ``tokenizer.ggml.pre`` from :data:`PRE_TOKENIZERS`) and ``llama``
(SentencePiece-style: pieces with scores, ``▁`` for spaces, ``<0xNN>`` byte fallback; merges derived
from the scores as llama.cpp's tokenizer applies them). Control tokens are special: never shown as
text. BOS only where ``tokenizer.ggml.add_bos_token`` says the model adds one; the stop set is
``eos_token_id``, ``eot_token_id``/``eom_token_id`` and the end-of-turn tokens the vocabulary has.

Usage::

    tokenizer = gguf_vocab.read_tokenizer(reader, path)   # special_tokens(tokenizer) attached
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from txtgen_nb.importers.gguf import field
from txtgen_nb.tokenizer import SpecialTokens, attach_special_tokens, end_of_turn_ids

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")


def _split(pattern: str) -> list:
    return [pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]


PRE_TOKENIZERS: dict[str, list] = {
    "default": [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)],
    "gpt2": [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)],
    "smollm": [pre_tokenizers.Digits(individual_digits=True),
               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)],
    "starcoder": [pre_tokenizers.Digits(individual_digits=True),
                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)],
    "llama-bpe": _split(_LLAMA3_SPLIT),
    "llama3": _split(_LLAMA3_SPLIT),
    "qwen2": _split(_QWEN2_SPLIT),
}
"""``tokenizer.ggml.pre`` -> the Hugging Face pre-tokenizer that splits text as llama.cpp's regexes do."""


def _bpe(reader: Any, tokens: list[str], path: Path) -> Tokenizer:
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"{path}: GGUF pre-tokenizer {pre!r} is not supported (supported: {', '.join(PRE_TOKENIZERS)})")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges", [])]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                     ignore_merges=pre in ("llama-bpe", "llama3")))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(PRE_TOKENIZERS[pre])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _spm_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """Merges of a SentencePiece vocabulary: every split of a piece into two pieces, the merged
    piece's score first (the order llama.cpp's tokenizer merges in)."""
    ids = {t: i for i, t in enumerate(tokens)}
    found = [(-scores[ids[piece]], ids[piece[:k]], ids[piece[k:]], piece[:k], piece[k:])
             for piece in tokens for k in range(1, len(piece)) if piece[:k] in ids and piece[k:] in ids]
    return [(left, right) for *_, left, right in sorted(found)]


def _spm(reader: Any, tokens: list[str], path: Path) -> Tokenizer:
    scores = [float(s) for s in field(reader, "tokenizer.ggml.scores", [0.0] * len(tokens))]
    unk = field(reader, "tokenizer.ggml.unknown_token_id")
    model = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=_spm_merges(tokens, scores),
                       unk_token=None if unk is None else tokens[unk], fuse_unk=True, byte_fallback=True)
    tokenizer = Tokenizer(model)
    prefix = bool(field(reader, "tokenizer.ggml.add_space_prefix", True))
    tokenizer.normalizer = normalizers.Sequence(
        ([normalizers.Prepend("▁")] if prefix else []) + [normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
                                          + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tokenizer


def read_tokenizer(reader: Any, path: Path) -> Tokenizer:
    """The file's tokenizer with its :class:`~txtgen_nb.tokenizer.SpecialTokens` attached.

    Usage: ``tok = gguf_vocab.read_tokenizer(gguf_file.open_file(path), path)``
    """
    kind = field(reader, "tokenizer.ggml.model")
    tokens = field(reader, "tokenizer.ggml.tokens")
    if kind not in ("gpt2", "llama") or not tokens:
        raise ValueError(f"{path}: GGUF tokenizer {kind!r} is not supported (supported: gpt2 BPE, llama SentencePiece)")
    tokenizer = _bpe(reader, tokens, path) if kind == "gpt2" else _spm(reader, tokens, path)
    types = field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                  for i, t in enumerate(types) if t == CONTROL])
    tokenizer.add_tokens([AddedToken(tokens[i], normalized=False) for i, t in enumerate(types) if t == USER_DEFINED])
    return attach_special_tokens(tokenizer, special_tokens_of(reader, tokenizer, path))


def special_tokens_of(reader: Any, tokenizer: Tokenizer, path: Path) -> SpecialTokens:
    """BOS where the model adds one, the stop set and the chat template from the metadata."""
    get = lambda key: field(reader, f"tokenizer.ggml.{key}")  # noqa: E731
    bos = get("bos_token_id")
    add_bos = get("add_bos_token")
    if add_bos is None:  # llama.cpp's default: SentencePiece vocabularies add BOS, BPE ones do not
        add_bos = get("model") == "llama"
    stop = end_of_turn_ids(tokenizer, get("eos_token_id"), get("eot_token_id"), get("eom_token_id"))
    return SpecialTokens(bos=bos if add_bos else None, stop=stop, chat_template=field(reader, "tokenizer.chat_template"),
                         start=bos if bos is not None else get("eos_token_id"), source=str(path))
