"""Tokenizer helpers over Hugging Face ``tokenizers``: loading, special tokens, prompt encoding
and readable token pieces for display.

Conventions (the trainer follows them, and other runs usually do): documents are encoded as
``<bos> text <eos>``; the special tokens are found by name among common spellings.

Usage::

    tok = load_tokenizer("output/tokenizer.json")
    ids = encode_prompt(tok, "Once upon a time")      # [bos, Once, upon, a, time]
    show_token(tok, ids[1])                            # 'Once'
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import NamedTuple, Sequence

from tokenizers import Tokenizer

BOS_NAMES = ("<bos>", "<s>", "<|startoftext|>", "<|begin_of_text|>", "[CLS]", "<BOS>")
EOS_NAMES = ("<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>", "[SEP]", "<EOS>")
PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<PAD>")
SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]


class SpecialIds(NamedTuple):
    """Ids of the special tokens; ``None`` where the tokenizer has none."""

    bos: int | None
    eos: int | None
    pad: int | None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a ``tokenizer.json``; a clear error if it is missing or not a tokenizer.

    Usage: ``tok = load_tokenizer("output/tokenizer.json")``
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Could not find tokenizer.json: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        json.loads(text)
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read tokenizer ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: tokenizer is not valid JSON ({err})") from None
    try:
        return Tokenizer.from_str(text)
    except Exception as err:  # tokenizers raises a bare Exception for a malformed file
        raise ValueError(f"{path}: not a Hugging Face tokenizer file ({err})") from None


def _first_id(tokenizer: Tokenizer, names: Sequence[str]) -> int | None:
    for name in names:
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return token_id
    return None


def special_ids(tokenizer: Tokenizer) -> SpecialIds:
    """Find BOS, EOS and PAD ids by their usual names. Usage: ``special_ids(tok).eos``"""
    return SpecialIds(_first_id(tokenizer, BOS_NAMES), _first_id(tokenizer, EOS_NAMES),
                      _first_id(tokenizer, PAD_NAMES))


def encode_prompt(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of a prompt, starting with BOS (or EOS, GPT-2 style, when there is no BOS).

    Usage: ``encode_prompt(tok, "Once upon a time")``
    """
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    special = special_ids(tokenizer)
    start = special.bos if special.bos is not None else special.eos
    if start is not None:
        ids = [start, *ids]
    if not ids:
        raise ValueError("the prompt is empty and the tokenizer has no BOS or EOS token to start from")
    return ids


def decode(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Text of ``ids`` without special tokens. Usage: ``decode(tok, [5, 6, 7])``"""
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def show_token(tokenizer: Tokenizer, token_id: int, max_chars: int = 12) -> str:
    """A readable label for one token: leading space as '␣', newline as '↵', tab as '⇥',
    undecodable byte pieces and control characters as ``<0xNN>``, long pieces shortened with '…'.

    Usage: ``show_token(tok, 42)``
    """
    token_id = int(token_id)
    piece = tokenizer.id_to_token(token_id)
    if piece is None:
        return f"<{token_id}>"
    if piece in SPECIAL_TOKENS or (piece.startswith("<") and piece.endswith(">")) or (
        piece.startswith("[") and piece.endswith("]")
    ):
        text = piece
    else:
        text = tokenizer.decode([token_id], skip_special_tokens=False)
        if "\ufffd" in text:
            raw = _byte_level_bytes(piece)
            text = "".join(f"<0x{b:02X}>" for b in raw) if raw is not None else piece
    text = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")
    text = "".join(f"<0x{ord(ch):02X}>" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text


def _byte_level_bytes(piece: str) -> bytes | None:
    """Bytes behind a GPT-2 byte-level piece, or ``None`` if it is not one."""
    table = _unicode_to_byte()
    try:
        return bytes(table[ch] for ch in piece)
    except KeyError:
        return None


def _unicode_to_byte() -> dict[str, int]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}
