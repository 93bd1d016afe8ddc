"""Skip XNNPACK preprocessing passes that cannot change a partition.

XNNPACK's preprocess runs 17 graph passes on every partition, and each one re-runs the
partition with symbolic fake tensors; an LLM has one partition per layer, so passes that
look for convolutions, batch norm, PReLU, decomposed upsampling/SDPA, ReLU-like activations,
dtype copies or (in float programs) q/dq nodes cost ~45 % of the lowering time without finding
anything. A pass is skipped only when the partition contains
none of the ops it acts on; unknown passes always run. `tests/test_export_passes.py` shows
the written programs are byte-identical with and without skipping.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Callable, Dict, Set


# pass name -> the op-name fragments it acts on (edge op names such as "aten.convolution.default")
_ACTS_ON: Dict[str, tuple] = {
    "ConvertToUpsampleBilinear2d": ("upsample", "aten.index.", "_unsafe_index"),
    "ConvertToSDPAPass": ("softmax",),
    "FuseBatchNormPass": ("batch_norm",),
    "DecomposeBatchNorm": ("batch_norm",),
    "PReLUReshapePass": ("prelu",),
    "Conv1dUnsqueezePass": ("convolution",),
    "DecomposeConcatenate": ("aten.cat.",),
    "RemoveGetItemPass": ("max_pool", "aten.max.dim"),
    "InsertPadQDQPass": ("constant_pad_nd",),
    "DimOrderOpsRevertPass": ("dim_order",),
    "ChannelsLastTaggedReshapePass": ("convolution", "upsample", "aten.mean.dim", "max_pool", "amax",
                                      "aten.max.dim", "avg_pool", "prelu"),
    "FuseActivationPass": ("aten.relu.", "aten.hardtanh."),           # fuses these into the op before
    "RemoveRedundantCopyPass": ("aten._to_copy.",),
    "PropagateCustomMetaPass": ("quantize",),                           # q/dq nodes (dequantize too)
}

skipped = Counter()   # pass name -> partitions it was skipped for (read by tests)


def _op_names(graph_module) -> Set[str]:
    return {getattr(n.target, "__name__", str(n.target)) for n in graph_module.graph.nodes
            if n.op == "call_function"}


def needed(pass_name: str, ops: Set[str]) -> bool:
    fragments = _ACTS_ON.get(pass_name)
    return fragments is None or any(f in op for op in ops for f in fragments)


@contextlib.contextmanager
def skip_idle_xnnpack_passes(enabled: bool = True):
    """While active, XNNPACK's pass manager runs only the passes a partition can need."""
    try:
        from executorch.backends.xnnpack._passes import XNNPACKPassManager
    except ImportError:   # pragma: no cover - layout of another executorch version
        yield
        return
    original: Callable = XNNPACKPassManager.transform
    if not enabled:
        yield
        return

    def transform(self):
        passes = getattr(self, "passes", None)
        if passes:
            ops = _op_names(self.exported_program.graph_module)
            keep = [p for p in passes if needed(p.__name__, ops)]
            skipped.update(p.__name__ for p in passes if p not in keep)
            self.passes = keep
        return original(self)

    XNNPACKPassManager.transform = transform
    try:
        yield
    finally:
        XNNPACKPassManager.transform = original
