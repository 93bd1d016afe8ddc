"""torch.export -> edge -> XNNPACK (or portable) -> ExecuTorch program bytes."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List

import torch

from .config import BackendKind, ExportConfig
from .errors import ExportError
from . import xnnpack_passes

log = logging.getLogger(__name__)


@dataclass
class LoweredProgram:
    buffer: bytes
    delegated_ops: int
    portable_ops: int
    portable_op_kinds: Dict[str, int]
    delegate_calls: int
    skipped_passes: Dict[str, int]   # XNNPACK pass -> partitions it was skipped for (backend.skip_idle_passes)


def constant_methods(cfg: ExportConfig, args) -> Dict[str, object]:
    """Metadata methods read by ExecuTorch's TextLLMRunner (and by our runners)."""
    meta = {
        "get_max_seq_len": cfg.export.max_seq_len,
        "get_max_context_len": cfg.export.max_context_len,
        "get_vocab_size": args.vocab_size,
        "get_n_layers": args.n_layers,
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": False,
        "enable_dynamic_shape": True,
        "get_eos_ids": list(args.eos_ids) or [2],
    }
    if args.bos_id is not None:
        meta["get_bos_id"] = int(args.bos_id)
    return meta


def example_inputs(cfg: ExportConfig):
    n = min(2, cfg.export.max_seq_len)
    return (torch.zeros((1, n), dtype=torch.long), torch.tensor([0], dtype=torch.long))


def export_program(model: torch.nn.Module, cfg: ExportConfig) -> torch.export.ExportedProgram:
    seq = torch.export.Dim("seq_len", min=1, max=cfg.export.max_seq_len)
    with torch.no_grad():
        try:
            # Non-strict: half the tracing time of strict (dynamo) export, the same graph (measured).
            return torch.export.export(model, example_inputs(cfg), dynamic_shapes=({1: seq}, None), strict=False)
        except Exception as e:  # noqa: BLE001 - report the stage
            raise ExportError(f"torch.export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e


def _count_ops(gm) -> (int, Counter):
    calls, kinds = 0, Counter()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if name.startswith("auto_functionalized") and node.args:   # a mutating custom op: name the op
            name = str(node.args[0])
        if "executorch_call_delegate" in name:
            calls += 1
        elif not name.startswith("getitem") and name != "getitem":
            kinds[name] += 1
    return calls, kinds


def _delegated_op_count(edge) -> int:
    from executorch.exir.lowered_backend_module import LoweredBackendModule

    total = 0
    gm = edge.exported_program().graph_module
    for _, mod in gm.named_children():
        if isinstance(mod, LoweredBackendModule):
            for node in mod.original_module.graph.nodes:
                if node.op == "call_function":
                    total += 1
    return total


def lower(ep: torch.export.ExportedProgram, cfg: ExportConfig, metadata: Dict[str, object]) -> LoweredProgram:
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    partitioners: List = []
    if cfg.backend.kind == BackendKind.XNNPACK:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        partitioners.append(XnnpackPartitioner())
    skipped_before = Counter(xnnpack_passes.skipped)
    try:
        with xnnpack_passes.skip_idle_xnnpack_passes(cfg.backend.skip_idle_passes):
            edge = to_edge_transform_and_lower(
                ep, partitioner=partitioners,
                compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
                constant_methods=metadata)
        calls, kinds = _count_ops(edge.exported_program().graph_module)
        delegated = _delegated_op_count(edge)
        prog = edge.to_executorch(ExecutorchBackendConfig(
            extract_delegate_segments=True,
            do_quant_fusion_and_const_prop=True,
            emit_mutable_buffer_names=True,   # the runner finds its running state by name (chat rewinds)
            memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
            sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass()))
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - report the stage
        raise ExportError(f"lowering failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    portable = sum(kinds.values())
    log.info("delegation: %d delegate call(s) covering %d ops; %d ops left to portable kernels %s",
             calls, delegated, portable, dict(kinds.most_common(8)))
    skipped = dict(sorted((Counter(xnnpack_passes.skipped) - skipped_before).items()))
    return LoweredProgram(prog.buffer, delegated, portable, dict(kinds), calls, skipped)
