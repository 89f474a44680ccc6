"""model_config.json: aliases, unknown keys kept, errors naming file and key."""

from __future__ import annotations

import json

import pytest

from txtgen_nb.config import ModelConfig, config_from_dict, load_config, save_config

BASE = {"vocab_size": 100, "max_len": 64, "d_model": 32, "num_layers": 2, "num_heads": 4}


@pytest.mark.parametrize("key,field,value", [
    ("max_length", "max_len", 77), ("max_seq_len", "max_len", 77), ("block_size", "max_len", 77),
    ("n_positions", "max_len", 77), ("model_size", "d_model", 48), ("hidden_size", "d_model", 48),
    ("n_embd", "d_model", 48), ("embed_dim", "d_model", 48), ("n_layers", "num_layers", 3),
    ("n_layer", "num_layers", 3), ("num_hidden_layers", "num_layers", 3), ("n_heads", "num_heads", 2),
    ("n_head", "num_heads", 2), ("mlp_dim", "d_ff", 99), ("intermediate_size", "d_ff", 99),
    ("maxlen", "max_len", 77), ("feed_forward_dim", "d_ff", 99), ("num_transformer_blocks", "num_layers", 3),
    ("num_key_value_heads", "num_kv_heads", 2), ("rms_norm_eps", "layer_norm_eps", 1e-6),
])
def test_aliases(key, field, value):
    raw = {k: v for k, v in BASE.items() if k != field}
    raw[key] = value
    assert getattr(config_from_dict(raw), field) == value


def test_unknown_keys_round_trip(tmp_path):
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps({**BASE, "n_embd": 32, "learning_rate": 0.001, "notes": "hi"}))
    config = load_config(path)
    assert config.extra == {"learning_rate": 0.001, "notes": "hi"}
    assert config.d_ff == 128
    save_config(config, tmp_path / "copy.json")
    assert load_config(tmp_path / "copy.json") == config
    assert json.loads((tmp_path / "copy.json").read_text())["notes"] == "hi"


@pytest.mark.parametrize("content,fragment", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({k: v for k, v in BASE.items() if k != "num_heads"}), "missing key 'num_heads'"),
    (json.dumps({**BASE, "d_model": "big"}), "'d_model' must be an integer"),
    (json.dumps({**BASE, "num_heads": 5}), "must divide 'd_model'"),
    (json.dumps({**BASE, "num_layers": 0}), "'num_layers' must be a positive integer"),
    (json.dumps({**BASE, "n_layer": 3}), "disagree"),
    (json.dumps({**BASE, "norm": "batchnorm"}), "'norm' must be one of layernorm, rmsnorm"),
    (json.dumps({**BASE, "activation": "tanh"}), "'activation' must be one of"),
    (json.dumps({**BASE, "positions": "alibi"}), "'positions' must be one of learned, rope, none"),
    (json.dumps({**BASE, "num_kv_heads": 3}), "'num_kv_heads' (3) must divide 'num_heads' (4)"),
    (json.dumps({**BASE, "qkv_fused": "yes"}), "'qkv_fused' must be true or false"),
])
def test_errors_name_file_and_key(tmp_path, content, fragment):
    path = tmp_path / "model_config.json"
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert fragment in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="Model config not found"):
        load_config(tmp_path / "model_config.json")


def test_dataclass_validates():
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig(**BASE, dtype="int8")
    assert ModelConfig(**BASE).head_dim == 8


def test_architecture_defaults_and_round_trip(tmp_path):
    config = ModelConfig(**BASE)
    assert (config.norm, config.norm_position, config.activation, config.positions, config.num_kv_heads) == (
        "layernorm", "pre", "gelu_tanh", "learned", 4)
    llama = ModelConfig(**BASE, norm="rmsnorm", activation="swiglu", positions="rope", num_kv_heads=2,
                        qkv_fused=False, rope_theta=5e5)
    save_config(llama, tmp_path / "model_config.json")
    assert load_config(tmp_path / "model_config.json") == llama
