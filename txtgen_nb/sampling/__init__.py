"""Pure, jittable sampling rules and the one settings object they share.

Every rule works on logits ``[..., vocab]`` and takes its settings as numbers or traced arrays
broadcastable to the leading axes ``[...]`` (one setting per row is fine), so changing a setting
never recompiles a jitted caller. Removed tokens get ``-inf``. Each rule is off by default.

Two chains (``SamplingSettings.order``; or a free order, llama.cpp's ``--samplers`` string: see
:func:`chain`), both starting with the processors (logit bias, repetition, presence and frequency
penalties, no-repeat n-grams, banned words, ``min_new_tokens``, DRY) and ending with Mirostat:

* ``"hf"`` (Hugging Face ``generate``): top-nσ → temperature → top-k → top-p → min-p → typical →
  epsilon → eta → XTC (top-nσ, not a Hugging Face rule, keeps the same tokens before or after
  temperature);
* ``"llama.cpp"`` (its default chain): top-nσ → top-k → typical → top-p → min-p → epsilon → eta →
  XTC → temperature. Top-k, top-p and XTC cut by rank there, as llama.cpp does: top-k keeps exactly
  ``min(k, n)`` tokens and no cut keeps extra tokens tied with its last one (ties ranked by id);
  the Hugging Face order keeps every token tied at a boundary, as Hugging Face does.

Temperature 0 is greedy: the argmax after the processors in Hugging Face's order (which skips the
warpers when greedy), the argmax of the tokens still in play in llama.cpp's and free orders (its
temperature at 0). Dynamic temperature (``dynatemp_range``) at temperature 0 is greedy too, where
llama.cpp would sample between 0 and the range.

``context`` is an int array ``[..., T]`` of the token ids seen so far (prompt then generated),
right-aligned: the newest token last, padding (negative ids) only on the left.

The package: :mod:`~txtgen_nb.sampling.records` has one record per rule (its settings and their
ranges, "is it on", the function, label, panel title, slider), from which the chains, ``Stages``,
validation, labels, the pipeline's panels and the Advanced sliders are derived; the functions live
by kind in ``classic`` (with the sort-free fast path beside the rules it must equal),
``processors`` and ``truncation``; ``settings`` has :class:`SamplingSettings`; ``chain`` runs them.

Usage::

    s = SamplingSettings(temperature=0.8, top_k=50, repetition_penalty=1.2)
    filtered = filter_logits(logits, s, context=ids)
    token = sample_token(jax.random.key(0), logits, s, context=ids)
    filter_logits(logits, temperature=0.8, top_p=0.9)      # keywords: unnamed rules are off
"""

from __future__ import annotations

from txtgen_nb.sampling.base import NEG_INF, Array, ArrayLike, entropy, probabilities, sort_descending
from txtgen_nb.sampling.chain import VOCAB_BUCKET_MIN, before_cuts, filter_logits, filter_stages, sample_token
from txtgen_nb.sampling.classic import (TOP_K_CAP, apply_min_p, apply_temperature, apply_top_k, apply_top_k_by_rank,
                                        apply_top_p, apply_top_p_by_rank, effective_temperature, filter_logits_fast)
from txtgen_nb.sampling.processors import (DRY_DEFAULT_BREAKERS, apply_bad_words, apply_dry, apply_logit_bias,
                                           apply_min_new_tokens, apply_no_repeat_ngram, apply_presence_frequency,
                                           apply_repetition_penalty, breaker_ids, token_counts)
from txtgen_nb.sampling.records import (ADVANCED, CHAINS, FIELDS, ORDERS, RULE, RULES, TUNING_BUDGET, ChainInputs,
                                        Field, Rule, Stages, chain, examples, stage_before, stage_names)
from txtgen_nb.sampling.settings import (INT_FIELDS, NUMERIC_FIELDS, STATIC_FIELDS, SamplingSettings, tuning_grid,
                                         uses_extras)
from txtgen_nb.sampling.truncation import (adaptive_initial_state, adaptive_update, apply_adaptive_p, apply_epsilon,
                                           apply_eta, apply_mirostat, apply_top_n_sigma, apply_typical, apply_xtc,
                                           mirostat_initial_mu, mirostat_update)

__all__ = [
    "ADVANCED", "CHAINS", "DRY_DEFAULT_BREAKERS", "FIELDS", "INT_FIELDS", "NEG_INF", "NUMERIC_FIELDS", "ORDERS",
    "RULE", "RULES", "STATIC_FIELDS", "TOP_K_CAP", "TUNING_BUDGET", "VOCAB_BUCKET_MIN", "Array", "ArrayLike",
    "ChainInputs", "Field",
    "Rule", "SamplingSettings", "Stages", "adaptive_initial_state", "adaptive_update", "apply_adaptive_p",
    "apply_bad_words", "before_cuts", "apply_dry", "apply_epsilon", "apply_eta",
    "apply_logit_bias", "apply_min_new_tokens", "apply_min_p", "apply_mirostat", "apply_no_repeat_ngram",
    "apply_presence_frequency", "apply_repetition_penalty", "apply_temperature", "apply_top_k", "apply_top_k_by_rank",
    "apply_top_n_sigma", "apply_top_p", "apply_top_p_by_rank", "apply_typical", "apply_xtc", "breaker_ids", "chain",
    "effective_temperature", "entropy", "examples", "filter_logits", "filter_logits_fast", "filter_stages",
    "mirostat_initial_mu", "mirostat_update", "probabilities", "sample_token", "sort_descending", "stage_before",
    "stage_names",
    "token_counts", "tuning_grid", "uses_extras",
]
