"""Tokenizer helpers over Hugging Face ``tokenizers``: loading, special tokens, prompt encoding
and readable token pieces for display.

Conventions: a model's own special tokens (:class:`SpecialTokens`: the BOS it adds or none, the ids
that end a turn, its chat template) are attached to its tokenizer by the loader, read from the GGUF
metadata or the Hugging Face folder. Our own run folders (the trainer's) keep ``<bos> text <eos>``,
the special tokens found by name among common spellings.

Usage::

    tok = load_tokenizer("output/tokenizer.json")
    ids = encode_prompt(tok, "Once upon a time")      # [bos, Once, upon, a, time]
    show_token(tok, ids[1])                            # 'Once'
    special_tokens(tok).stop                           # (eos,): the ids that end generation
    encode_prompt(smol_tok, "Hi!", chat=True)          # the model's chat template around the user's message
"""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from pathlib import Path
from typing import NamedTuple, Sequence

from tokenizers import Tokenizer

BOS_NAMES = ("<bos>", "<s>", "<|startoftext|>", "<|begin_of_text|>", "[CLS]", "<BOS>")
EOS_NAMES = ("<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>", "[SEP]", "<EOS>")
PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<PAD>")
SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]
END_OF_TURN_NAMES = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>",
                     "<|end_of_text|>", "</s>", "<eos>")
"""Tokens that end a turn in common chat formats (llama.cpp treats these as end-of-generation too)."""
_ATTRIBUTE = "_txtgen_special_tokens"


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """A model's conventions around its text.

    Usage: ``SpecialTokens(bos=None, stop=(2, 0), chat_template="{% for m in messages %}...", source="model.gguf")``
    """

    bos: int | None  # prepended to every prompt; None where the model adds none (GPT-2, SmolLM2)
    stop: tuple[int, ...]  # ids that end generation: EOS and the end-of-turn tokens
    chat_template: str | None = None  # Jinja template over ``messages`` (GGUF / tokenizer_config.json)
    start: int | None = None  # what an empty prompt starts from when there is no BOS
    source: str = "the tokenizer's token names"  # where these were read, for the loading line

    @property
    def eos(self) -> int | None:
        """The first stop id (the model's EOS), or ``None``."""
        return self.stop[0] if self.stop else None


def attach_special_tokens(tokenizer: Tokenizer, special: SpecialTokens) -> Tokenizer:
    """Give ``tokenizer`` the model's own special tokens (the loaders do this); returns it.

    Usage: ``attach_special_tokens(tok, SpecialTokens(bos=None, stop=(2,)))``
    """
    setattr(tokenizer, _ATTRIBUTE, special)
    return tokenizer


def special_tokens(tokenizer: Tokenizer) -> SpecialTokens:
    """The model's special tokens: those the loader attached, else our run folders' convention
    (BOS, or EOS GPT-2 style, first; EOS ends). Usage: ``special_tokens(tok).stop``"""
    attached = getattr(tokenizer, _ATTRIBUTE, None)
    if attached is not None:
        return attached
    bos, eos = _first_id(tokenizer, BOS_NAMES), _first_id(tokenizer, EOS_NAMES)
    return SpecialTokens(bos=bos if bos is not None else eos, stop=() if eos is None else (eos,))


def end_of_turn_ids(tokenizer: Tokenizer, *ids: int | None) -> tuple[int, ...]:
    """``ids`` (the model's EOS) followed by the end-of-turn tokens the vocabulary has, without repeats."""
    found = [*ids, *(tokenizer.token_to_id(name) for name in END_OF_TURN_NAMES)]
    return tuple(dict.fromkeys(int(i) for i in found if i is not None))


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
    """BOS, EOS and PAD ids: the attached :class:`SpecialTokens`, else by their usual names.

    Usage: ``special_ids(tok).eos``"""
    attached = getattr(tokenizer, _ATTRIBUTE, None)
    if attached is not None:
        return SpecialIds(attached.bos, attached.eos, _first_id(tokenizer, PAD_NAMES))
    return SpecialIds(_first_id(tokenizer, BOS_NAMES), _first_id(tokenizer, EOS_NAMES),
                      _first_id(tokenizer, PAD_NAMES))


def chat_text(tokenizer: Tokenizer, message: str) -> str:
    """``message`` as the user's turn in the model's chat template, ready for the assistant's reply.

    Usage: ``chat_text(tok, "What is the capital of France?")  # '<|im_start|>system\n...<|im_start|>assistant\n'``
    """
    special = special_tokens(tokenizer)
    if special.chat_template is None:
        raise ValueError(f"this model has no chat template ({special.source}): use it without chat")
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(text: str) -> None:
        raise ValueError(f"the model's chat template refused the message: {text}")

    name = lambda i: None if i is None else tokenizer.id_to_token(i)  # noqa: E731
    try:
        template = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]).from_string(special.chat_template)
        return template.render(messages=[{"role": "user", "content": message}], add_generation_prompt=True,
                               bos_token=name(special.bos if special.bos is not None else special.start) or "",
                               eos_token=name(special.eos) or "", raise_exception=raise_exception)
    except jinja2.TemplateError as err:
        raise ValueError(f"the model's chat template does not render ({special.source}): {err}") from None


def encode_prompt(tokenizer: Tokenizer, text: str, chat: bool = False) -> list[int]:
    """Token ids of a prompt as the model expects them: its BOS first where it adds one (our run
    folders: BOS, or EOS GPT-2 style); with ``chat``, the prompt as the user's message in the model's
    chat template (which writes its own special tokens).

    Usage: ``encode_prompt(tok, "Once upon a time")``
    """
    special = special_tokens(tokenizer)
    if chat:
        return tokenizer.encode(chat_text(tokenizer, text), add_special_tokens=False).ids
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if special.bos is not None:
        ids = [special.bos, *ids]
    if not ids and special.start is not None:
        ids = [special.start]
    if not ids:
        raise ValueError("the prompt is empty and the tokenizer has no BOS or EOS token to start from")
    return ids


def decode(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Text of ``ids`` without special tokens. Usage: ``decode(tok, [5, 6, 7])``"""
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def shown_prompt(tokenizer: Tokenizer, ids: Sequence[int], templated: bool = False) -> str:
    """The text a view shows for a prompt's ids: without special tokens, except for a chat
    template's own markers (``<|im_start|>user ...``), which the views show greyed.

    Usage: ``shown_prompt(tok, trace.prompt_ids[0], trace.templated)``
    """
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=not templated)


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
            raw = byte_level_bytes(piece)
            text = "".join(f"<0x{b:02X}>" for b in raw) if raw is not None else piece
    text = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")
    text = "".join(f"<0x{ord(ch):02X}>" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text


def byte_level_bytes(piece: str) -> bytes | None:
    """Bytes behind a GPT-2 byte-level piece, or ``None`` if it is not one.

    Usage: ``byte_level_bytes("Ġcat")  # b" cat"``
    """
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
