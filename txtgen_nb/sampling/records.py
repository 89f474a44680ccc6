"""One record per sampling rule: its settings, "is it on", the function, its label and panel title.

Everything that lists the rules is derived from :data:`RULES`: the two chains, :class:`Stages`,
settings validation, ``SamplingSettings.label()``, which rules the decode loop's full chain needs,
the pipeline view's panels, the Advanced sliders and notebook 07's examples. Adding a rule is one
:class:`Rule` here, its function beside its kind (``classic``, ``processors``, ``truncation``) and
its tests.

A rule's ``on`` is one expression of the settings that works on host numbers (``Rule.is_on``, a
``bool``) and on traced or stacked arrays (``Rule.any_on``, a traced ``bool``): comparisons joined
with ``&`` and ``|``.

Usage::

    RULE["typical"].is_on(SamplingSettings.off(typical_p=0.9))   # True
    [rule.stage for rule in RULES if rule.context]                # the context processors
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from txtgen_nb.sampling import classic, processors, truncation
from txtgen_nb.sampling.base import NEG_INF, Array, entropy

Settings = Any  # a SamplingSettings (records are read by settings.py, so they do not import it)


@dataclasses.dataclass(frozen=True)
class Field:
    """One numeric setting of ``SamplingSettings``: its valid range and how people see it."""

    name: str
    rule: str  # the error text after the name: "must be >= 0"
    ok: Callable[[np.ndarray], np.ndarray]  # the range check on a finite array
    title: str  # in "what changed" lines: "top-k 50 → 40"
    integer: bool = False
    slider: tuple[float, float, float] | None = None  # (low, high, step) in the Advanced section; None: none there
    hf: bool = False  # a Hugging Face generation_config.json key of the same name and meaning


class ChainInputs(NamedTuple):
    """What the rules read besides the logits and the settings."""

    ids: Array | None  # [..., T] int32 context ids, right-aligned; None: no context, processors skipped
    generated: Array | None  # [..., T] the same with the prompt's ids set to -1 (presence, frequency)
    processed: Array | None  # [..., V] logits after the context processors: greedy keeps their argmax
    mu: Array | None  # [...] Mirostat's μ; None: its start, 2τ
    coin: Array | None  # [...] XTC's uniform draw; None: it fires
    by_rank: bool  # llama.cpp's cuts: exactly a count of tokens by rank, no extra ties (static)
    stop_ids: Array | None = None  # [S] int32 ids that end a row (EOS, end of turn), -1 unused; None: none known
    steps: Array | None = None  # [...] int32 tokens generated so far (min_new_tokens)
    adaptive: Array | None = None  # [..., 2] adaptive-p's history (weighted sum, total weight); None: its start


@dataclasses.dataclass(frozen=True)
class Rule:
    """One sampling rule (or stage of the chain) and everything the toolkit says and does about it."""

    stage: str  # its field of Stages, its name in the chains
    origin: str  # where it comes from, for docs and tooltips
    fields: tuple[Field, ...]  # the settings it reads
    on: Callable[[Settings], Any]  # whether it changes anything: host bool or bool array (see the module doc)
    run: Callable[[Array, Settings, ChainInputs], Array]  # the rule on [..., V] logits
    label: Callable[[Settings], str]  # its part of SamplingSettings.label()
    title: Callable[[Settings, np.ndarray, np.ndarray, float | None], str] | None = None  # (s, before, after, μ)
    context: bool = False  # a context processor: needs the ids, acts even when greedy
    greedy_too: bool = False  # acts on the raw logits before greedy's argmax, though it needs no context
    classic: bool = False  # one of the four rules filter_logits_fast computes
    beyond_fast: Callable[[Settings], Any] | None = None  # a classic rule's settings the fast path does not do
    names: tuple[str, ...] = ()  # its other names in a custom order: llama.cpp's --samplers names and aliases
    examples: tuple[tuple[str, dict[str, Any]], ...] = ()  # (name, numeric fields) at work (notebook 07's batch)
    tuning: tuple[dict[str, Any], ...] = ()  # notebook 07's comparison: its usual value first, then one more the
    # literature uses; every compared rule gets TUNING_BUDGET values, so none wins by being tuned harder

    @property
    def processor(self) -> bool:
        """Whether it acts before greedy's argmax (the context processors and logit bias)."""
        return self.context or self.greedy_too

    def is_on(self, s: Settings) -> bool:
        """Whether any row of ``s`` (host values) turns the rule on. Usage: ``RULE["top_k"].is_on(s)``"""
        return bool(np.any(self.on(s)))

    def any_on(self, s: Settings) -> Array:
        """The same for traced settings: a traced ``bool``. Usage: ``lax.cond(rule.any_on(s), ...)``"""
        return jnp.any(jnp.asarray(self.on(s)))

    def needs_full(self, s: Settings) -> bool:
        """Whether the decode loop needs the full chain for this rule (host values): a rule beyond
        the classic four when on, a classic one when its settings go beyond the fast path (dynamic
        temperature). Usage: ``any(r.needs_full(s) for r in RULES)``"""
        if not self.classic:
            return self.is_on(s)
        return self.beyond_fast is not None and bool(np.any(self.beyond_fast(s)))

    def panel_title(self, s: Settings, before: np.ndarray, after: np.ndarray, mu: float | None = None) -> str:
        """The pipeline panel's title: the rule, its setting, its key number (from its input ``before``)
        and how many tokens it removed. Usage: ``rule.panel_title(s, before, after)``"""
        removed = int(np.isfinite(before).sum() - np.isfinite(after).sum())
        text = self.label(s) if self.title is None else self.title(s, before, after, mu)
        return text + (f" (−{removed})" if removed else "")


