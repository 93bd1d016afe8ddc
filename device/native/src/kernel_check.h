// `deltallm_runner kernel-check`: replays delta- and dense-attention cases written by the host
// (inputs, call chunks, settings) through this build's kernel and writes its outputs and counters,
// so the oracle tests (tests/test_kernel_check.py) hold every micro-kernel variant — scalar, AVX2,
// NEON (arm64, here under qemu; on a phone over adb) — to the PyTorch reference.
//
// Cases file (little-endian): "DLMK", int32 count; per case: int64 n, heads, kv_heads, head_dim,
// max_len, w_max, w_decode, n_chunks, V cache format (DLM_FMT_*), kind (0 delta, else dense with a K
// cache in format kind − 1: 1 fp32, 2 fp16, 3 q8_0, 4 q4_0), ΔK stream rows (0: every non-zero), chunks[n_chunks]; float32 theta, gamma (unused by dense cases); float32 q[n*heads*D],
// k[n*kv_heads*D], v[n*kv_heads*D]. Output: per case float32 out[n*heads*D], then uint64 counters
// [prefill, decode] x [dk_zeros, dk_elements, macs_performed, macs_dense, calls] of layer 0.
#pragma once

#include <string>

#include "llm_session.h"

namespace dlm {

Status KernelCheck(const std::string& cases_path, const std::string& out_path, bool force_scalar,
                   std::string* arch);

}  // namespace dlm
