// NEON micro-kernels for arm64 (AArch64 always has Advanced SIMD with FMA: no run-time check).
#if defined(__aarch64__)
#include <arm_neon.h>

#include <cmath>

#include "ukernels.h"

namespace dlm {

size_t f32_deltaenc_ukernel__neon(size_t d, const float* k, float* k_hat, int32_t* idx, float* val,
                                  const deltaenc_params* params) {
  size_t n = 0, i = 0;
  const float32x4_t vtheta = vdupq_n_f32(params->theta);
  for (; i + 4 <= d; i += 4) {
    const float32x4_t vd = vsubq_f32(vld1q_f32(k + i), vld1q_f32(k_hat + i));
    const uint32x4_t keep = params->dense ? vdupq_n_u32(~0u) : vcagtq_f32(vd, vtheta);   // |Δ| > θ
    if (vmaxvq_u32(keep) == 0) continue;
    float dv[4];
    uint32_t km[4];
    vst1q_f32(dv, vd);
    vst1q_u32(km, keep);
    for (int b = 0; b < 4; b++) {
      if (!km[b]) continue;
      k_hat[i + b] += dv[b];
      idx[n] = static_cast<int32_t>(i + b);
      val[n] = dv[b];
      n++;
    }
  }
  return n + f32_deltaenc_remainder__scalar(d, i, k, k_hat, idx + n, val + n, params);
}

void f32_deltaqk_ukernel_8x1__neon(size_t n_keys, const float* qt, const int32_t* idx, const float* val,
                                   size_t key_stride, const int32_t* nnz, size_t nnz_stride, float* acc,
                                   float* scores) {
  static_assert(kMR == 8, "two q registers hold the tile's 8 rows");
  float32x4_t acc_lo = vld1q_f32(acc), acc_hi = vld1q_f32(acc + 4);
  for (size_t t = 0; t < n_keys; t++) {
    const int32_t* ti = idx + t * key_stride;
    const float* tv = val + t * key_stride;
    const int32_t count = nnz[t * nnz_stride];
    float32x4_t p0l = vdupq_n_f32(0.0f), p0h = p0l, p1l = p0l, p1h = p0l;
    int32_t z = 0;
    for (; z + 2 <= count; z += 2) {
      const float* q0 = qt + static_cast<size_t>(ti[z]) * 8;
      const float* q1 = qt + static_cast<size_t>(ti[z + 1]) * 8;
      p0l = vfmaq_n_f32(p0l, vld1q_f32(q0), tv[z]);
      p0h = vfmaq_n_f32(p0h, vld1q_f32(q0 + 4), tv[z]);
      p1l = vfmaq_n_f32(p1l, vld1q_f32(q1), tv[z + 1]);
      p1h = vfmaq_n_f32(p1h, vld1q_f32(q1 + 4), tv[z + 1]);
    }
    if (z < count) {
      const float* q0 = qt + static_cast<size_t>(ti[z]) * 8;
      p0l = vfmaq_n_f32(p0l, vld1q_f32(q0), tv[z]);
      p0h = vfmaq_n_f32(p0h, vld1q_f32(q0 + 4), tv[z]);
    }
    acc_lo = vaddq_f32(acc_lo, vaddq_f32(p0l, p1l));
    acc_hi = vaddq_f32(acc_hi, vaddq_f32(p0h, p1h));
    vst1q_f32(scores + t * 8, acc_lo);
    vst1q_f32(scores + t * 8 + 4, acc_hi);
  }
  vst1q_f32(acc, acc_lo);
  vst1q_f32(acc + 4, acc_hi);
}

float f32_dot_ukernel__neon(size_t d, const float* a, const float* b) {
  float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
    s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
  }
  for (; i + 4 <= d; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
  float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
  for (; i < d; i++) s += a[i] * b[i];
  return s;
}

// exp(x) = 2^k * exp(r), x = k*ln2 + r, |r| <= ln2/2; the same degree-6 polynomial as the AVX2 kernel.
// Inputs are <= 0 here (x - max); below -87.3 the result flushes to 0.
static inline float32x4_t exp_f32x4(float32x4_t x) {
  x = vmaxq_f32(x, vdupq_n_f32(-87.3f));
  const float32x4_t k = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
  float32x4_t r = vfmsq_n_f32(x, k, 0.693359375f);
  r = vfmsq_n_f32(r, k, -2.12194440e-4f);
  float32x4_t p = vdupq_n_f32(1.3981999507e-3f);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
  p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

float f32_vexpsum_ukernel__neon(size_t n, float max, float* x) {
  const float32x4_t vmax = vdupq_n_f32(max);
  float32x4_t vsum = vdupq_n_f32(0.0f);
  size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float32x4_t y = exp_f32x4(vsubq_f32(vld1q_f32(x + j), vmax));
    vst1q_f32(x + j, y);
    vsum = vaddq_f32(vsum, y);
  }
  float sum = vaddvq_f32(vsum);
  for (; j < n; j++) {
    x[j] = std::exp(x[j] - max);
    sum += x[j];
  }
  return sum;
}

void f32_pv_ukernel_8x8__neon(size_t n, size_t d, const float* p, size_t ldp, const float* v, size_t v_stride,
                              float* acc) {
  static_assert(kMR == 8, "8 rows x 8 columns: 16 accumulator registers");
  size_t c = 0;
  for (; c + 8 <= d; c += 8) {
    float32x4_t lo[8], hi[8];
    for (int r = 0; r < 8; r++) {
      lo[r] = vld1q_f32(acc + r * d + c);
      hi[r] = vld1q_f32(acc + r * d + c + 4);
    }
    for (size_t j = 0; j < n; j++) {
      const float32x4_t vl = vld1q_f32(v + j * v_stride + c), vh = vld1q_f32(v + j * v_stride + c + 4);
      for (int r = 0; r < 8; r++) {
        const float w = p[r * ldp + j];
        lo[r] = vfmaq_n_f32(lo[r], vl, w);
        hi[r] = vfmaq_n_f32(hi[r], vh, w);
      }
    }
    for (int r = 0; r < 8; r++) {
      vst1q_f32(acc + r * d + c, lo[r]);
      vst1q_f32(acc + r * d + c + 4, hi[r]);
    }
  }
  if (c < d) {   // remainder columns (head_dim not a multiple of 8)
    for (size_t j = 0; j < n; j++)
      for (int r = 0; r < 8; r++)
        for (size_t i = c; i < d; i++) acc[r * d + i] += p[r * ldp + j] * v[j * v_stride + i];
  }
}

}  // namespace dlm
#endif