HF_KEYS = {"temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty",
           "no_repeat_ngram_size", "min_new_tokens"}


def _field(name: str, title: str, rule: str, ok, slider=None, integer: bool = False) -> Field:
    return Field(name, rule, ok, title, integer, slider, hf=name in HF_KEYS)


def _between(low: float, high: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda v: (low <= v) & (v <= high)


def _penalties(x: Array, s: Settings, c: ChainInputs) -> Array:
    x = processors.apply_repetition_penalty(x, c.ids, s.repetition_penalty)
    return processors.apply_presence_frequency(x, c.generated, s.presence_penalty, s.frequency_penalty)


def _penalties_label(s: Settings, sep: str = " · ") -> str:
    parts = (("rep", s.repetition_penalty, 1), ("presence", s.presence_penalty, 0),
             ("frequency", s.frequency_penalty, 0))
    return sep.join(f"{name} {value:g}" for name, value, off in parts if value != off)


def _temperature(x: Array, s: Settings, c: ChainInputs) -> Array:
    """Divide by the (dynamic) temperature; at ``T <= 0`` keep only one token (greedy): the argmax of
    the processed logits in Hugging Face's order (it skips the warpers), of the tokens still in play
    in llama.cpp's and free orders (llama.cpp's temperature at 0)."""
    greedy_from = x if c.processed is None or c.by_rank else c.processed
    t = classic.effective_temperature(x, s.temperature, s.dynatemp_range, s.dynatemp_exponent)
    is_max = jax.nn.one_hot(jnp.argmax(greedy_from, axis=-1), x.shape[-1], dtype=bool)
    return jnp.where(t > 0, x / jnp.where(t > 0, t, 1.0), jnp.where(is_max, greedy_from, NEG_INF))


def _temperature_label(s: Settings) -> str:
    if s.temperature <= 0:
        return "greedy"
    dynamic = f"±{s.dynatemp_range:g}" + (f"^{s.dynatemp_exponent:g}" if s.dynatemp_exponent != 1 else "")
    return f"T={s.temperature:g}" + (dynamic if s.dynatemp_range > 0 else "")


def _temperature_title(s: Settings, before: np.ndarray, _after, _mu) -> str:
    if s.dynatemp_range <= 0 or s.temperature <= 0:
        return f"temperature {s.temperature:g}"
    t = float(np.asarray(classic.effective_temperature(jnp.asarray(before), s.temperature, s.dynatemp_range,
                                                       s.dynatemp_exponent)).reshape(-1)[0])
    return f"temperature {s.temperature:g}±{s.dynatemp_range:g}: T={t:.2f}"


def _top_n_sigma_title(s: Settings, before: np.ndarray, _after, _mu) -> str:
    finite = before[np.isfinite(before)]
    return f"top-nσ {s.top_n_sigma:g}: logit ≥ {finite.max() - s.top_n_sigma * finite.std():.2f}"


def _xtc_on(s: Settings) -> Any:
    return (s.xtc_probability > 0) & (s.xtc_threshold <= 0.5)


def _xtc_title(s: Settings, before: np.ndarray, after: np.ndarray, _mu) -> str:
    fired = np.isfinite(after).sum() < np.isfinite(before).sum()
    return f"XTC {s.xtc_threshold:g}: {'fired' if fired else 'not fired'}"


def _adaptive_title(s: Settings, before: np.ndarray, after: np.ndarray, _mu) -> str:
    return f"adaptive-p {s.adaptive_target:g} (decay {s.adaptive_decay:g})"


def _mirostat_title(s: Settings, _before, _after, mu: float | None) -> str:
    return f"Mirostat τ={s.mirostat_tau:g}" + ("" if mu is None else f": μ={mu:.2f} bits")


def _dry_on(s: Settings) -> Any:
    return (s.dry_multiplier > 0) & (s.dry_penalty_last_n != 0)


def _bias_label(s: Settings) -> str:
    return "bias " + ", ".join(f"{i}:{b:+g}" for i, b in s.logit_bias[:3]) + (" …" if len(s.logit_bias) > 3 else "")


def _bad_words_label(s: Settings) -> str:
    return f"{len(s.bad_words)} banned word" + ("s" if len(s.bad_words) != 1 else "")


RULES: tuple[Rule, ...] = (
    Rule("logit_bias", "OpenAI logit_bias; llama.cpp logit-bias (its first sampler)", (),
         on=lambda s: bool(s.logit_bias), run=lambda x, s, c: processors.apply_logit_bias(x, s.logit_bias),
         label=_bias_label, greedy_too=True, names=("logit-bias", "bias")),
    Rule("penalties", "repetition: Hugging Face / CTRL (Keskar et al. 2019); presence, frequency: OpenAI",
         (_field("repetition_penalty", "repetition ×", "must be > 0 (1 = off)", lambda v: v > 0, (0.5, 2.0, 0.05)),
          _field("presence_penalty", "presence", "must be between -2 and 2", _between(-2, 2), (-2.0, 2.0, 0.1)),
          _field("frequency_penalty", "frequency", "must be between -2 and 2", _between(-2, 2), (-2.0, 2.0, 0.1))),
         on=lambda s: (s.repetition_penalty != 1) | (s.presence_penalty != 0) | (s.frequency_penalty != 0),
         run=_penalties, label=_penalties_label,
         title=lambda s, _before, _after, _mu: f"penalties ({_penalties_label(s, ', ')})", context=True,
         names=("repetition", "repeat"),
         examples=(("repetition penalty", dict(repetition_penalty=1.5)),
                   ("presence + frequency", dict(presence_penalty=1.0, frequency_penalty=0.5)))),
    Rule("no_repeat_ngram", "Hugging Face NoRepeatNGramLogitsProcessor (from fairseq)",
         (_field("no_repeat_ngram_size", "no-repeat n", "must be an integer >= 0", lambda v: v >= 0, (0, 6, 1), True),),
         on=lambda s: s.no_repeat_ngram_size > 0,
         run=lambda x, s, c: processors.apply_no_repeat_ngram(x, c.ids, s.no_repeat_ngram_size),
         label=lambda s: f"no-repeat {s.no_repeat_ngram_size}-gram", context=True, names=("no_repeat",),
         examples=(("no-repeat 2-grams", dict(no_repeat_ngram_size=2)),)),
    Rule("bad_words", "Hugging Face NoBadWordsLogitsProcessor (bad_words_ids)", (),
         on=lambda s: bool(s.bad_words),
         run=lambda x, s, c: processors.apply_bad_words(x, c.ids, s.bad_words),
         label=_bad_words_label, context=True, names=("bad_words_ids", "banned")),
    Rule("min_new_tokens", "Hugging Face MinNewTokensLengthLogitsProcessor",
         (_field("min_new_tokens", "min new tokens", "must be an integer >= 0", lambda v: v >= 0, (0, 100, 1), True),),
         on=lambda s: s.min_new_tokens > 0,
         run=lambda x, s, c: processors.apply_min_new_tokens(x, c.stop_ids, c.steps, s.min_new_tokens),
         label=lambda s: f"at least {s.min_new_tokens} new", greedy_too=True, names=("min_length",),
         examples=(("min new tokens", dict(min_new_tokens=30)),)),
    Rule("dry", "llama.cpp DRY (from koboldcpp, by pi6am)",
         (_field("dry_multiplier", "DRY ×", "must be >= 0", lambda v: v >= 0, (0.0, 2.0, 0.05)),
          _field("dry_base", "DRY base", "must be >= 1", lambda v: v >= 1, (1.0, 3.0, 0.05)),
          _field("dry_allowed_length", "DRY free len", "must be an integer >= 1", lambda v: v >= 1, (1, 8, 1), True),
          _field("dry_penalty_last_n", "DRY last n", "must be an integer >= -1 (-1 = whole context, 0 = off)",
                 lambda v: v >= -1, integer=True)),
         on=_dry_on,
         run=lambda x, s, c: processors.apply_dry(x, c.ids, s.dry_multiplier, s.dry_base, s.dry_allowed_length,
                                                  s.dry_penalty_last_n, s.dry_sequence_breakers),
         label=lambda s: f"DRY {s.dry_multiplier:g}×{s.dry_base:g}^(n-{s.dry_allowed_length})",
         title=lambda s, _before, _after, _mu: f"DRY ×{s.dry_multiplier:g}", context=True,
         examples=(("DRY", dict(dry_multiplier=2.0, dry_allowed_length=1)),)),
    Rule("top_n_sigma", "llama.cpp top-nσ (Tang et al. 2024)",
         (_field("top_n_sigma", "top-nσ", "must be >= 0", lambda v: v >= 0, (0.0, 5.0, 0.1)),),
         on=lambda s: s.top_n_sigma > 0, run=lambda x, s, c: truncation.apply_top_n_sigma(x, s.top_n_sigma),
         label=lambda s: f"top-nσ {s.top_n_sigma:g}", title=_top_n_sigma_title, names=("top-n-sigma",),
         examples=(("top-nσ", dict(top_n_sigma=1.0)),), tuning=(dict(top_n_sigma=1.0), dict(top_n_sigma=2.0))),
    Rule("temperature", "Ackley et al. 1985, every library; dynamic: llama.cpp temp-ext (from koboldcpp)",
         (_field("temperature", "temperature", "must be >= 0", lambda v: v >= 0),
          _field("dynatemp_range", "dynamic T ±", "must be >= 0 (0 = off)", lambda v: v >= 0, (0.0, 2.0, 0.05)),
          _field("dynatemp_exponent", "dynamic T exp", "must be >= 0", lambda v: v >= 0, (0.0, 4.0, 0.1))),
         on=lambda s: (s.temperature != 1) | (s.dynatemp_range > 0), run=_temperature, label=_temperature_label,
         title=_temperature_title, classic=True, beyond_fast=lambda s: s.dynatemp_range > 0, names=("temp",),
         examples=(("dynamic temperature", dict(temperature=1.0, dynatemp_range=0.8)),)),
    Rule("top_k", "Fan et al. 2018",
         (_field("top_k", "top-k", "must be an integer >= 0", lambda v: v >= 0, integer=True),),
         on=lambda s: s.top_k > 0,
         run=lambda x, s, c: (classic.apply_top_k_by_rank if c.by_rank else classic.apply_top_k)(x, s.top_k),
         label=lambda s: f"top-k {s.top_k}", classic=True, tuning=(dict(top_k=40), dict(top_k=10)), names=("top-k",)),
    Rule("top_p", "nucleus sampling (Holtzman et al. 2020)",
         (_field("top_p", "top-p", "must be between 0 and 1", _between(0, 1)),),
         on=lambda s: s.top_p < 1,
         run=lambda x, s, c: (classic.apply_top_p_by_rank if c.by_rank else classic.apply_top_p)(x, s.top_p),
         label=lambda s: f"top-p {s.top_p:g}", classic=True, tuning=(dict(top_p=0.9), dict(top_p=0.7)),
         names=("top-p", "nucleus")),
    Rule("min_p", "min-p (Nguyen et al. 2024)",
         (_field("min_p", "min-p", "must be between 0 and 1", _between(0, 1)),),
         on=lambda s: s.min_p > 0, run=lambda x, s, c: classic.apply_min_p(x, s.min_p),
         label=lambda s: f"min-p {s.min_p:g}", classic=True, tuning=(dict(min_p=0.1), dict(min_p=0.2)),
         names=("min-p",)),
    Rule("typical", "Hugging Face TypicalLogitsWarper (Meister et al. 2022)",
         (_field("typical_p", "typical p", "must be > 0 and <= 1 (1 = off)", lambda v: (0 < v) & (v <= 1),
                 (0.05, 1.0, 0.01)),),
         on=lambda s: s.typical_p < 1, run=lambda x, s, c: truncation.apply_typical(x, s.typical_p),
         label=lambda s: f"typical {s.typical_p:g}", names=("typ_p", "typical_p", "typical-p", "typ-p", "typ"),
         title=lambda s, before, _after, _mu: f"typical {s.typical_p:g}: H={float(entropy(before)):.2f}",
         examples=(("typical", dict(typical_p=0.5)),), tuning=(dict(typical_p=0.9), dict(typical_p=0.5))),
    Rule("epsilon", "Hugging Face EpsilonLogitsWarper (Hewitt et al. 2022)",
         (_field("epsilon_cutoff", "epsilon", "must be >= 0 and < 1", lambda v: (0 <= v) & (v < 1),
                 (0.0, 0.02, 0.0005)),),
         on=lambda s: s.epsilon_cutoff > 0, run=lambda x, s, c: truncation.apply_epsilon(x, s.epsilon_cutoff),
         label=lambda s: f"ε {s.epsilon_cutoff:g}", names=("epsilon_cutoff",),
         examples=(("epsilon", dict(epsilon_cutoff=0.01)),),
         tuning=(dict(epsilon_cutoff=3e-4), dict(epsilon_cutoff=3e-3))),
    Rule("eta", "Hugging Face EtaLogitsWarper (Hewitt et al. 2022)",
         (_field("eta_cutoff", "eta", "must be >= 0 and < 1", lambda v: (0 <= v) & (v < 1), (0.0, 0.02, 0.0005)),),
         on=lambda s: s.eta_cutoff > 0, run=lambda x, s, c: truncation.apply_eta(x, s.eta_cutoff),
         label=lambda s: f"η {s.eta_cutoff:g}", names=("eta_cutoff",),
         examples=(("eta", dict(eta_cutoff=0.01)),), tuning=(dict(eta_cutoff=3e-4), dict(eta_cutoff=3e-3))),
    Rule("xtc", "llama.cpp XTC, exclude top choices (by p-e-w)",
         (_field("xtc_threshold", "XTC threshold", "must be between 0 and 1", _between(0, 1), (0.0, 0.5, 0.01)),
          _field("xtc_probability", "XTC chance", "must be between 0 and 1", _between(0, 1), (0.0, 1.0, 0.05))),
         on=_xtc_on,
         run=lambda x, s, c: truncation.apply_xtc(x, s.xtc_threshold, s.xtc_probability, c.coin, c.by_rank),
         label=lambda s: f"XTC {s.xtc_threshold:g} @ {s.xtc_probability:g}", title=_xtc_title,
         examples=(("XTC", dict(xtc_threshold=0.1, xtc_probability=0.5)),),
         tuning=(dict(xtc_threshold=0.1, xtc_probability=0.5),
                 dict(xtc_threshold=0.1, xtc_probability=0.25))),
    Rule("adaptive_p", "llama.cpp adaptive-p (PR #17927)",
         (_field("adaptive_target", "adaptive-p target", "must be between 0 and 1 (0 = off)", _between(0, 1),
                 (0.0, 1.0, 0.05)),
          _field("adaptive_decay", "adaptive-p decay", "must be between 0 and 0.99", _between(0, 0.99),
                 (0.0, 0.99, 0.01))),
         on=lambda s: s.adaptive_target > 0,
         run=lambda x, s, c: truncation.apply_adaptive_p(x, s.adaptive_target, c.adaptive, s.adaptive_decay),
         label=lambda s: f"adaptive-p {s.adaptive_target:g}" + (f" decay {s.adaptive_decay:g}"
                                                               if s.adaptive_decay != 0.9 else ""),
         title=_adaptive_title, names=("adaptive-p", "adaptive"),
         examples=(("adaptive-p", dict(adaptive_target=0.3, min_p=0.05)),)),  # llama.cpp: min-p before it
    Rule("mirostat", "llama.cpp Mirostat v2 (Basu et al. 2021)",
         (_field("mirostat_tau", "Mirostat τ", "must be >= 0", lambda v: v >= 0, (0.0, 10.0, 0.1)),
          _field("mirostat_eta", "Mirostat η", "must be >= 0", lambda v: v >= 0, (0.0, 1.0, 0.01))),
         on=lambda s: s.mirostat_tau > 0, run=lambda x, s, c: truncation.apply_mirostat(x, s.mirostat_tau, c.mu),
         label=lambda s: f"Mirostat τ={s.mirostat_tau:g} η={s.mirostat_eta:g}",
         title=_mirostat_title,
         examples=(("Mirostat", dict(mirostat_tau=3.0)),), tuning=(dict(mirostat_tau=3.0), dict(mirostat_tau=5.0))),
)
RULE: dict[str, Rule] = {rule.stage: rule for rule in RULES}
FIELDS: dict[str, Field] = {field.name: field for rule in RULES for field in rule.fields}
ADVANCED: tuple[Field, ...] = tuple(f for rule in RULES for f in rule.fields if f.slider)
"""The settings the Advanced section has sliders for, in chain order."""

ORDERS = ("hf", "llama.cpp")
TUNING_BUDGET = 2
"""How many values of its own each rule gets in notebook 07's comparison (``Rule.tuning``)."""
CHAINS: dict[str, tuple[str, ...]] = {
    "hf": tuple(rule.stage for rule in RULES),  # RULES are listed in Hugging Face's order
    "llama.cpp": ("logit_bias", "penalties", "no_repeat_ngram", "bad_words", "min_new_tokens", "dry", "top_n_sigma",
                  "top_k", "typical", "top_p", "min_p", "epsilon", "eta", "xtc", "temperature", "adaptive_p",
                  "mirostat"),
}


_BY_NAME = {name: rule.stage for rule in RULES for name in (rule.stage, *rule.names)}
_LAST = ("adaptive_p", "mirostat")  # the rules that draw: after every other stage in every order


def chain(order: str) -> tuple[str, ...]:
    """The stages an ``order`` applies: ``"hf"``, ``"llama.cpp"`` or a free order like llama.cpp's
    ``--samplers`` string, stage names (or llama.cpp's, e.g. ``typ_p``) joined by ``;``. A free order
    runs only the stages it names, cutting by rank as llama.cpp does; a logit bias (not a
    ``--samplers`` name) runs first unless named elsewhere; adaptive-p and Mirostat, which draw, always
    last (llama.cpp appends adaptive-p after the others wherever it is named). An unknown or repeated
    name raises ``ValueError``.

    Usage: ``chain("top_k;typ_p;temperature")  # ('logit_bias', 'top_k', 'typical', 'temperature', 'mirostat')``
    """
    if order in CHAINS:
        return CHAINS[order]
    names = [name.strip() for name in str(order).split(";") if name.strip()]
    unknown = [name for name in names if name not in _BY_NAME]
    if unknown or not names:
        raise ValueError(f"order must be one of {', '.join(ORDERS)} or stage names joined by ';' "
                         f"({', '.join(CHAINS['hf'])}), got {order!r}")
    stages = [_BY_NAME[name] for name in names if _BY_NAME[name] not in _LAST]
    if len(set(stages)) < len(stages):
        raise ValueError(f"order names a stage twice: {order!r}")
    first = () if "logit_bias" in stages else ("logit_bias",)  # llama.cpp always applies a logit bias first
    return (*first, *stages, *_LAST)


def stage_names(order: str = "hf") -> tuple[str, ...]:
    """The stages in the order the chain applies them, ``"raw"`` first.

    Usage: ``[getattr(stages, n) for n in stage_names(settings.order)]``
    """
    return ("raw",) + chain(order)


def stage_before(stage: str, order: str = "hf") -> str:
    """The stage whose result ``stage`` takes in ``order`` (``"raw"`` for the first): what adaptive-p's
    and Mirostat's updates read. Usage: ``stage_before("mirostat", s.order)  # 'adaptive_p'``"""
    names = stage_names(order)
    return names[names.index(stage) - 1]


class Stages(collections.namedtuple("Stages", ("raw",) + CHAINS["hf"])):
    """The logits after each stage (``-inf`` = removed): ``raw`` then one field per rule of
    :data:`RULES`; ``.final`` is the filtered result. Field order is Hugging Face's chain order: see
    :func:`stage_names` for each chain's. Stages that are off pass their input on."""

    __slots__ = ()

    @property
    def final(self) -> Array:
        """The logits to sample from (Mirostat is last in every chain)."""
        return self.mirostat


def examples() -> dict[str, tuple[dict[str, Any], str]]:
    """Settings that show each rule at work, by name: ``{name: (fields, stage)}`` (notebook 07).

    Usage: ``SamplingSettings.off(**examples()["typical"][0])``
    """
    return {name: (fields, rule.stage) for rule in RULES for name, fields in rule.examples}

