// Scalar micro-kernels: the reference variant, built for every architecture.
#include <algorithm>
#include <cmath>

#include "fp16.h"
#include "ukernels.h"

namespace dlm {

void f32_f16_vcvt_ukernel_x1__scalar(size_t n, const float* x, uint16_t* y) {
  for (size_t i = 0; i < n; i++) y[i] = f32_to_f16(std::min(std::max(x[i], -kF16Max), kF16Max));   // NaN passes
}

void f16_f32_vcvt_ukernel_x1__scalar(size_t n, const uint16_t* x, float* y) {
  for (size_t i = 0; i < n; i++) y[i] = f16_to_f32(x[i]);
}

size_t f32_deltaenc_ukernel__scalar(size_t d, const float* k, float* k_hat, uint8_t* mask, uint16_t* val,
                                    const deltaenc_params* params) {
  size_t n = 0;
  const float theta = params->theta;
  for (size_t c = 0; c < d; c += 8) {
    uint8_t bits = 0;
    for (size_t b = 0; b < 8; b++) {
      const float delta = k[c + b] - k_hat[c + b];
      if (!params->dense && !(std::fabs(delta) > theta)) continue;
      const uint16_t h = f32_to_f16(std::min(std::max(delta, -kF16Max), kF16Max));
      if (params->dense || (h & 0x7fffu) != 0) {   // a delta that rounds to zero is no delta (token 0 excepted)
        k_hat[c + b] += f16_to_f32(h);
        val[n++] = h;
        bits = static_cast<uint8_t>(bits | (1u << b));
      }
    }
    mask[c / 8] = bits;
  }
  return n;
}

namespace {

template <int L>
void deltaqk(size_t n_keys, size_t d, const float* qt, const uint8_t* mask, size_t mask_stride, const uint16_t* val,
             float* acc, float* scores) {
  int32_t idx[1024];   // head_dim <= 1024 (checked by the driver)
  const uint16_t* tv = val;   // key t's packed values: they follow key t − 1's
  for (size_t t = 0; t < n_keys; t++) {
    const size_t count = expand_mask(mask + t * mask_stride, d, idx);
    for (size_t z = 0; z < count; z++) {
      const float* qrow = qt + static_cast<size_t>(idx[z]) * L;
      const float w = f16_to_f32(tv[z]);
      for (int r = 0; r < L; r++) acc[r] += qrow[r] * w;
    }
    for (int r = 0; r < L; r++) scores[t * L + r] = acc[r];
    tv += count;
  }
}

template <int L>
void qk(size_t n, size_t d, const float* qt, const float* k, size_t k_stride, float* scores) {
  for (size_t t = 0; t < n; t++) {
    const float* kt = k + t * k_stride;
    float* s = scores + t * L;
    for (int r = 0; r < L; r++) s[r] = 0.0f;
    for (size_t c = 0; c < d; c++) {
      const float w = kt[c];
      for (int r = 0; r < L; r++) s[r] += qt[c * L + r] * w;
    }
  }
}

}  // namespace

void f32_deltaqk_ukernel_64x1__scalar(size_t n_keys, size_t d, const float* qt, const uint8_t* mask,
                                      size_t mask_stride, const uint16_t* val, float* acc, float* scores) {
  deltaqk<kTR>(n_keys, d, qt, mask, mask_stride, val, acc, scores);
}

void f32_deltaqkdot_ukernel_8x1__scalar(size_t n_keys, size_t d, size_t rows, size_t lanes, const float* q,
                                        size_t q_stride, const uint8_t* mask, size_t mask_stride, const uint16_t* val,
                                        float* acc, float* scores) {
  int32_t idx[1024];
  const uint16_t* tv = val;   // key t's packed values: they follow key t − 1's
  for (size_t t = 0; t < n_keys; t++) {
    const size_t count = expand_mask(mask + t * mask_stride, d, idx);
    for (size_t r = 0; r < lanes; r++) {
      float s = 0.0f;   // this key's q·Δk, then into the prefix sum
      if (r < rows)
        for (size_t z = 0; z < count; z++) s += q[r * q_stride + static_cast<size_t>(idx[z])] * f16_to_f32(tv[z]);
      acc[r] += s;
      scores[t * lanes + r] = acc[r];
    }
    tv += count;
  }
}

void f32_qk_ukernel_64x1__scalar(size_t n, size_t d, const float* qt, const float* k, size_t k_stride,
                                 float* scores) {
  qk<kTR>(n, d, qt, k, k_stride, scores);
}

namespace {

inline float load_k(float x) { return x; }
inline float load_k(uint16_t x) { return f16_to_f32(x); }

template <typename KT>
void qkdot(size_t n, size_t d, size_t rows, size_t lanes, const float* q, size_t q_stride, const KT* k,
           size_t k_stride, float* scores) {
  for (size_t t = 0; t < n; t++) {
    const KT* kt = k + t * k_stride;
    for (size_t r = 0; r < lanes; r++) {
      float s = 0.0f;
      if (r < rows)
        for (size_t c = 0; c < d; c++) s += q[r * q_stride + c] * load_k(kt[c]);
      scores[t * lanes + r] = s;
    }
  }
}

}  // namespace

void f32_qkdot_ukernel_8x1__scalar(size_t n, size_t d, size_t rows, size_t lanes, const float* q, size_t q_stride,
                                   const float* k, size_t k_stride, float* scores) {
  qkdot(n, d, rows, lanes, q, q_stride, k, k_stride, scores);
}

void f32_qkdot_f16k_ukernel_8x1__scalar(size_t n, size_t d, size_t rows, size_t lanes, const float* q,
                                        size_t q_stride, const uint16_t* k, size_t k_stride, float* scores) {
  qkdot(n, d, rows, lanes, q, q_stride, k, k_stride, scores);
}

void f32_softmax_ukernel_x1__scalar(size_t rows, size_t n, const float* s_approx, const float* s_exact,
                                    const int32_t* n_approx, const int32_t* n_valid, float* mx, float* sum,
                                    float* corr, float* p, const softmax_params* params) {
  const size_t L = rows;
  for (size_t r = 0; r < rows; r++) {
    const size_t valid = static_cast<size_t>(n_valid[r]), approx = static_cast<size_t>(n_approx[r]);
    float m = mx[r];
    for (size_t t = 0; t < valid; t++)
      m = std::max(m, (t < approx ? s_approx : s_exact)[t * L + r] * params->scale);
    corr[r] = mx[r] == -INFINITY ? 0.0f : std::exp(mx[r] - m);
    float total = 0.0f;
    for (size_t t = 0; t < n; t++) {
      float e = 0.0f;
      if (t < valid) e = std::exp((t < approx ? s_approx : s_exact)[t * L + r] * params->scale - m);
      p[t * L + r] = e;
      total += e;
    }
    sum[r] = sum[r] * corr[r] + total;
    mx[r] = m;
  }
}

namespace {

template <typename V, float (*Load)(V)>
void pv(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const void* vv, size_t v_stride,
        const float* corr, float* acc) {
  const V* v = static_cast<const V*>(vv);
  for (size_t r = 0; r < m; r++)
    for (size_t c = 0; c < d; c++) acc[r * d + c] *= corr[r];
  for (size_t j = 0; j < n; j++) {
    const V* vj = v + j * v_stride;
    for (size_t r = 0; r < m; r++) {
      const float w = p[j * p_stride + r];
      if (w == 0.0f) continue;   // keys past a row's causal end
      float* a = acc + r * d;
      for (size_t c = 0; c < d; c++) a[c] += w * Load(vj[c]);
    }
  }
}

float load_f32(float x) { return x; }
float load_f16(uint16_t x) { return f16_to_f32(x); }

}  // namespace

void f32_pv_ukernel_8xd__scalar(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const void* v,
                                size_t v_stride, const float* corr, float* acc) {
  pv<float, load_f32>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}

void f32_pv_f16v_ukernel_8xd__scalar(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const void* v,
                                     size_t v_stride, const float* corr, float* acc) {
  pv<uint16_t, load_f16>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}

}  // namespace dlm
