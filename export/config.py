"""Export configuration: nested dataclasses mirrored by the YAML files.

Every section validates itself in `__post_init__` and raises `ConfigError`
naming the dotted field. `load_config` reads YAML, applies dotted overrides
(`quantization.linear=8da8w`) and rejects unknown keys and wrong types.
"""
from __future__ import annotations

import dataclasses
import enum
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import yaml

from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class SourceKind(str, enum.Enum):
    HUB = "hub"          # Hugging Face hub id (needs network)
    LOCAL = "local"      # local Hugging Face folder with config.json
    GGUF = "gguf"        # path to a .gguf file
    PACKAGE = "package"  # "<python package>/<file.gguf>" shipped inside an installed package
    RANDOM = "random"    # random initialisation from `arch` (tests)


class Architecture(str, enum.Enum):
    AUTO = "auto"
    LLAMA = "llama"
    BITNET = "bitnet"


class AttentionKind(str, enum.Enum):
    DENSE = "dense"
    DELTA = "delta"


class DenseKernel(str, enum.Enum):
    DELTALLM = "deltallm"         # our kernel's exact path (flash-style tiles); needs our runtime kernels
    CUSTOM_SDPA = "custom_sdpa"   # ExecuTorch's llama::custom_sdpa: runs on stock ExecuTorch runtimes


class CacheDtype(str, enum.Enum):
    """A cache's format (delegates/formats.py): fp32, fp16, or llama.cpp's q8_0 / q4_0 blocks of 32
    elements with an fp16 scale (8.5 / 4.5 bits per element; head_dim a multiple of 32)."""
    FP32 = "fp32"
    FP16 = "fp16"
    Q8_0 = "q8_0"
    Q4_0 = "q4_0"


class LinearQuant(str, enum.Enum):
    FP32 = "fp32"
    Q8DA8W = "8da8w"      # int8 dynamic activations, int8 per-channel weights
    Q8DA4W = "8da4w"      # int8 dynamic activations, int4 group-wise weights
    TERNARY = "ternary"   # BitNet b1.58: ternary weights stored losslessly as int4 groups


class EmbeddingQuant(str, enum.Enum):
    NONE = "none"
    INT8 = "int8"
    INT4 = "int4"


class BackendKind(str, enum.Enum):
    XNNPACK = "xnnpack"
    PORTABLE = "portable"


