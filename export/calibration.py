"""Delta-attention calibration files (`attention.calibration`): per-layer θ and key scales.

A key scale s[l][h][p] multiplies RoPE pair p (dims p and p + D/2) of kv head h's keys in
layer l, and divides the same pair of the queries that read that head. Scores q·k are
unchanged, so the dense model is exactly the same (it is folded into the q/k projection
rows, which per-channel and group-wise quantization store exactly); but delta attention
thresholds the scaled keys, so pair p's threshold becomes θ / s in the model's own units.
Scales from the queries' pair RMS (s ∝ rms^α) let the error land where queries barely look.

Written by `python -m export.evaluate calibrate`; read by export and evaluation.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import torch

from .atomic import write_json_atomic
from .errors import ConfigError

FORMAT = "deltallm-calibration/1"
FIELD = "attention.calibration"


@dataclass
class DeltaCalibration:
    n_layers: int
    n_kv_heads: int
    head_dim: int
    key_scales: Optional[List[List[List[float]]]] = None   # [layer][kv head][rope pair]
    theta_per_layer: Optional[List[float]] = None
    alpha: float = 0.0                  # s ∝ (query pair RMS)^alpha, geometric mean 1 per layer
    gamma: Optional[float] = None       # γ the per-layer θ were chosen for
    target_s_c: Optional[float] = None
    calibration_s_c: Optional[float] = None
    source_sha256: Optional[str] = None
    text: str = ""                      # what the statistics were measured on
    curves: list = field(default_factory=list)   # per layer: θ grid, S_c, KL (for the record)

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    def summary(self, path: str) -> dict:
        """What a manifest records: where it came from and what it set."""
        from .sources import sha256_file

        p = Path(path).expanduser()
        return {"path": str(p), "sha256": sha256_file(p) if p.is_file() else None,
                "theta_per_layer": self.theta_per_layer, "key_scales": self.key_scales is not None,
                "alpha": self.alpha, "gamma": self.gamma, "calibration_s_c": self.calibration_s_c}

    def save(self, path: Path) -> None:
        write_json_atomic(Path(path), self.to_dict())

    def check_fits(self, n_layers: int, n_kv_heads: int, head_dim: int, sha256: Optional[str]) -> None:
        got, want = (self.n_layers, self.n_kv_heads, self.head_dim), (n_layers, n_kv_heads, head_dim)
        if got != want:
            raise ConfigError(FIELD, f"made for (layers, kv heads, head dim) {got}, this model has {want}")
        if self.source_sha256 and sha256 and self.source_sha256 != sha256:
            raise ConfigError(FIELD, f"made for weights with sha256 {self.source_sha256[:12]}…, "
                                     f"this model's are {sha256[:12]}…")


def _check_shape(cal: DeltaCalibration) -> None:
    if cal.theta_per_layer is not None:
        if len(cal.theta_per_layer) != cal.n_layers or not all(
                isinstance(t, (int, float)) and math.isfinite(t) and t >= 0 for t in cal.theta_per_layer):
            raise ConfigError(FIELD, f"theta_per_layer needs {cal.n_layers} finite values >= 0")
    if cal.key_scales is not None:
        t = torch.tensor(cal.key_scales, dtype=torch.float64)
        if tuple(t.shape) != (cal.n_layers, cal.n_kv_heads, cal.head_dim // 2):
            raise ConfigError(FIELD, f"key_scales must be [{cal.n_layers}][{cal.n_kv_heads}][{cal.head_dim // 2}], "
                                     f"got {list(t.shape)}")
        if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
            raise ConfigError(FIELD, "key_scales must be finite and > 0")


def load_calibration(path: str) -> DeltaCalibration:
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(FIELD, f"no such file {str(p)!r} (write one with `python -m export.evaluate calibrate`)")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(FIELD, f"cannot read {str(p)!r}: {e}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(FIELD, f"{str(p)!r} is not JSON: {e.msg} at line {e.lineno}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(FIELD, f"{str(p)!r} is not a calibration file (format {FORMAT!r})")
    names = set(DeltaCalibration.__dataclass_fields__)
    try:
        cal = DeltaCalibration(**{k: v for k, v in data.items() if k in names})
        if not all(isinstance(getattr(cal, k), int) and getattr(cal, k) > 0
                   for k in ("n_layers", "n_kv_heads", "head_dim")):
            raise TypeError("n_layers, n_kv_heads and head_dim must be integers > 0")
        _check_shape(cal)
    except (TypeError, ValueError) as e:
        raise ConfigError(FIELD, f"{str(p)!r}: {e}") from e
    return cal


def scales_from_query_rms(pair_ms: torch.Tensor, alpha: float) -> torch.Tensor:
    """[L, Hkv, D/2] mean squared query norm per RoPE pair -> scales rms^alpha, geometric mean 1
    per layer (so θ keeps roughly its meaning, and heads whose queries are small get more θ)."""
    s = pair_ms.double().clamp(min=1e-12).sqrt() ** alpha
    return (s / s.log().mean(dim=(1, 2), keepdim=True).exp()).float()


@torch.no_grad()
def fold_key_scales_(model, scales: torch.Tensor) -> None:
    """k_proj rows × s and q_proj rows ÷ s per RoPE pair (the scores q·k do not change)."""
    args = model.args
    h, hkv = args.n_heads, args.n_kv_heads
    for layer, s in zip(model.model.layers, scales):
        per_dim = torch.cat([s, s], dim=1)                                  # [Hkv, D]
        attn = layer.self_attn
        attn.k_proj.weight.mul_(per_dim.reshape(-1, 1))
        attn.q_proj.weight.div_(per_dim.repeat_interleave(h // hkv, dim=0).reshape(-1, 1))
