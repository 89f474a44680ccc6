"""``SamplingSettings``: one row's settings (or many rows', stacked), validated from the rule records.

Usage: ``SamplingSettings(temperature=0.7, top_p=0.9, repetition_penalty=1.2).label()``
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from txtgen_nb.sampling.records import FIELDS, ORDERS, RULE, RULES, Field, chain


def _check(field: Field, value: Any) -> None:
    if isinstance(value, jax.core.Tracer):
        return  # traced inside a jitted caller: checked where it was built
    problem = f"{field.name} {field.rule}, got {value!r}"
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(problem)
    arr = np.asarray(value) if isinstance(value, (int, float, np.ndarray, np.generic, jax.Array)) else None
    if arr is None or arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)) or not np.all(field.ok(arr)):
        raise ValueError(problem)
    if field.integer and (not np.all(np.mod(arr, 1) == 0) or np.any(np.abs(arr) >= INT32_LIMIT)):
        raise ValueError(problem)


INT32_LIMIT = 2**31  # integer settings and token ids are int32 in the compiled program


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < INT32_LIMIT


def _bias_pairs(bias: Any) -> tuple[tuple[int, float], ...]:
    """``logit_bias`` as sorted ``(id, bias)`` pairs, from pairs or a ``{id: bias}`` dict (the OpenAI form)."""
    problem = f"logit_bias must be {{token id: finite bias}} or (id, bias) pairs, got {bias!r}"
    try:
        pairs = [(i, b) for i, b in (bias.items() if isinstance(bias, dict) else bias)]
    except (TypeError, ValueError):
        raise ValueError(problem) from None
    finite = [isinstance(b, (int, float, np.number)) and not isinstance(b, bool) and np.isfinite(b) for _, b in pairs]
    if not all(_is_id(i) for i, _ in pairs) or not all(finite):
        raise ValueError(problem)
    return tuple(sorted((int(i), float(b)) for i, b in pairs))


def _sequences(words: Any) -> tuple[tuple[int, ...], ...]:
    """``bad_words`` as a tuple of non-empty tuples of token ids."""
    problem = f"bad_words must be sequences of token ids >= 0, e.g. [[42], [7, 9]], got {words!r}"
    if isinstance(words, (str, bytes)):
        raise ValueError(problem)
    try:
        out = tuple(tuple(seq) for seq in words)
    except TypeError:
        raise ValueError(problem) from None
    if not all(seq and all(_is_id(i) for i in seq) for seq in out):
        raise ValueError(problem)
    return tuple(tuple(int(i) for i in seq) for seq in out)


def _whole(name: str, value: Any) -> Any:
    """An integer setting written as a whole float in JSON (``40.0``) as an int; other values as they are."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _on_here(rule, s) -> bool:
    """``rule.is_on(s)``, or ``False`` while the settings are traced (checked where they were built)."""
    return not any(isinstance(getattr(s, f.name), jax.core.Tracer) for f in rule.fields) and rule.is_on(s)


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """One row's sampling settings (or, from :meth:`stack`, one array per field for many rows).

    A JAX pytree: the numeric fields are leaves (traced, so changing them never recompiles);
    :data:`STATIC_FIELDS` (``order``, DRY breakers, ``logit_bias``, ``bad_words``) are static.
    Every rule beyond the first four is off by default. Validated on construction from each
    field's record (:data:`~txtgen_nb.sampling.FIELDS`): a bad value raises one ``ValueError``
    naming the field.

    Usage: ``SamplingSettings(temperature=0.7, top_p=0.9, repetition_penalty=1.2)``
    """

    temperature: float = 0.8  # 0 = greedy (argmax after the processors; in llama.cpp order of the tokens left)
    top_k: int = 50  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # HF/CTRL, over prompt and generated ids; 1 = off
    presence_penalty: float = 0.0  # OpenAI, over generated ids; 0 = off
    frequency_penalty: float = 0.0  # OpenAI, per occurrence in the generated ids; 0 = off
    no_repeat_ngram_size: int = 0  # HF: never repeat an n-gram of the context; 0 = off
    typical_p: float = 1.0  # HF locally typical sampling; 1 = off
    epsilon_cutoff: float = 0.0  # HF: drop tokens below this probability; 0 = off
    eta_cutoff: float = 0.0  # HF: entropy-dependent epsilon; 0 = off
    top_n_sigma: float = 0.0  # llama.cpp: keep logits within n standard deviations of the max; 0 = off
    xtc_threshold: float = 0.1  # llama.cpp XTC: "top choices" have at least this probability; > 0.5 = off
    xtc_probability: float = 0.0  # llama.cpp XTC: chance per step to exclude the top choices; 0 = off
    dry_multiplier: float = 0.0  # llama.cpp DRY penalty scale; 0 = off
    dry_base: float = 1.75  # DRY: penalty grows as base ** (repeat length - allowed length)
    dry_allowed_length: int = 2  # DRY: repeats this long are free
    dry_penalty_last_n: int = -1  # DRY: how many recent tokens to scan; -1 = whole context, 0 = off
    mirostat_tau: float = 0.0  # llama.cpp Mirostat v2 target surprise in bits; 0 = off
    mirostat_eta: float = 0.1  # Mirostat learning rate
    dynatemp_range: float = 0.0  # llama.cpp dynamic T: T ± this, by the entropy of the tokens in play; 0 = off
    dynatemp_exponent: float = 1.0  # dynamic temperature: how the normalised entropy maps onto the range
    min_new_tokens: int = 0  # HF: the stop ids (EOS, end of turn) removed until this many new tokens; 0 = off
    adaptive_target: float = 0.0  # llama.cpp adaptive-p: favour tokens near this probability; 0 = off
    adaptive_decay: float = 0.9  # adaptive-p: memory of its running average, about 1 / (1 - decay) tokens
    dry_sequence_breakers: tuple[int, ...] = ()  # token ids that end a DRY repeat (static: changing recompiles)
    order: str = "hf"  # "hf", "llama.cpp" (temperature last) or stage names joined by ";"; static
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) added to the raw logits (a dict works); static
    bad_words: tuple[tuple[int, ...], ...] = ()  # HF bad_words_ids: token sequences never completed; static

    def __post_init__(self) -> None:
        for field in FIELDS.values():
            _check(field, getattr(self, field.name))
        stages = chain(self.order)  # raises on an unknown order
        left_out = [rule.stage for rule in RULES if rule.stage not in stages and _on_here(rule, self)]
        if left_out:
            raise ValueError(f"order {self.order!r} leaves out {', '.join(left_out)}, which the settings turn on")
        breakers = self.dry_sequence_breakers
        if not isinstance(breakers, tuple) or not all(_is_id(b) for b in breakers):
            raise ValueError(f"dry_sequence_breakers must be a tuple of token ids >= 0, got {breakers!r}")
        object.__setattr__(self, "logit_bias", _bias_pairs(self.logit_bias))
        object.__setattr__(self, "bad_words", _sequences(self.bad_words))

    @classmethod
    def off(cls, **fields: Any) -> SamplingSettings:
        """Temperature 1 and every rule off, then ``fields`` (the keyword form of the functions).

        Usage: ``SamplingSettings.off(top_p=0.9)``
        """
        return cls(**{"temperature": 1.0, "top_k": 0, **fields})

    @classmethod
    def stack(cls, rows: Sequence[SamplingSettings]) -> SamplingSettings:
        """Rows stacked into one settings object of ``[len(rows)]`` arrays (the same static fields).

        Usage: ``filter_logits(logits[:3], SamplingSettings.stack([a, b, c]))``
        """
        rows = list(rows)
        if not rows:
            raise ValueError("stack needs at least one row of settings")
        aux = _flatten(rows[0])[1]
        if any(_flatten(r)[1] != aux for r in rows):
            raise ValueError(f"stacked rows must share {', '.join(STATIC_FIELDS)}")
        leaves = [np.asarray([getattr(r, f) for r in rows], np.int32 if FIELDS[f].integer else np.float32)
                  for f in NUMERIC_FIELDS]
        return _unflatten(aux, leaves)

    @classmethod
    def from_generation_config(cls, config: dict[str, Any] | str | Path) -> SamplingSettings:
        """The defaults a Hugging Face ``generation_config.json`` (a path or its dict) gives, as
        ``generate`` reads them: greedy unless ``do_sample`` is true (Hugging Face's default is
        false), else its sampling keys (the fields whose record says ``hf``, and ``bad_words_ids``)
        over Hugging Face's own defaults (temperature 1, top-k 50). Other keys (beams,
        ``sequence_bias``, ``suppress_tokens``, ...) are ignored.

        Usage: ``SamplingSettings.from_generation_config("smollm2/generation_config.json")``
        """
        if isinstance(config, (str, Path)):
            path = Path(config)
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot read generation config {path}: {err}") from None
        if not isinstance(config, dict):
            raise ValueError(f"a generation config is a JSON object of settings, got {type(config).__name__}")
        fields = {"temperature": 1.0, "top_k": 50}
        fields.update({name: config[name] for name, f in FIELDS.items() if f.hf and config.get(name) is not None})
        fields.update({name: _whole(name, fields[name]) for name in fields if FIELDS[name].integer})
        if config.get("bad_words_ids"):
            fields["bad_words"] = config["bad_words_ids"]
        if not config.get("do_sample", False):
            fields["temperature"] = 0.0
        return cls(**fields)

    def static_key(self) -> tuple:
        """The static fields' values: rows with equal keys share one compiled program and one batch.

        Usage: ``a.static_key() == b.static_key()``
        """
        return _flatten(self)[1]

    def is_greedy(self) -> bool:
        """Whether every draw ignores the seed: temperature 0, top-k 1 or top-p 0 leave one token
        (Mirostat aside, which keeps its own choice). Usage: ``SamplingSettings(0.0).is_greedy()``"""
        return self.mirostat_tau <= 0 and (self.temperature <= 0 or self.top_k == 1 or self.top_p <= 0)

    def label(self) -> str:
        """A short label naming the active rules, e.g. ``"T=0.8 · top-k 50 · top-p 0.9"`` (at
        temperature 0 only the context processors, which still act).

        Usage: ``SamplingSettings(0.0, 0, repetition_penalty=1.3).label()  # 'greedy · rep 1.3'``
        """
        greedy = self.temperature <= 0
        parts = [RULE["temperature"].label(self)]
        parts += [rule.label(self) for rule in RULES
                  if rule.stage != "temperature" and (rule.processor or not greedy) and rule.is_on(self)]
        if self.order != "hf":
            parts.append(f"{self.order} order" if self.order in ORDERS else f"order {self.order}")
        return " · ".join(parts)


