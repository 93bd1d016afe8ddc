// NEON variants of the q8_0 / q4_0 cache kernels (qblocks.h) for any Armv8.0-A core: encode and
// decode bit-identical to the scalar variants (FCVTNS rounds to nearest even like nearbyint), the
// integer dots with SMULL/SADALP (the SDOT ones are in qblocks_neondot.cc).
#if defined(__aarch64__)
#include <algorithm>
#include <cmath>

#include "fp16.h"
#include "qblocks_neon.h"
#include "ukernels.h"

namespace dlm {

namespace {

using qneon::block_scale;

inline void store_scale(uint8_t* blk, float d) {
  const uint16_t h = f32_to_f16(std::min(std::max(d, -kF16Max), kF16Max));
  std::memcpy(blk, &h, 2);
}

inline float block_amax(const float* x) {
  float32x4_t m = vabsq_f32(vld1q_f32(x));
  for (int i = 4; i < 32; i += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + i)));
  return vmaxvq_f32(m);
}

// rint(x·id) of a block of 32 as int8 in element order, 16 per register (|x·id| <= 127.5).
inline void block_codes(const float* x, float id, int8x16_t* lo, int8x16_t* hi) {
  int16x8_t h[4];
  for (int i = 0; i < 4; i++) {
    const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 8 * i), id));
    const int32x4_t b = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 8 * i + 4), id));
    h[i] = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
  }
  *lo = vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1]));
  *hi = vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3]));
}

template <size_t kBytes>
void dec(size_t d, const uint8_t* x, float* y) {
  for (size_t b = 0; b < d / kQBlock; b++, x += kBytes, y += kQBlock) {
    const float s = block_scale(x);
    int8x16_t c[2];
    qneon::load_codes<kBytes>(x, &c[0], &c[1]);
    for (int h = 0; h < 2; h++) {
      const int16x8_t w0 = vmovl_s8(vget_low_s8(c[h])), w1 = vmovl_high_s8(c[h]);
      float* o = y + 16 * h;
      vst1q_f32(o, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(w0))), s));
      vst1q_f32(o + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(w0)), s));
      vst1q_f32(o + 8, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(w1))), s));
      vst1q_f32(o + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(w1)), s));
    }
  }
}

__attribute__((always_inline)) inline int32x4_t dot_smull(int8x16_t klo, int8x16_t khi, int8x16_t qlo, int8x16_t qhi) {
  int32x4_t s = vpaddlq_s16(vmull_s8(vget_low_s8(klo), vget_low_s8(qlo)));
  s = vpadalq_s16(s, vmull_high_s8(klo, qlo));
  s = vpadalq_s16(s, vmull_s8(vget_low_s8(khi), vget_low_s8(qhi)));
  return vpadalq_s16(s, vmull_high_s8(khi, qhi));
}

template <size_t kBytes>
void qkdot_rows(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs, const float* qd, const uint8_t* k,
                size_t k_stride, float* scores) {
  qneon::qkdot_rows<kBytes>(n, d, rows, lanes, qs, qd, k, k_stride, scores,
                            [](int8x16_t a, int8x16_t b, int8x16_t c, int8x16_t e) __attribute__((always_inline)) { return dot_smull(a, b, c, e); });
}

// MR rows x 16 columns (half a block, from column c0) in registers; each key's codes decoded once.
template <int MR, size_t kBytes>
inline void pv_tile(size_t n, size_t d, size_t b, size_t c0, const float* p, size_t p_stride, const uint8_t* v,
                    size_t v_stride, const float* corr, float* acc) {
  const size_t col = b * kQBlock + c0;
  float32x4_t a[MR][4];
  for (int r = 0; r < MR; r++)
    for (int i = 0; i < 4; i++) a[r][i] = vmulq_n_f32(vld1q_f32(acc + r * d + col + 4 * i), corr[r]);
  for (size_t j = 0; j < n; j++) {
    DLM_MCA_BEGIN("pv.q", kBytes, MR, 1, 16);
    const uint8_t* blk = v + j * v_stride + b * kBytes;
    int8x16_t c[2];
    qneon::load_codes<kBytes>(blk, &c[0], &c[1]);
    const int8x16_t h = c0 ? c[1] : c[0];
    const int16x8_t w0 = vmovl_s8(vget_low_s8(h)), w1 = vmovl_high_s8(h);
    const float32x4_t vj[4] = {vcvtq_f32_s32(vmovl_s16(vget_low_s16(w0))), vcvtq_f32_s32(vmovl_high_s16(w0)),
                               vcvtq_f32_s32(vmovl_s16(vget_low_s16(w1))), vcvtq_f32_s32(vmovl_high_s16(w1))};
    const float s = block_scale(blk);
    for (int r = 0; r < MR; r++) {
      const float w = p[j * p_stride + r] * s;
      for (int i = 0; i < 4; i++) a[r][i] = vfmaq_n_f32(a[r][i], vj[i], w);
    }
    DLM_MCA_END();
  }
  for (int r = 0; r < MR; r++)
    for (int i = 0; i < 4; i++) vst1q_f32(acc + r * d + col + 4 * i, a[r][i]);
}

