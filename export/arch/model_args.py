"""Resolved architecture hyper-parameters, from a HF config or from overrides."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional

from ..config import ArchConfig, Architecture, RopeScalingConfig
from ..errors import ConfigError

# Defaults for model.kind=random when `arch` leaves a field unset: a tiny model.
TINY_DEFAULTS = dict(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128,
                     norm_eps=1e-5, rope_theta=10000.0, tie_embeddings=True)


@dataclass
class ModelArgs:
    architecture: Architecture
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int
    norm_eps: float
    rope_theta: float
    tie_embeddings: bool
    rope_scaling: Optional[RopeScalingConfig] = None
    bos_id: Optional[int] = None
    eos_ids: List[int] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["architecture"] = self.architecture.value
        return d


def _check_arch(args: ModelArgs) -> ModelArgs:
    if args.n_heads % args.n_kv_heads:
        raise ConfigError("arch.n_kv_heads", f"must divide n_heads ({args.n_heads}), got {args.n_kv_heads}")
    if args.head_dim % 2:
        raise ConfigError("arch.head_dim", f"must be even for rotary embeddings, got {args.head_dim}")
    return args


def _overrides(arch: ArchConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(arch).items() if v is not None and k != "rope_scaling"}


def args_from_overrides(architecture: Architecture, arch: ArchConfig) -> ModelArgs:
    """For model.kind=random: tiny defaults, replaced by whatever `arch` sets."""
    values = dict(TINY_DEFAULTS)
    values.update(_overrides(arch))
    values.setdefault("head_dim", values["dim"] // values["n_heads"])
    return _check_arch(ModelArgs(architecture=architecture, rope_scaling=arch.rope_scaling,
                                 bos_id=1, eos_ids=[2], **values))


def _eos_list(eos) -> List[int]:
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def args_from_hf_config(hf, architecture: Architecture, arch: ArchConfig) -> ModelArgs:
    """Map a transformers LlamaConfig / BitNetConfig, then apply `arch` overrides."""
    n_heads = hf.num_attention_heads
    rope_params = getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {}
    rope_theta = rope_params.get("rope_theta", getattr(hf, "rope_theta", 10000.0))
    scaling = None
    rope_type = rope_params.get("rope_type", rope_params.get("type", "default"))
    if rope_type == "llama3":
        scaling = RopeScalingConfig(
            factor=float(rope_params["factor"]),
            low_freq_factor=float(rope_params["low_freq_factor"]),
            high_freq_factor=float(rope_params["high_freq_factor"]),
            original_max_position_embeddings=int(rope_params["original_max_position_embeddings"]))
    elif rope_type not in ("default", None):
        raise ConfigError("model.path", f"rope type {rope_type!r} is not supported (supported: default, llama3)")
    values = dict(
        vocab_size=hf.vocab_size, dim=hf.hidden_size, n_layers=hf.num_hidden_layers, n_heads=n_heads,
        n_kv_heads=getattr(hf, "num_key_value_heads", None) or n_heads,
        head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // n_heads,
        hidden_dim=hf.intermediate_size, norm_eps=hf.rms_norm_eps, rope_theta=float(rope_theta),
        tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)))
    values.update(_overrides(arch))
    return _check_arch(ModelArgs(architecture=architecture, rope_scaling=arch.rope_scaling or scaling,
                                 bos_id=getattr(hf, "bos_token_id", None),
                                 eos_ids=_eos_list(getattr(hf, "eos_token_id", None)), **values))
