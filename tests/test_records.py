"""The rule records: one per rule, and everything derived from them agrees with the rules themselves."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from txtgen_nb import sampling
from txtgen_nb.sampling import RULE, RULES, SamplingSettings
from txtgen_nb.widgets.controls import advanced_sliders, settings_change

LOGITS = jax.random.normal(jax.random.key(3), (4, 64)) * 3.0
CONTEXT = jnp.asarray(np.tile([5, 9, 5, 9, 5, 7, 1, 2, 5, 9], (4, 1)), jnp.int32)
EXAMPLES = {name: (SamplingSettings.off(**fields), stage) for name, (fields, stage) in sampling.examples().items()}


def _inputs(mu=None, coin=None, by_rank=False):
    return sampling.ChainInputs(CONTEXT, CONTEXT, LOGITS, mu, coin, by_rank, stop_ids=jnp.asarray([5, 9, -1]),
                                steps=jnp.full(4, 3))


def test_every_numeric_setting_has_exactly_one_field_record():
    numeric = {f.name for f in dataclasses.fields(SamplingSettings)} - set(sampling.STATIC_FIELDS)
    named = [field.name for rule in RULES for field in rule.fields]
    assert sorted(named) == sorted(numeric)  # none missing, none twice
    assert set(sampling.NUMERIC_FIELDS) == numeric


def test_stages_and_both_chains_are_the_records_in_some_order():
    stages = [rule.stage for rule in RULES]
    assert sampling.Stages._fields == ("raw", *stages)
    for order in sampling.ORDERS:
        assert sorted(sampling.CHAINS[order]) == sorted(stages)
        assert sampling.CHAINS[order][-1] == "mirostat"  # final is Mirostat's stage in every chain
    assert sampling.CHAINS["llama.cpp"][-3:] == ("temperature", "adaptive_p", "mirostat")  # temperature, then the draw


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.stage)
def test_a_rule_is_off_by_default_and_then_returns_its_input(rule):
    off = SamplingSettings.off()
    assert not rule.is_on(off) and not bool(jax.jit(rule.any_on)(off))
    for by_rank in (False, True):  # the chain may skip a rule no row turns on only because of this
        np.testing.assert_array_equal(rule.run(LOGITS, off, _inputs(by_rank=by_rank)), LOGITS)


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_turns_its_rule_on_on_the_host_and_traced_and_changes_the_logits(name):
    s, stage = EXAMPLES[name]
    rule = RULE[stage]
    assert rule.is_on(s) and bool(jax.jit(rule.any_on)(s))
    assert bool(sampling.uses_extras(s))  # every example is beyond the classic four
    out = rule.run(LOGITS, s, _inputs(coin=jnp.zeros(4)))
    assert not np.array_equal(np.asarray(out), np.asarray(LOGITS))
    assert rule.label(s) in s.label()


def test_stacked_rows_turn_a_rule_on_when_any_row_does():
    rows = SamplingSettings.stack([SamplingSettings.off(), SamplingSettings.off(typical_p=0.8)])
    assert RULE["typical"].is_on(rows) and bool(RULE["typical"].any_on(rows))
    assert not RULE["top_k"].is_on(rows)


def test_the_label_names_exactly_the_rules_that_are_on():
    s = SamplingSettings(0.7, 40, 0.9, repetition_penalty=1.2, xtc_probability=0.5, mirostat_tau=3.0)
    on = [rule.label(s) for rule in RULES if rule.is_on(s) and rule.stage != "temperature"]
    assert s.label() == " · ".join(["T=0.7", *on])
    greedy = dataclasses.replace(s, temperature=0.0)  # greedy: only the context processors still act
    assert greedy.label() == "greedy · rep 1.2"


@pytest.mark.parametrize("field", sampling.FIELDS.values(), ids=lambda f: f.name)
def test_each_field_rejects_values_outside_its_range_by_name(field):
    default = getattr(SamplingSettings(), field.name)
    assert field.ok(np.asarray(default))
    bad = [v for v in (-10.0, -1.5, 0.5, 1.5, 10.0) if not field.ok(np.asarray(v)) or field.integer and v % 1]
    assert bad, "every field has values it refuses"
    for value in [bad[0], float("nan"), True]:
        with pytest.raises(ValueError, match=field.name):
            SamplingSettings(**{field.name: value})


def test_the_advanced_sliders_are_the_records_with_sliders():
    sliders = advanced_sliders()
    assert list(sliders) == [f.name for f in sampling.ADVANCED]
    for field in sampling.ADVANCED:
        assert sliders[field.name].value == getattr(sampling.SamplingSettings(), field.name)
        assert field.ok(np.asarray(sliders[field.name].min)) and field.ok(np.asarray(sliders[field.name].max))
    covered = {f.name for f in sampling.ADVANCED} | {"temperature", "top_k", "top_p", "min_p"}
    assert set(sampling.FIELDS) - covered == {"dry_penalty_last_n"}  # the one setting without a slider


def test_settings_change_names_each_field_by_its_record():
    old, new = SamplingSettings(), SamplingSettings(top_k=40, dry_base=2.0)
    assert settings_change(old, new) == "DRY base 1.75 → 2, top-k 50 → 40"


def test_every_compared_rule_gets_the_same_tuning_budget():
    grid = sampling.tuning_grid()
    assert {"top-k", "top-p", "min-p", "typical", "ε", "η", "top-nσ", "XTC", "Mirostat"} == set(grid)
    assert grid["top-p"][0] == SamplingSettings.off(top_p=0.9)  # the usual value first
    hot = sampling.tuning_grid([1.0, 2.0])["min-p"]
    assert [(s.temperature, s.min_p) for s in hot] == [(1.0, 0.1), (2.0, 0.1), (1.0, 0.2), (2.0, 0.2)]
    for name, values in grid.items():
        assert len(values) == sampling.TUNING_BUDGET and len(set(values)) == len(values)
        for s in values:
            on = [rule.stage for rule in RULES if rule.is_on(s) and rule.stage != "temperature"]
            assert len(on) == 1 and s.label().startswith(f"T=1 · {name} ")


def test_the_rules_without_numeric_settings_are_the_static_ones():
    static = [rule.stage for rule in RULES if not rule.fields]
    assert static == ["logit_bias", "bad_words"]
    s = SamplingSettings.off(logit_bias={3: 1.0}, bad_words=[[4]])
    assert all(RULE[name].is_on(s) for name in static) and s.static_key() != SamplingSettings.off().static_key()
    assert s.label() == "T=1 · bias 3:+1 · 1 banned word"


def test_defaults_from_a_hugging_face_generation_config(tmp_path):
    from transformers import GenerationConfig

    given = dict(do_sample=True, temperature=0.6, top_p=0.92, repetition_penalty=1.1, no_repeat_ngram_size=3,
                 min_new_tokens=4, bad_words_ids=[[5, 6]], eos_token_id=2, max_new_tokens=64)
    GenerationConfig(**given).save_pretrained(tmp_path)  # the file as transformers writes it
    s = SamplingSettings.from_generation_config(tmp_path / "generation_config.json")
    assert (s.temperature, s.top_k, s.top_p, s.repetition_penalty) == (0.6, 50, 0.92, 1.1)  # HF's top-k 50 default
    assert (s.no_repeat_ngram_size, s.min_new_tokens, s.bad_words) == (3, 4, ((5, 6),))
    assert SamplingSettings.from_generation_config({"do_sample": False, "temperature": 0.7}).temperature == 0.0
    assert SamplingSettings.from_generation_config({"temperature": 0.7}).temperature == 0.0  # HF: greedy by default
    assert SamplingSettings.from_generation_config({"do_sample": True, "top_k": 40.0}).top_k == 40
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings.from_generation_config({"do_sample": True, "top_p": 1.5})
    with pytest.raises(ValueError, match="JSON object"):
        SamplingSettings.from_generation_config([1, 2])
    with pytest.raises(ValueError, match="cannot read"):
        SamplingSettings.from_generation_config(tmp_path / "missing.json")
    from txtgen_nb.api import model_defaults

    assert model_defaults(tmp_path) == s and model_defaults(tmp_path / "model.safetensors") == s
    (tmp_path / "empty").mkdir()
    assert model_defaults(tmp_path / "empty") is None


@pytest.mark.parametrize("fields", [dict(top_k=10**10), dict(no_repeat_ngram_size=2**33),
                                    dict(logit_bias={2**40: 1.0}), dict(bad_words=[[2**40, 1]])],
                         ids=lambda f: next(iter(f)))
def test_integers_beyond_int32_are_refused_by_name_not_inside_jit(fields):
    with pytest.raises(ValueError, match=next(iter(fields))):
        SamplingSettings(**fields)