template <size_t kBytes>
void pv(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const uint8_t* v, size_t v_stride,
        const float* corr, float* acc) {
  with_rows<4>(m, [&](auto r) {
    for (size_t b = 0; b < d / kQBlock; b++)
      for (size_t c0 = 0; c0 < kQBlock; c0 += 16)
        pv_tile<decltype(r)::value, kBytes>(n, d, b, c0, p, p_stride, v, v_stride, corr, acc);
  });
}

}  // namespace

void q8_0_enc_ukernel__neon(size_t n, size_t d, const float* x, uint8_t* y) {
  for (size_t b = 0; b < n * d / kQBlock; b++, x += kQBlock, y += kQ8Bytes) {
    const float s = block_amax(x) / 127.0f, id = s != 0.0f ? 1.0f / s : 0.0f;
    store_scale(y, s);
    int8x16_t lo, hi;
    block_codes(x, id, &lo, &hi);
    vst1q_s8(reinterpret_cast<int8_t*>(y + 2), lo);
    vst1q_s8(reinterpret_cast<int8_t*>(y + 18), hi);
  }
}

void q4_0_enc_ukernel__neon(size_t n, size_t d, const float* x, uint8_t* y) {
  for (size_t b = 0; b < n * d / kQBlock; b++, x += kQBlock, y += kQ4Bytes) {
    const float amax = block_amax(x);
    size_t i = 0;
    while (i + 1 < kQBlock && std::fabs(x[i]) != amax) i++;   // the first element of largest |x|
    const float s = x[i] / -8.0f, id = s != 0.0f ? 1.0f / s : 0.0f;
    store_scale(y, s);
    int8x16_t lo, hi;
    block_codes(x, id, &lo, &hi);
    const int8x16_t mn = vdupq_n_s8(-8), mx = vdupq_n_s8(7), eight = vdupq_n_s8(8);
    const uint8x16_t ulo = vreinterpretq_u8_s8(vaddq_s8(vminq_s8(vmaxq_s8(lo, mn), mx), eight));
    const uint8x16_t uhi = vreinterpretq_u8_s8(vaddq_s8(vminq_s8(vmaxq_s8(hi, mn), mx), eight));
    vst1q_u8(y + 2, vorrq_u8(ulo, vshlq_n_u8(uhi, 4)));
  }
}

void q8_0_dec_ukernel__neon(size_t d, const uint8_t* x, float* y) { dec<kQ8Bytes>(d, x, y); }
void q4_0_dec_ukernel__neon(size_t d, const uint8_t* x, float* y) { dec<kQ4Bytes>(d, x, y); }

void f32_q8q_ukernel__neon(size_t d, const float* x, int8_t* qs, float* qd) {
  for (size_t b = 0; b < d / kQBlock; b++, x += kQBlock, qs += kQBlock) {
    const float s = block_amax(x) / 127.0f, id = s != 0.0f ? 1.0f / s : 0.0f;
    qd[b] = s;
    int8x16_t lo, hi;
    block_codes(x, id, &lo, &hi);
    vst1q_s8(qs, lo);
    vst1q_s8(qs + 16, hi);
  }
}

void qs8_qkdot_q8_0k_ukernel_8x32__neon(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs,
                                        const float* qd, const uint8_t* k, size_t k_stride, float* scores) {
  qkdot_rows<kQ8Bytes>(n, d, rows, lanes, qs, qd, k, k_stride, scores);
}
void qs8_qkdot_q4_0k_ukernel_8x32__neon(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs,
                                        const float* qd, const uint8_t* k, size_t k_stride, float* scores) {
  qkdot_rows<kQ4Bytes>(n, d, rows, lanes, qs, qd, k, k_stride, scores);
}
void f32_pv_q8_0v_ukernel_4x32__neon(size_t n, size_t d, size_t m, const float* p, size_t p_stride,
                                     const uint8_t* v, size_t v_stride, const float* corr, float* acc) {
  pv<kQ8Bytes>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}
void f32_pv_q4_0v_ukernel_4x32__neon(size_t n, size_t d, size_t m, const float* p, size_t p_stride,
                                     const uint8_t* v, size_t v_stride, const float* corr, float* acc) {
  pv<kQ4Bytes>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}

}  // namespace dlm
#endif
