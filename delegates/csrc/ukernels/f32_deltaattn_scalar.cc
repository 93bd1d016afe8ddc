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

void f32_axpy_ukernel__scalar(size_t d, float a, const float* x, float* y) {
  for (size_t i = 0; i < d; i++) y[i] += a * x[i];
}

}  // namespace dlm
