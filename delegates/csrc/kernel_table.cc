// The micro-kernel table (kernel_table.h) and the sparsity counters' storage.
#include "kernel_table.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

namespace dlm {

// A format's kernels in a table row: q8_0, q4_0, then the query's q8 blocks.
#define DLM_QKERNELS(arch, dot)                                                                                 \
  {dlm::q8_0_enc_ukernel__##arch, dlm::q8_0_dec_ukernel__##arch, dlm::qs8_qkdot_q8_0k_ukernel_8x32__##dot,       \
   dlm::f32_pv_q8_0v_ukernel_4x32__##arch},                                                                     \
  {dlm::q4_0_enc_ukernel__##arch, dlm::q4_0_dec_ukernel__##arch, dlm::qs8_qkdot_q4_0k_ukernel_8x32__##dot,       \
   dlm::f32_pv_q4_0v_ukernel_4x32__##arch},                                                                     \
  dlm::f32_q8q_ukernel__##arch

namespace {

std::atomic<bool> g_force_scalar{false};

}  // namespace

const Kernels& kernels() {
  static const Kernels scalar{dlm::f32_deltaenc_ukernel__scalar,  dlm::f32_deltaqk_ukernel_64x1__scalar,
                              dlm::f32_deltaqkdot_ukernel_8x1__scalar, dlm::f32_qk_ukernel_64x1__scalar,
                              dlm::f32_qkdot_ukernel_8x1__scalar,   dlm::f32_qkdot_f16k_ukernel_8x1__scalar,
                              dlm::f32_softmax_ukernel_x1__scalar,
                              dlm::f32_pv_ukernel_8xd__scalar,      dlm::f32_pv_f16v_ukernel_8xd__scalar,
                              dlm::f32_f16_vcvt_ukernel_x1__scalar, dlm::f16_f32_vcvt_ukernel_x1__scalar,
                              "scalar", DLM_QKERNELS(scalar, scalar)};
#if defined(__x86_64__)
  static const Kernels avx2{dlm::f32_deltaenc_ukernel__avx2,         dlm::f32_deltaqk_ukernel_64x1__avx2_fma,
                            dlm::f32_deltaqkdot_ukernel_8x1__avx2_fma, dlm::f32_qk_ukernel_32x2__avx2_fma,
                            dlm::f32_qkdot_ukernel_8x1__avx2_fma,    dlm::f32_qkdot_f16k_ukernel_8x1__avx2_fma,
                            dlm::f32_softmax_ukernel_x8__avx2_fma,
                            dlm::f32_pv_ukernel_8x8__avx2_fma,       dlm::f32_pv_f16v_ukernel_8x8__avx2_fma,
                            dlm::f32_f16_vcvt_ukernel_x8__avx2,      dlm::f16_f32_vcvt_ukernel_x8__avx2,
                            "avx2_fma", DLM_QKERNELS(avx2, avx2)};
  static const bool has_avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (has_avx2 && !g_force_scalar.load()) return avx2;
#endif
#if defined(__aarch64__)
  static const Kernels neon{dlm::f32_deltaenc_ukernel__neon,        dlm::f32_deltaqk_ukernel_64x1__neon,
                            dlm::f32_deltaqkdot_ukernel_8x1__neon,     dlm::f32_qk_ukernel_16x2__neon,
                            dlm::f32_qkdot_ukernel_8x1__neon,       dlm::f32_qkdot_f16k_ukernel_8x1__neon,
                            dlm::f32_softmax_ukernel_x4__neon,
                            dlm::f32_pv_ukernel_8x8__neon,          dlm::f32_pv_f16v_ukernel_8x8__neon,
                            dlm::f32_f16_vcvt_ukernel_x8__neon,     dlm::f16_f32_vcvt_ukernel_x8__neon,
                            "neon", DLM_QKERNELS(neon, neon)};
  static const Kernels neon_dot = [] {
    Kernels k = neon;
    k.arch = "neon+dot";
    k.q8_0.qkdot = dlm::qs8_qkdot_q8_0k_ukernel_8x32__neondot;
    k.q4_0.qkdot = dlm::qs8_qkdot_q4_0k_ukernel_8x32__neondot;
    return k;
  }();
#if defined(__linux__)
  static const bool has_dot = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
  static const bool has_dot = false;
#endif
  if (!g_force_scalar.load()) return has_dot ? neon_dot : neon;   // Advanced SIMD is part of every AArch64 CPU
#endif
  return scalar;
}


namespace {

std::mutex g_stats_mutex;
dlm_counts g_stats[DLM_MAX_LAYERS][2];
int64_t g_num_layers = 0;

}  // namespace

void stats_add(int64_t layer, int phase, const dlm_counts& c) {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  dlm_counts& s = g_stats[layer][phase];
  s.dk_zeros += c.dk_zeros;
  s.dk_elements += c.dk_elements;
  s.macs_performed += c.macs_performed;
  s.macs_dense += c.macs_dense;
  s.calls += 1;
  g_num_layers = std::max(g_num_layers, layer + 1);
}

}  // namespace dlm

extern "C" {

int dlm_stats_read(int64_t layer, int phase, dlm_counts* out) {
  if (!out || layer < 0 || layer >= DLM_MAX_LAYERS || (phase != 0 && phase != 1)) return DLM_ERR_INVALID;
  std::lock_guard<std::mutex> lock(dlm::g_stats_mutex);
  *out = dlm::g_stats[layer][phase];
  return DLM_OK;
}

int64_t dlm_stats_num_layers(void) {
  std::lock_guard<std::mutex> lock(dlm::g_stats_mutex);
  return dlm::g_num_layers;
}

void dlm_stats_reset(void) {
  std::lock_guard<std::mutex> lock(dlm::g_stats_mutex);
  std::memset(dlm::g_stats, 0, sizeof dlm::g_stats);
  dlm::g_num_layers = 0;
}

const char* dlm_kernel_arch(void) { return dlm::kernels().arch; }

void dlm_force_scalar(int on) { dlm::g_force_scalar.store(on != 0); }

}  // extern "C"