NUMERIC_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingSettings) if f.name in FIELDS)
"""The traced fields, in the dataclass's order (the pytree's leaves)."""
INT_FIELDS = tuple(name for name in NUMERIC_FIELDS if FIELDS[name].integer)


STATIC_FIELDS = ("dry_sequence_breakers", "order", "logit_bias", "bad_words")
"""The fields that are part of the compiled program (changing one recompiles; rows stacked together share them)."""


def _flatten(s: SamplingSettings):
    return tuple(getattr(s, f) for f in NUMERIC_FIELDS), tuple(getattr(s, f) for f in STATIC_FIELDS)


def _unflatten(aux, leaves) -> SamplingSettings:
    obj = object.__new__(SamplingSettings)  # leaves may be tracers or placeholders: no validation
    for name, value in [*zip(NUMERIC_FIELDS, leaves), *zip(STATIC_FIELDS, aux)]:
        object.__setattr__(obj, name, value)
    return obj


jax.tree_util.register_pytree_node(SamplingSettings, _flatten, _unflatten)


def uses_extras(s: SamplingSettings) -> bool:
    """Whether any row uses a rule beyond the classic four (temperature, top-k, top-p, min-p), a
    setting of theirs beyond the fast path (dynamic temperature) or an order other than ``"hf"``: the
    decode loop then runs the full chain. Read on the host, in NumPy: no JAX op to compile at start.

    Usage: ``_decode(..., full=uses_extras(settings))``
    """
    if s.order != "hf":
        return True
    host = jax.tree_util.tree_map(np.asarray, s)
    return any(rule.needs_full(host) for rule in RULES)


def tuning_grid(temperatures: Sequence[float] = (1.0,)) -> dict[str, list[SamplingSettings]]:
    """Each compared rule's values for notebook 07's comparison (``Rule.tuning``: the usual one first,
    the same number for every rule), each at every one of ``temperatures``, by the rule's name in labels.

    Usage: ``tuning_grid()["top-p"]  # [SamplingSettings.off(top_p=0.9), SamplingSettings.off(top_p=0.7)]``
    """
    grid = {}
    for rule in RULES:
        if rule.tuning:
            rows = [SamplingSettings.off(temperature=t, **fields) for fields in rule.tuning for t in temperatures]
            grid[rule.label(rows[0]).split()[0]] = rows
    return grid
