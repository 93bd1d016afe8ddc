// The integer dots of the q8_0 / q4_0 K caches with SDOT (Armv8.2-A dot-product extension: compiled
// with -march=armv8.2-a+dotprod, called only where HWCAP_ASIMDDP says the core has it).
#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#include "qblocks_neon.h"
#include "ukernels.h"

namespace dlm {

namespace {

__attribute__((always_inline)) inline int32x4_t dot_sdot(int8x16_t klo, int8x16_t khi, int8x16_t qlo, int8x16_t qhi) {
  return vdotq_s32(vdotq_s32(vdupq_n_s32(0), klo, qlo), khi, qhi);
}

template <size_t kBytes>
void qkdot_rows(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs, const float* qd, const uint8_t* k,
                size_t k_stride, float* scores) {
  qneon::qkdot_rows<kBytes>(n, d, rows, lanes, qs, qd, k, k_stride, scores,
                            [](int8x16_t a, int8x16_t b, int8x16_t c, int8x16_t e) __attribute__((always_inline)) { return dot_sdot(a, b, c, e); });
}

}  // namespace

void qs8_qkdot_q8_0k_ukernel_8x32__neondot(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs,
                                           const float* qd, const uint8_t* k, size_t k_stride, float* scores) {
  qkdot_rows<kQ8Bytes>(n, d, rows, lanes, qs, qd, k, k_stride, scores);
}
void qs8_qkdot_q4_0k_ukernel_8x32__neondot(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs,
                                           const float* qd, const uint8_t* k, size_t k_stride, float* scores) {
  qkdot_rows<kQ4Bytes>(n, d, rows, lanes, qs, qd, k, k_stride, scores);
}

}  // namespace dlm
#elif defined(__aarch64__)
#error "qblocks_neondot.cc must be compiled with -march=armv8.2-a+dotprod"
#endif