def _require(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(name, message)


@dataclass
class ModelConfig:
    kind: SourceKind = SourceKind.RANDOM
    path: str = ""
    architecture: Architecture = Architecture.AUTO
    revision: Optional[str] = None
    seed: int = 0

    def __post_init__(self):
        if self.kind != SourceKind.RANDOM:
            _require(bool(self.path), "model.path", f"required for model.kind={self.kind.value}")
        else:
            _require(self.architecture != Architecture.AUTO, "model.architecture",
                     "must be 'llama' or 'bitnet' for model.kind=random")
        if self.kind == SourceKind.PACKAGE:
            _require("/" in self.path, "model.path",
                     f"expected '<package>/<file.gguf>' for model.kind=package, got {self.path!r}")


@dataclass
class RopeScalingConfig:
    """Llama 3 frequency scaling (rope_type 'llama3')."""

    factor: float = 32.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        _require(self.factor >= 1.0, "arch.rope_scaling.factor", f"must be >= 1, got {self.factor}")
        _require(self.high_freq_factor > self.low_freq_factor > 0, "arch.rope_scaling.high_freq_factor",
                 "must be greater than low_freq_factor > 0")
        _require(self.original_max_position_embeddings > 0,
                 "arch.rope_scaling.original_max_position_embeddings", "must be > 0")


@dataclass
class ArchConfig:
    """Architecture overrides. None means 'take it from the model source'
    (for model.kind=random: from the tiny defaults of `export.arch`)."""

    vocab_size: Optional[int] = None
    dim: Optional[int] = None
    n_layers: Optional[int] = None
    n_heads: Optional[int] = None
    n_kv_heads: Optional[int] = None
    head_dim: Optional[int] = None
    hidden_dim: Optional[int] = None
    norm_eps: Optional[float] = None
    rope_theta: Optional[float] = None
    rope_scaling: Optional[RopeScalingConfig] = None
    tie_embeddings: Optional[bool] = None

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_dim"):
            v = getattr(self, name)
            _require(v is None or v > 0, f"arch.{name}", f"must be > 0, got {v}")
        if self.n_heads and self.n_kv_heads:
            _require(self.n_heads % self.n_kv_heads == 0, "arch.n_kv_heads",
                     f"must divide arch.n_heads ({self.n_heads}), got {self.n_kv_heads}")
        _require(self.norm_eps is None or self.norm_eps > 0, "arch.norm_eps", "must be > 0")
        _require(self.rope_theta is None or self.rope_theta > 0, "arch.rope_theta", "must be > 0")


@dataclass
class AttentionConfig:
    kind: AttentionKind = AttentionKind.DENSE
    theta: float = 0.6
    theta_per_layer: Optional[List[float]] = None
    gamma: float = 0.1
    w_max: int = 1 << 20
    w_decode: int = 4
    dense_kernel: DenseKernel = DenseKernel.DELTALLM   # kind=dense: which attention kernel the program calls
    v_cache: CacheDtype = CacheDtype.FP32   # the V cache's format: fp32, fp16, q8_0 or q4_0
    k_cache: CacheDtype = CacheDtype.FP32   # kind=dense: the K cache's format: fp32, fp16, q8_0 or q4_0
    dk_budget: float = 1.0       # kind=delta: ΔK values stored per key on average / head_dim (1: all)
    calibration: str = ""        # calibration file: key scales and/or per-layer θ (export.calibration)

    def __post_init__(self):
        _require(self.theta >= 0, "attention.theta", f"must be >= 0, got {self.theta}")
        if self.theta_per_layer is not None:
            _require(all(t >= 0 for t in self.theta_per_layer), "attention.theta_per_layer",
                     "every value must be >= 0")
        _require(0.0 <= self.gamma <= 1.0, "attention.gamma", f"must be in [0, 1], got {self.gamma}")
        _require(self.w_max >= 1, "attention.w_max", f"must be >= 1, got {self.w_max}")
        _require(self.w_decode >= 1, "attention.w_decode", f"must be >= 1, got {self.w_decode}")
        _require(self.kind == AttentionKind.DELTA or self.dense_kernel == DenseKernel.DELTALLM
                 or self.v_cache == CacheDtype.FP32, "attention.v_cache",
                 f"{self.v_cache.value} needs attention.kind=delta or attention.dense_kernel=deltallm "
                 "(custom_sdpa keeps ExecuTorch's fp32 caches)")
        _require(0.0 < self.dk_budget <= 1.0, "attention.dk_budget", f"must be in (0, 1], got {self.dk_budget}")
        _require(self.dk_budget == 1.0 or self.kind == AttentionKind.DELTA, "attention.dk_budget",
                 "< 1 needs attention.kind=delta (it sizes the ΔK value stream)")
        _require(self.k_cache == CacheDtype.FP32 or (self.kind == AttentionKind.DENSE
                                                     and self.dense_kernel == DenseKernel.DELTALLM),
                 "attention.k_cache", f"{self.k_cache.value} needs attention.kind=dense with "
                 "attention.dense_kernel=deltallm (the delta program keeps its keys as the fp16 ΔK cache; "
                 "custom_sdpa keeps ExecuTorch's fp32 caches)")


GROUP_SIZES = (16, 32, 64, 128, 256)


@dataclass
class QuantizationConfig:
    linear: LinearQuant = LinearQuant.FP32
    group_size: int = 32            # 8da4w and ternary only (8da8w is per channel)
    embedding: EmbeddingQuant = EmbeddingQuant.NONE
    embedding_group_size: int = 0   # 0 = one scale per row

    def __post_init__(self):
        _require(self.group_size in GROUP_SIZES, "quantization.group_size",
                 f"must be one of {list(GROUP_SIZES)}, got {self.group_size}")
        _require(self.embedding_group_size == 0 or self.embedding_group_size in GROUP_SIZES,
                 "quantization.embedding_group_size",
                 f"must be 0 (per row) or one of {list(GROUP_SIZES)}, got {self.embedding_group_size}")


@dataclass
class ExportSettings:
    max_context_len: int = 512   # KV-cache length
    max_seq_len: int = 128       # longest chunk one forward() call takes
    full_logits: bool = False    # return logits for every position, not only the last

    def __post_init__(self):
        _require(self.max_context_len > 0, "export.max_context_len", f"must be > 0, got {self.max_context_len}")
        _require(self.max_seq_len > 0, "export.max_seq_len", f"must be > 0, got {self.max_seq_len}")
        _require(self.max_seq_len <= self.max_context_len, "export.max_seq_len",
                 f"must be <= export.max_context_len ({self.max_context_len}), got {self.max_seq_len}")


@dataclass
class BackendConfig:
    kind: BackendKind = BackendKind.XNNPACK
    skip_idle_passes: bool = True   # skip XNNPACK passes a partition cannot need (same program, faster)


@dataclass
class ValidationConfig:
    enabled: bool = True
    prompt: str = "The capital of France is Paris. The capital of Germany is"
    decode_steps: int = 4
    max_abs_diff: Optional[float] = None   # None: a default per quantization (validate.py)
    min_top1: Optional[float] = None       # fraction of positions whose argmax agrees

    def __post_init__(self):
        _require(bool(self.prompt), "validation.prompt", "must not be empty")
        _require(self.decode_steps >= 0, "validation.decode_steps", f"must be >= 0, got {self.decode_steps}")
        _require(self.max_abs_diff is None or self.max_abs_diff > 0, "validation.max_abs_diff", "must be > 0")
        _require(self.min_top1 is None or 0.0 <= self.min_top1 <= 1.0, "validation.min_top1",
                 "must be in [0, 1]")


@dataclass
class OutputConfig:
    dir: str = "out"
    name: str = ""   # default: the config's name

    def __post_init__(self):
        _require(not self.name or ("/" not in self.name and self.name not in (".", "..")),
                 "output.name", f"must be a plain file stem, got {self.name!r}")


@dataclass
class ExportConfig:
    name: str = "model"
    model: ModelConfig = field(default_factory=ModelConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    export: ExportSettings = field(default_factory=ExportSettings)
    backend: BackendConfig = field(default_factory=BackendConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        _require(bool(self.name), "name", "must not be empty")
        q, arch = self.quantization, self.model.architecture
        if q.linear == LinearQuant.TERNARY:
            _require(arch in (Architecture.BITNET, Architecture.AUTO), "quantization.linear",
                     "'ternary' is for BitNet models only (model.architecture=bitnet)")
        if arch == Architecture.BITNET:
            _require(q.linear in (LinearQuant.TERNARY, LinearQuant.FP32), "quantization.linear",
                     f"BitNet weights are ternary: use 'ternary' (or 'fp32'), not {q.linear.value!r}")
        if self.backend.kind == BackendKind.PORTABLE:
            _require(q.linear == LinearQuant.FP32, "quantization.linear",
                     f"{q.linear.value!r} needs backend.kind=xnnpack (the portable backend runs fp32 linears only)")
        if self.attention.calibration:
            _require(self.attention.kind == AttentionKind.DELTA, "attention.calibration",
                     "is for attention.kind=delta (it sets delta attention's thresholds)")
            _require(self.attention.theta_per_layer is None, "attention.calibration",
                     "set either attention.calibration or attention.theta_per_layer, not both")
        if self.attention.theta_per_layer is not None and self.arch.n_layers is not None:
            _require(len(self.attention.theta_per_layer) == self.arch.n_layers, "attention.theta_per_layer",
                     f"needs one value per layer ({self.arch.n_layers}), got {len(self.attention.theta_per_layer)}")

    @property
    def output_name(self) -> str:
        return self.output.name or self.name

    def to_dict(self) -> dict:
        return _to_plain(self)


# --------------------------------------------------------------------------- parsing

def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, list):
        return [_to_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], name)
    if origin in (list, List):
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(name, f"expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(name, f"expected a mapping of {list(f.name for f in dataclasses.fields(tp))}, "
                                    f"got {type(value).__name__} {value!r}")
        return _build(tp, value, name)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [m.value for m in tp]
        if isinstance(value, bool) or str(value) not in allowed:
            raise ConfigError(name, f"got {value!r}, allowed: {', '.join(allowed)}")
        return tp(str(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {_type_name(tp)} at {name}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(dotted, f"unknown key (allowed: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # pragma: no cover - defensive
        raise ConfigError(prefix or cls.__name__, str(e)) from e


def resolve_config_path(spec: str) -> Path:
    """A path, or a bare name found in configs/ (with or without .yaml)."""
    p = Path(spec)
    if p.is_file():
        return p
    if p.parent == Path("."):
        for cand in (CONFIG_DIR / spec, CONFIG_DIR / f"{spec}.yaml"):
            if cand.is_file():
                return cand
    known = sorted(c.name for c in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    raise ConfigError("--config", f"no such file {spec!r} (shipped configs: {', '.join(known)})")


def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(item, "override must look like section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(item, "override must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(key, f"cannot parse value {raw!r}: {e}") from e
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is not a section")
        node = nxt
    node[parts[-1]] = value


def config_from_dict(data: dict, overrides: Optional[List[str]] = None) -> ExportConfig:
    data = dict(data or {})
    for item in overrides or []:
        _apply_override(data, item)
    return _build(ExportConfig, data)


def _read_mapping(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError("--config", f"{path} is not valid YAML{at}: {problem}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping at the top level")
    # Relative model and calibration paths are relative to the folder of the file that names them.
    model = data.get("model")
    if isinstance(model, dict) and model.get("kind") in ("local", "gguf") and isinstance(model.get("path"), str):
        mp = Path(os.path.expanduser(model["path"]))
        if not mp.is_absolute() and not mp.exists() and (path.parent / mp).exists():
            model["path"] = str((path.parent / mp).resolve())
    attention = data.get("attention")
    if isinstance(attention, dict) and isinstance(attention.get("calibration"), str) and attention["calibration"]:
        cp = Path(os.path.expanduser(attention["calibration"]))
        if not cp.is_absolute() and not cp.exists() and (path.parent / cp).exists():
            attention["calibration"] = str((path.parent / cp).resolve())
    return data


def _merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: sections merge key by key, anything else is replaced; an empty
    section (`attention:` with nothing under it) changes nothing."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(out.get(key), dict) and (isinstance(value, dict) or value is None):
            out[key] = _merge(out[key], value or {})
        else:
            out[key] = value
    return out


def _load_layers(path: Path, chain: List[Path]) -> dict:
    """A config file with its `base:` files under it (a preset names the config it changes)."""
    data = _read_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError("base", f"in {path}: must name a config file (a path or a shipped config), got {base!r}")
    local = path.parent / os.path.expanduser(base)
    try:
        base_path = local if local.is_file() else resolve_config_path(base)
    except ConfigError as e:
        raise ConfigError("base", f"in {path}: {e.message}") from None
    seen = [c.resolve() for c in chain + [path]]
    if base_path.resolve() in seen:
        loop = " -> ".join(str(c) for c in chain + [path, base_path])
        raise ConfigError("base", f"configs name each other in a loop: {loop}")
    under = _load_layers(base_path, chain + [path])
    under.pop("name", None)   # a preset is named after its own file unless it says otherwise
    return _merge(under, data)


def load_config(spec: str, overrides: Optional[List[str]] = None) -> ExportConfig:
    """Read a config (a path or a shipped name), with the files it names as `base:` under it, then the
    dotted overrides."""
    path = resolve_config_path(spec)
    data = _load_layers(path, [])
    data.setdefault("name", path.stem)
    return config_from_dict(data, overrides)
