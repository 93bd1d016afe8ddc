// AVX2 + FMA micro-kernels (compiled with -mavx2 -mfma; chosen at run time by cpuid).
#if defined(__x86_64__)
#include <immintrin.h>

#include <cmath>

#include "ukernels.h"

namespace dlm {

size_t f32_deltaenc_ukernel__avx2(size_t d, const float* k, float* k_hat, int32_t* idx, float* val,
                                  const deltaenc_params* params) {
  size_t n = 0, i = 0;
  const __m256 vtheta = _mm256_set1_ps(params->theta);
  const __m256 vabs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (; i + 8 <= d; i += 8) {
    const __m256 vk = _mm256_loadu_ps(k + i);
    const __m256 vh = _mm256_loadu_ps(k_hat + i);
    const __m256 vd = _mm256_sub_ps(vk, vh);
    int mask = params->dense ? 0xff : _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(vd, vabs), vtheta, _CMP_GT_OQ));
    if (mask == 0) continue;
    alignas(32) float dv[8];
    _mm256_store_ps(dv, vd);
    while (mask) {
      const int b = __builtin_ctz(mask);
      mask &= mask - 1;
      k_hat[i + b] += dv[b];
      idx[n] = static_cast<int32_t>(i + b);
      val[n] = dv[b];
      n++;
    }
  }
  return n + f32_deltaenc_remainder__scalar(d, i, k, k_hat, idx + n, val + n, params);
}

void f32_deltaqk_ukernel_8x1__avx2_fma(size_t n_keys, const float* qt, const int32_t* idx, const float* val,
                                       size_t key_stride, const int32_t* nnz, size_t nnz_stride, float* acc,
                                       float* scores) {
  static_assert(kMR == 8, "one ymm register holds the tile's 8 rows");
  __m256 vacc = _mm256_loadu_ps(acc);
  for (size_t t = 0; t < n_keys; t++) {
    const int32_t* ti = idx + t * key_stride;
    const float* tv = val + t * key_stride;
    const int32_t count = nnz[t * nnz_stride];
    __m256 p0 = _mm256_setzero_ps(), p1 = _mm256_setzero_ps();
    int32_t z = 0;
    for (; z + 2 <= count; z += 2) {
      p0 = _mm256_fmadd_ps(_mm256_loadu_ps(qt + static_cast<size_t>(ti[z]) * 8), _mm256_set1_ps(tv[z]), p0);
      p1 = _mm256_fmadd_ps(_mm256_loadu_ps(qt + static_cast<size_t>(ti[z + 1]) * 8), _mm256_set1_ps(tv[z + 1]), p1);
    }
    if (z < count) {
      p0 = _mm256_fmadd_ps(_mm256_loadu_ps(qt + static_cast<size_t>(ti[z]) * 8), _mm256_set1_ps(tv[z]), p0);
    }
    vacc = _mm256_add_ps(vacc, _mm256_add_ps(p0, p1));
    _mm256_storeu_ps(scores + t * 8, vacc);
  }
  _mm256_storeu_ps(acc, vacc);
}

float f32_dot_ukernel__avx2_fma(size_t d, const float* a, const float* b) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= d; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  s0 = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float s = _mm_cvtss_f32(h);
  for (; i < d; i++) s += a[i] * b[i];
  return s;
}

// exp(x) = 2^k * exp(r), x = k*ln2 + r, |r| <= ln2/2; degree-6 polynomial for exp(r).
// Inputs are <= 0 here (x - max); below -87.3 the result flushes to 0.
static inline __m256 exp256_ps(__m256 x) {
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
  const __m256 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, ln2_hi, x);
  r = _mm256_fnmadd_ps(k, ln2_lo, r);
  __m256 p = _mm256_set1_ps(1.3981999507e-3f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

float f32_vexpsum_ukernel__avx2_fma(size_t n, float max, float* x) {
  const __m256 vmax = _mm256_set1_ps(max);
  __m256 vsum = _mm256_setzero_ps();
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 y = exp256_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vmax));
    _mm256_storeu_ps(x + j, y);
    vsum = _mm256_add_ps(vsum, y);
  }
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(vsum), _mm256_extractf128_ps(vsum, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float sum = _mm_cvtss_f32(h);
  for (; j < n; j++) {
    x[j] = std::exp(x[j] - max);
    sum += x[j];
  }
  return sum;
}

void f32_pv_ukernel_8x8__avx2_fma(size_t n, size_t d, const float* p, size_t ldp, const float* v,
                                  size_t v_stride, float* acc) {
  static_assert(kMR == 8, "8 rows x 8 columns: 8 accumulators + V + broadcast fit the 16 ymm registers");
  size_t c = 0;
  for (; c + 8 <= d; c += 8) {
    __m256 a0 = _mm256_loadu_ps(acc + 0 * d + c), a1 = _mm256_loadu_ps(acc + 1 * d + c);
    __m256 a2 = _mm256_loadu_ps(acc + 2 * d + c), a3 = _mm256_loadu_ps(acc + 3 * d + c);
    __m256 a4 = _mm256_loadu_ps(acc + 4 * d + c), a5 = _mm256_loadu_ps(acc + 5 * d + c);
    __m256 a6 = _mm256_loadu_ps(acc + 6 * d + c), a7 = _mm256_loadu_ps(acc + 7 * d + c);
    for (size_t j = 0; j < n; j++) {
      const __m256 vj = _mm256_loadu_ps(v + j * v_stride + c);
      a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + 0 * ldp + j), vj, a0);
      a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + 1 * ldp + j), vj, a1);
      a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + 2 * ldp + j), vj, a2);
      a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + 3 * ldp + j), vj, a3);
      a4 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + 4 * ldp + j), vj, a4);
      a5 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + 5 * ldp + j), vj, a5);
      a6 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + 6 * ldp + j), vj, a6);
      a7 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + 7 * ldp + j), vj, a7);
    }
    _mm256_storeu_ps(acc + 0 * d + c, a0);
    _mm256_storeu_ps(acc + 1 * d + c, a1);
    _mm256_storeu_ps(acc + 2 * d + c, a2);
    _mm256_storeu_ps(acc + 3 * d + c, a3);
    _mm256_storeu_ps(acc + 4 * d + c, a4);
    _mm256_storeu_ps(acc + 5 * d + c, a5);
    _mm256_storeu_ps(acc + 6 * d + c, a6);
    _mm256_storeu_ps(acc + 7 * d + c, a7);
  }
  if (c < d) {   // remainder columns (head_dim not a multiple of 8)
    for (size_t j = 0; j < n; j++)
      for (int r = 0; r < 8; r++)
        for (size_t i = c; i < d; i++) acc[r * d + i] += p[r * ldp + j] * v[j * v_stride + i];
  }
}

}  // namespace dlm
#endif
