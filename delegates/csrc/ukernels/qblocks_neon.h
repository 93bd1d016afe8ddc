// Helpers shared by the NEON q8_0 / q4_0 kernels (qblocks_neon.cc) and their SDOT variants
// (qblocks_neondot.cc, compiled for Armv8.2-A with the dot-product extension).
#pragma once
#if defined(__aarch64__)
#include <arm_neon.h>

#include <cstring>

#include "ukernels.h"

#include "mca.h"
#include "qblocks.h"

namespace dlm {
namespace qneon {

static inline float block_scale(const uint8_t* blk) {
  float16_t h;
  std::memcpy(&h, blk, 2);
  return static_cast<float>(h);
}

// A block's 32 codes as two int8x16 in element order: q8_0's bytes, q4_0's nibbles − 8.
template <size_t kBytes>
static inline void load_codes(const uint8_t* blk, int8x16_t* lo, int8x16_t* hi) {
  if constexpr (kBytes == kQ8Bytes) {
    *lo = vld1q_s8(reinterpret_cast<const int8_t*>(blk + 2));
    *hi = vld1q_s8(reinterpret_cast<const int8_t*>(blk + 18));
  } else {
    const uint8x16_t b = vld1q_u8(blk + 2);
    const int8x16_t eight = vdupq_n_s8(8);
    *lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(15))), eight);
    *hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(b, 4)), eight);
  }
}

// R query rows against n keys: dot(a, kq_lo, kq_hi, q) adds the block's integer dot of a row into
// int32 lanes; each block's int32 sums are scaled by qd·dk into fp32 lanes, summed per row at the key's end.
// kD > 0: head_dim known at compile time (64, 128), so the blocks unroll.
template <int R, size_t kBytes, size_t kD, class Dot>
static inline void qkdot(size_t n, size_t d_, size_t lanes, const int8_t* qs, const float* qd, const uint8_t* k,
                         size_t k_stride, float* scores, Dot dot) {
  const size_t d = kD > 0 ? kD : d_, nb = d / kQBlock;
  for (size_t t = 0; t < n; t++, k += k_stride) {
    DLM_MCA_BEGIN("qk.q", kBytes, R, 1, kD);
    float32x4_t a[R];
    for (int r = 0; r < R; r++) a[r] = vdupq_n_f32(0.0f);
    __builtin_prefetch(reinterpret_cast<const char*>(k) + 4 * k_stride);   // never faults: no branch in the step
    for (size_t b = 0; b < nb; b++) {
      const uint8_t* blk = k + b * kBytes;
      int8x16_t lo, hi;
      load_codes<kBytes>(blk, &lo, &hi);
      const float dk = block_scale(blk);
      for (int r = 0; r < R; r++) {
        const int8_t* q = qs + r * d + b * kQBlock;
        const int32x4_t s = dot(lo, hi, vld1q_s8(q), vld1q_s8(q + 16));
        a[r] = vfmaq_n_f32(a[r], vcvtq_f32_s32(s), dk * qd[r * nb + b]);
      }
    }
    float* out = scores + t * lanes;
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(a[r]);
    for (int r = R; r < 8; r++)   // a fixed bound: a runtime one becomes a memset call per key
      if (r < static_cast<int>(lanes)) out[r] = 0.0f;
    DLM_MCA_END();
  }
}

// The rows → template dispatch, with head_dim 64 and 128 unrolled.
template <size_t kBytes, class Dot>
static inline void qkdot_rows(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs, const float* qd,
                              const uint8_t* k, size_t k_stride, float* scores, Dot dot) {
  with_rows<8>(rows, [&](auto r) {
    constexpr int R = decltype(r)::value;
    if (d == 64)
      qkdot<R, kBytes, 64>(n, d, lanes, qs, qd, k, k_stride, scores, dot);
    else if (d == 128)
      qkdot<R, kBytes, 128>(n, d, lanes, qs, qd, k, k_stride, scores, dot);
    else
      qkdot<R, kBytes, 0>(n, d, lanes, qs, qd, k, k_stride, scores, dot);
  });
}

}  // namespace qneon
}  // namespace dlm
#endif
