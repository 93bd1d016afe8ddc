// The micro-kernel table of the host (scalar, AVX2 + FMA + F16C, NEON, NEON with SDOT), chosen
// once at run time, and the process-wide sparsity counters' storage: internal to the C core.
#pragma once
#include <stdint.h>

#include "deltaattn.h"
#include "ukernels/qblocks.h"
#include "ukernels/ukernels.h"

namespace dlm {

struct Kernels {
  dlm::deltaenc_ukernel_fn deltaenc;
  dlm::deltaqk_ukernel_fn deltaqk;                   // kTR rows
  dlm::deltaqkdot_ukernel_fn deltaqkdot;             // a narrow tile (decode), along head_dim
  dlm::qk_ukernel_fn qk;                             // exact scores of a kTR-row tile
  dlm::qkdot_ukernel_fn qkdot;                       // exact scores of a narrow tile (decode)
  dlm::qkdot_f16k_ukernel_fn qkdot_f16k;             // ... from an fp16 K cache (dense)
  dlm::softmax_ukernel_fn softmax;
  dlm::pv_ukernel_fn pv, pv_f16v;   // fp32 / fp16 V
  dlm::f16cvt_ukernel_fn f16cvt;     // the fp16 V (and dense K) caches' store
  dlm::f32cvt_ukernel_fn f32cvt;     // fp16 keys back to fp32 for the wide tiles (dense, fp16 K)
  const char* arch;
  dlm::QFormatKernels q8_0, q4_0;    // the quantized caches (qblocks.h)
  dlm::q8q_ukernel_fn q8q;           // queries over a quantized K cache
};

// The best variant this CPU runs (the scalar one while dlm_force_scalar(1)).
const Kernels& kernels();

// Adds one call's counts to layer `layer`, phase `phase` (DLM_PHASE_*).
void stats_add(int64_t layer, int phase, const dlm_counts& c);

}  // namespace dlm
