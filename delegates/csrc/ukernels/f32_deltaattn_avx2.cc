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
  for (; i < d; i++) {
    const float delta = k[i] - k_hat[i];
    if (params->dense || std::fabs(delta) > params->theta) {
      k_hat[i] += delta;
      idx[n] = static_cast<int32_t>(i);
      val[n] = delta;
      n++;
    }
  }
  return n;
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

void f32_axpy_ukernel__avx2_fma(size_t d, float a, const float* x, float* y) {
  const __m256 va = _mm256_set1_ps(a);
  size_t i = 0;
  for (; i + 8 <= d; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < d; i++) y[i] += a * x[i];
}

}  // namespace dlm
#endif
