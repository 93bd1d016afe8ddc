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
  if (i < d) {  // remainder: the scalar kernel, indices shifted by i
    const size_t m = f32_deltaenc_ukernel__scalar(d - i, k + i, k_hat + i, idx + n, val + n, params);
    for (size_t z = n; z < n + m; z++) idx[z] += static_cast<int32_t>(i);
    n += m;
  }
  return n;
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

void f32_pv_ukernel_x32__neon(size_t n, size_t d, const float* p, const float* v, size_t v_stride, float scale,
                              float* out) {
  size_t c = 0;
  for (; c + 32 <= d; c += 32) {   // 32 output columns in 8 registers across all keys
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t j = 0; j < n; j++) {
      const float w = p[j];
      const float* vj = v + j * v_stride + c;
      a0 = vfmaq_n_f32(a0, vld1q_f32(vj), w);
      a1 = vfmaq_n_f32(a1, vld1q_f32(vj + 4), w);
      a2 = vfmaq_n_f32(a2, vld1q_f32(vj + 8), w);
      a3 = vfmaq_n_f32(a3, vld1q_f32(vj + 12), w);
      a4 = vfmaq_n_f32(a4, vld1q_f32(vj + 16), w);
      a5 = vfmaq_n_f32(a5, vld1q_f32(vj + 20), w);
      a6 = vfmaq_n_f32(a6, vld1q_f32(vj + 24), w);
      a7 = vfmaq_n_f32(a7, vld1q_f32(vj + 28), w);
    }
    vst1q_f32(out + c, vmulq_n_f32(a0, scale));
    vst1q_f32(out + c + 4, vmulq_n_f32(a1, scale));
    vst1q_f32(out + c + 8, vmulq_n_f32(a2, scale));
    vst1q_f32(out + c + 12, vmulq_n_f32(a3, scale));
    vst1q_f32(out + c + 16, vmulq_n_f32(a4, scale));
    vst1q_f32(out + c + 20, vmulq_n_f32(a5, scale));
    vst1q_f32(out + c + 24, vmulq_n_f32(a6, scale));
    vst1q_f32(out + c + 28, vmulq_n_f32(a7, scale));
  }
  if (c < d) {   // remainder columns (head_dim not a multiple of 32)
    for (size_t i = c; i < d; i++) out[i] = 0.0f;
    for (size_t j = 0; j < n; j++) {
      const float w = p[j] * scale;
      const float* vj = v + j * v_stride;
      for (size_t i = c; i < d; i++) out[i] += w * vj[i];
    }
  }
}

}  // namespace dlm
#endif
