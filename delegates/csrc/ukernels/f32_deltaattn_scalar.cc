// Scalar micro-kernels: the reference variant, built for every architecture.
#include <cmath>

#include "ukernels.h"

namespace dlm {

size_t f32_deltaenc_ukernel__scalar(size_t d, const float* k, float* k_hat, int32_t* idx, float* val,
                                    const deltaenc_params* params) {
  size_t n = 0;
  const float theta = params->theta;
  for (size_t i = 0; i < d; i++) {
    const float delta = k[i] - k_hat[i];
    if (params->dense || std::fabs(delta) > theta) {
      k_hat[i] += delta;
      idx[n] = static_cast<int32_t>(i);
      val[n] = delta;
      n++;
    }
  }
  return n;
}

size_t f32_deltaenc_remainder__scalar(size_t d, size_t i, const float* k, float* k_hat, int32_t* idx, float* val,
                                      const deltaenc_params* params) {
  if (i >= d) return 0;
  const size_t m = f32_deltaenc_ukernel__scalar(d - i, k + i, k_hat + i, idx, val, params);
  for (size_t z = 0; z < m; z++) idx[z] += static_cast<int32_t>(i);
  return m;
}

void f32_deltaqk_ukernel_8x1__scalar(size_t n_keys, const float* qt, const int32_t* idx, const float* val,
                                     size_t key_stride, const int32_t* nnz, size_t nnz_stride, float* acc,
                                     float* scores) {
  for (size_t t = 0; t < n_keys; t++) {
    const int32_t* ti = idx + t * key_stride;
    const float* tv = val + t * key_stride;
    float part[kMR] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int32_t count = nnz[t * nnz_stride];
    for (int32_t z = 0; z < count; z++) {
      const float* qrow = qt + static_cast<size_t>(ti[z]) * kMR;
      const float w = tv[z];
      for (int r = 0; r < kMR; r++) part[r] += qrow[r] * w;
    }
    for (int r = 0; r < kMR; r++) {
      acc[r] += part[r];
      scores[t * kMR + r] = acc[r];
    }
  }
}

float f32_dot_ukernel__scalar(size_t d, const float* a, const float* b) {
  float s = 0.0f;
  for (size_t i = 0; i < d; i++) s += a[i] * b[i];
  return s;
}

float f32_vexpsum_ukernel__scalar(size_t n, float max, float* x) {
  float sum = 0.0f;
  for (size_t j = 0; j < n; j++) {
    x[j] = std::exp(x[j] - max);
    sum += x[j];
  }
  return sum;
}

void f32_pv_ukernel_8xd__scalar(size_t n, size_t d, const float* p, size_t ldp, const float* v, size_t v_stride,
                                float* acc) {
  for (size_t j = 0; j < n; j++) {
    const float* vj = v + j * v_stride;
    for (int r = 0; r < kMR; r++) {
      const float w = p[r * ldp + j];
      if (w == 0.0f) continue;   // rows past their causal end, and unused rows of a partial tile
      float* a = acc + r * d;
      for (size_t c = 0; c < d; c++) a[c] += w * vj[c];
    }
  }
}

}  // namespace dlm
