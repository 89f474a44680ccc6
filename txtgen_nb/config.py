"""Model configuration: the ``ModelConfig`` dataclass and ``model_config.json`` I/O.

Training scripts spell the same hyper-parameter many ways (``n_embd``, ``hidden_size``,
``d_model``...). ``load_config`` accepts the common aliases, keeps unknown keys in
``ModelConfig.extra`` and names the file and key in every error.

Usage::

    cfg = load_config("output/model_config.json")
    save_config(cfg, "run/model_config.json")
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

ALIASES: dict[str, tuple[str, ...]] = {
    "vocab_size": ("vocab_size", "n_vocab", "vocab"),
    "max_len": ("max_len", "maxlen", "max_length", "max_seq_len", "block_size", "n_positions", "n_ctx",
                "max_position_embeddings", "context_length", "seq_len"),
    "d_model": ("d_model", "model_size", "hidden_size", "n_embd", "embed_dim", "emb_dim"),
    "num_layers": ("num_layers", "n_layers", "n_layer", "num_hidden_layers", "layers", "depth",
                   "num_transformer_blocks"),
    "num_heads": ("num_heads", "n_heads", "n_head", "num_attention_heads", "heads"),
    "d_ff": ("d_ff", "mlp_dim", "intermediate_size", "ffn_dim", "n_inner", "hidden_dim", "feed_forward_dim"),
    "tie_embeddings": ("tie_embeddings", "tie_word_embeddings", "tied_embeddings", "share_embeddings"),
    "layer_norm_eps": ("layer_norm_eps", "layer_norm_epsilon", "ln_eps", "norm_eps", "rms_norm_eps"),
    "dtype": ("dtype", "param_dtype", "torch_dtype"),
    "num_kv_heads": ("num_kv_heads", "num_key_value_heads", "n_kv_heads"),
    **{name: (name,) for name in ("norm", "norm_bias", "norm_position", "final_norm", "activation", "positions",
                                  "rope_theta", "qkv_fused", "qkv_bias", "out_bias", "mlp_bias", "head_bias")},
}
REQUIRED = ("vocab_size", "max_len", "d_model", "num_layers", "num_heads")
_BOOL_FIELDS = ("tie_embeddings", "norm_bias", "final_norm", "qkv_fused", "qkv_bias", "out_bias", "mlp_bias",
                "head_bias")
_INT_FIELDS = ("vocab_size", "max_len", "d_model", "num_layers", "num_heads", "d_ff", "num_kv_heads")
CHOICES: dict[str, tuple[str, ...]] = {
    "norm": ("layernorm", "rmsnorm"),
    "norm_position": ("pre", "post"),
    "activation": ("gelu_tanh", "gelu", "relu", "swiglu"),
    "positions": ("learned", "rope", "none"),
    "dtype": ("float32", "bfloat16", "float16"),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the decoder-only transformer.

    Usage: ``ModelConfig(vocab_size=4096, max_len=128, d_model=256, num_layers=4, num_heads=4)``
    """

    vocab_size: int
    max_len: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int = 0  # 0: 4 * d_model
    tie_embeddings: bool = True  # head = embedding transposed
    layer_norm_eps: float = 1e-5  # epsilon of every norm (LayerNorm or RMSNorm)
    dtype: str = "float32"
    norm: str = "layernorm"  # or "rmsnorm" (Llama)
    norm_bias: bool = True  # LayerNorm with a bias (ignored for RMSNorm, which has none)
    norm_position: str = "pre"  # "pre": x + f(norm(x)); "post": norm(x + f(x)) (original Transformer, miniGPT)
    final_norm: bool = True  # a norm before the head
    activation: str = "gelu_tanh"  # "gelu" (exact erf), "relu", "swiglu" (SiLU-gated, Llama)
    positions: str = "learned"  # "rope" (rotary, Llama) or "none"
    rope_theta: float = 10000.0  # rotary base frequency
    qkv_fused: bool = True  # one q/k/v projection (GPT-2) or three (miniGPT, Llama)
    qkv_bias: bool = True
    out_bias: bool = True  # bias of the attention output projection
    mlp_bias: bool = True
    num_kv_heads: int = 0  # 0: num_heads; fewer gives grouped-query attention
    head_bias: bool = False  # bias of an untied output head
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.num_kv_heads == 0:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"config field '{name}' must be a positive integer, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"config field 'num_heads' ({self.num_heads}) must divide 'd_model' ({self.d_model})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"config field 'num_kv_heads' ({self.num_kv_heads}) must divide 'num_heads' ({self.num_heads})"
            )
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"config field '{name}' must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``model_config.json`` (unknown keys kept)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **data}


def config_from_dict(raw: dict[str, Any], source: str = "model config") -> ModelConfig:
    """Build a ``ModelConfig`` from a dict, resolving key aliases.

    Usage: ``config_from_dict({"n_embd": 64, "n_layer": 2, ...})``
    """
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    values: dict[str, Any] = {}
    used: set[str] = set()
    for field, names in ALIASES.items():
        present = [n for n in names if n in raw]
        if not present:
            continue
        distinct = {json.dumps(raw[n]) for n in present}
        if len(distinct) > 1:
            raise ValueError(f"{source}: keys {', '.join(present)} disagree for '{field}'")
        values[field] = raw[present[0]]
        used.update(present)
    for field in REQUIRED:
        if field not in values:
            raise ValueError(
                f"{source}: missing key '{field}' (or one of: {', '.join(ALIASES[field][1:])})"
            )
    for field in _INT_FIELDS:
        if field in values:
            value = values[field]
            if isinstance(value, float) and value.is_integer():
                values[field] = int(value)
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{source}: key '{field}' must be an integer, got {value!r}")
    for field in _BOOL_FIELDS:
        if field in values and not isinstance(values[field], bool):
            raise ValueError(f"{source}: key '{field}' must be true or false, got {values[field]!r}")
    extra = {k: v for k, v in raw.items() if k not in used}
    try:
        return ModelConfig(**values, extra=extra)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None


def load_config(path: str | Path) -> ModelConfig:
    """Read ``model_config.json``; errors name the file and the key.

    Usage: ``cfg = load_config("output/model_config.json")``
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model config not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read model config ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: model config is not valid JSON ({err})") from None
    return config_from_dict(raw, source=str(path))


def save_config(config: ModelConfig, path: str | Path) -> None:
    """Write ``config`` as pretty JSON. Usage: ``save_config(cfg, "run/model_config.json")``"""
    Path(path).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
