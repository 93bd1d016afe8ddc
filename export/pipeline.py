"""The export pipeline: load, transform, quantize, export, lower, serialize, validate."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import torch

from .arch import Transformer
from .arch.bitnet import ternarize_
from .atomic import probe_write, temp_path_for, write_atomic, write_json_atomic
from .attention import attention_state_report, make_attention_core
from .calibration import DeltaCalibration, fold_key_scales_, load_calibration
from .config import Architecture, ExportConfig, LinearQuant
from .errors import ConfigError, ExportError
from .lower import constant_methods, export_program, lower
from .progress import StageTimer
from .quantize import quantize_model, ternary_report
from .sources import LoadedSource, check_source, load_source
from .validate import exact_reference, is_approximate, raise_if_failed, validate_program

STAGES = ("load", "transform", "quantize", "export", "lower", "serialize", "validate")
log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    model: Transformer
    source: LoadedSource
    ternary_reference: Optional[Dict[str, torch.Tensor]] = None
    calibration: Optional[DeltaCalibration] = None


def build_model(cfg: ExportConfig, source: LoadedSource,
                calibration: Optional[DeltaCalibration] = None) -> BuiltModel:
    """Our export-ready module with the configured attention cores and the source's weights.
    `calibration` (else the file `attention.calibration` names) sets per-layer θ and key scales."""
    args = source.args
    if calibration is None and cfg.attention.calibration:
        calibration = load_calibration(cfg.attention.calibration)
    attention = cfg.attention
    if calibration is not None:
        calibration.check_fits(args.n_layers, args.n_kv_heads, args.head_dim, source.info.get("sha256"))
        if calibration.theta_per_layer is not None:
            attention = dataclasses.replace(attention, theta_per_layer=list(calibration.theta_per_layer))
        if calibration.gamma is not None and calibration.gamma != attention.gamma:
            log.warning("calibration chose θ for γ %g, attention.gamma is %g", calibration.gamma, attention.gamma)
    if attention.theta_per_layer is not None and len(attention.theta_per_layer) != args.n_layers:
        raise ConfigError("attention.theta_per_layer", f"needs one value per layer ({args.n_layers}), "
                                                       f"got {len(attention.theta_per_layer)}")
    torch.manual_seed(cfg.model.seed)
    model = Transformer(args, lambda i: make_attention_core(
        attention, i, args.n_heads, args.n_kv_heads, args.head_dim, cfg.export.max_context_len,
        cfg.export.max_seq_len),
        cfg.export.max_context_len, full_logits=cfg.export.full_logits)
    if source.state_dict is None:
        _init_random_(model)
    else:
        missing, unexpected = model.load_state_dict(source.state_dict, strict=False)
        missing = [k for k in missing if not (k == "lm_head.weight" and args.tie_embeddings)]
        unexpected = [k for k in unexpected if "rotary_emb" not in k]
        if missing or unexpected:
            raise ExportError(f"weights do not fit the {args.architecture.value} architecture: "
                              f"missing {missing[:4]}, unexpected {unexpected[:4]}")
    if args.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.eval()
    reference = ternarize_(model) if args.architecture == Architecture.BITNET else None
    if calibration is not None and calibration.key_scales is not None:
        fold_key_scales_(model, torch.tensor(calibration.key_scales))
        if reference is not None:   # row-scaled ternary rows stay ternary per group (lossless int4)
            for fqn in reference:
                reference[fqn] = model.get_submodule(fqn).weight.detach().clone()
    return BuiltModel(model, source, reference, calibration)


@torch.no_grad()
def _init_random_(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        else:
            p.normal_(0.0, 0.02 if "embed" not in name else 1.0)


def _versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "executorch", "torchao", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _check_output_dir(cfg: ExportConfig) -> Path:
    out = Path(os.path.expanduser(cfg.output.dir))
    if out.exists() and not out.is_dir():
        raise ConfigError("output.dir", f"{str(out)!r} exists and is not a folder")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise ConfigError("output.dir", f"{str(parent)!r} is not a folder")
    # A real write in the nearest existing folder; nothing else is created before the export.
    try:
        probe_write(parent)
    except OSError as e:
        raise ConfigError("output.dir", f"{str(parent)!r} is not writable ({e.strerror})") from None
    return out


def encode_prompt(tokenizer, text: str, bos_id: Optional[int]) -> list:
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    return ([bos_id] if bos_id is not None and (not ids or ids[0] != bos_id) else []) + ids


DENSE_ONLY = ("dense_kernel", "k_cache")                       # a delta program has no K cache
DELTA_ONLY = ("theta", "theta_per_layer", "gamma", "w_max", "w_decode", "dk_budget", "calibration")


def program_attention(cfg) -> dict:
    """The attention settings the written program has (the full config stays under "config")."""
    a = cfg.to_dict()["attention"]
    drop = DENSE_ONLY if a["kind"] == "delta" else DELTA_ONLY
    return {k: v for k, v in a.items() if k not in drop}


def run_export(cfg: ExportConfig, timer: Optional[StageTimer] = None) -> Dict[str, object]:
    """Export per `cfg`; returns the manifest. Nothing is left behind on failure."""
    timer = timer or StageTimer(STAGES)
    out_dir = _check_output_dir(cfg)
    check_source(cfg)   # fail on a bad source before any progress is printed
    with timer.stage("load", f"{cfg.model.kind.value} {cfg.model.path}".strip()):
        source = load_source(cfg)
    with timer.stage("transform", f"{source.args.architecture.value}, attention={cfg.attention.kind.value}"):
        built = build_model(cfg, source)
        model, args = built.model, source.args
        n_params = sum(p.numel() for p in model.parameters())
        state = attention_state_report(model, cfg.export.max_context_len)
    prompt_ids = encode_prompt(source.tokenizer, cfg.validation.prompt, args.bos_id)
    fp32_logits = None
    if cfg.validation.enabled and is_approximate(cfg):
        fp32_logits = exact_reference(model, prompt_ids, cfg)   # the approximation's own effect, for validation
    with timer.stage("quantize", f"linear={cfg.quantization.linear.value}, embedding={cfg.quantization.embedding.value}"):
        qreport = quantize_model(model, cfg.quantization)
        if cfg.quantization.linear == LinearQuant.TERNARY:
            qreport["ternary_check"] = ternary_report(model, built.ternary_reference)
    with timer.stage("export", f"dynamic seq_len 1..{cfg.export.max_seq_len}"):
        ep = export_program(model, cfg)
    metadata = constant_methods(cfg, args)
    with timer.stage("lower", cfg.backend.kind.value):
        lowered = lower(ep, cfg, metadata)
        del ep
    timer.say(f"delegation: {lowered.delegate_calls} delegate call(s) covering {lowered.delegated_ops} ops, "
              f"{lowered.portable_ops} ops on portable kernels")
    created_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = cfg.output_name
    pte_path, manifest_path, tok_path = out_dir / f"{name}.pte", out_dir / f"{name}.json", out_dir / "tokenizer.json"
    tmp_pte = temp_path_for(pte_path)
    try:
        with timer.stage("serialize", str(pte_path)):
            tmp_pte.write_bytes(lowered.buffer)
        validation = {"enabled": False}
        if cfg.validation.enabled:
            with timer.stage("validate", f"{cfg.validation.decode_steps} decode steps"):
                validation = validate_program(model, tmp_pte, prompt_ids, cfg, fp32_logits)
                validation["enabled"] = True
                timer.say(f"validation: max_abs_diff {validation['max_abs_diff']:.3g}, "
                          f"top-1 agreement {validation['top1_agreement']:.3f}")
                raise_if_failed(validation, str(pte_path))
        write_atomic(tok_path, lambda p: source.tokenizer.save(str(p)))
        os.replace(tmp_pte, pte_path)
    except BaseException:
        tmp_pte.unlink(missing_ok=True)
        if created_dir and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    manifest = {
        "format": "deltallm-export/1",
        "name": name,
        "pte": pte_path.name,
        "tokenizer": tok_path.name,
        "config": cfg.to_dict(),
        "source": source.info,
        "architecture": args.to_dict(),
        "parameters": n_params,
        "quantization": qreport,
        "attention": program_attention(cfg),
        "attention_state": state,
        "calibration": built.calibration.summary(cfg.attention.calibration) if built.calibration else None,
        "metadata_methods": metadata,
        "versions": _versions(),
        "pte_bytes": len(lowered.buffer),
        "pte_sha256": hashlib.sha256(lowered.buffer).hexdigest(),
        "ops": {"delegate_calls": lowered.delegate_calls, "delegated": lowered.delegated_ops,
                "portable": lowered.portable_ops, "portable_kinds": lowered.portable_op_kinds,
                "skipped_xnnpack_passes": lowered.skipped_passes},
        "validation": validation,
        "timings_s": timer.timings_s,
        "chat_template": source.chat_template,
    }
    write_json_atomic(manifest_path, manifest)
    manifest["paths"] = {"pte": str(pte_path), "manifest": str(manifest_path), "tokenizer": str(tok_path)}
    return manifest
