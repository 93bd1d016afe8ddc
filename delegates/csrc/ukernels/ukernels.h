// Micro-kernels (XNNPACK style): name = dlm_<dtype>_<op>_ukernel_<tile>__<arch>.
// No allocation; tiny params structs; all buffers given by the caller.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dlm {

constexpr int kMR = 8;  // query rows per tile

struct deltaenc_params {
  float theta;
  bool dense;  // token 0: store every element
};

// Encode one key row: Δ = k − k̂ where |Δ| > θ (all if dense); k̂ += Δ.
// Writes the non-zeros as (idx, val) and returns their count.
typedef size_t (*deltaenc_ukernel_fn)(size_t d, const float* k, float* k_hat, int32_t* idx, float* val,
                                      const deltaenc_params* params);

// Sparse Q·ΔKᵀ with prefix sum over keys, for an MR-row tile stored transposed (qt[d*MR + r]).
// For τ in [0, n_keys): acc[r] += Σ_nz qt[idx*MR + r] * val; scores[τ*MR + r] = acc[r].
// Key τ's lists start at idx/val + τ*key_stride; its count is nnz[τ*nnz_stride].
typedef void (*deltaqk_ukernel_fn)(size_t n_keys, const float* qt, const int32_t* idx, const float* val,
                                   size_t key_stride, const int32_t* nnz, size_t nnz_stride, float* acc,
                                   float* scores);

// Dense dot product of length d.
typedef float (*dot_ukernel_fn)(size_t d, const float* a, const float* b);

// x[j] <- exp(x[j] - max) for j < n; returns the sum.
typedef float (*vexpsum_ukernel_fn)(size_t n, float max, float* x);

// P·V for a tile of MR query rows and a block of n keys, each V row loaded once for all MR rows:
// acc[r*d + c] += Σ_j p[r*ldp + j] * v[j*v_stride + c]   (r < MR, c < d, j < n).
typedef void (*pv_ukernel_fn)(size_t n, size_t d, const float* p, size_t ldp, const float* v, size_t v_stride,
                              float* acc);

size_t f32_deltaenc_ukernel__scalar(size_t, const float*, float*, int32_t*, float*, const deltaenc_params*);
// Elements [i, d) of a row with the scalar kernel (vector kernels' tails); indices relative to the row.
size_t f32_deltaenc_remainder__scalar(size_t d, size_t i, const float* k, float* k_hat, int32_t* idx, float* val,
                                      const deltaenc_params* params);
void f32_deltaqk_ukernel_8x1__scalar(size_t, const float*, const int32_t*, const float*, size_t, const int32_t*,
                                     size_t, float*, float*);
float f32_dot_ukernel__scalar(size_t, const float*, const float*);
float f32_vexpsum_ukernel__scalar(size_t, float, float*);
void f32_pv_ukernel_8xd__scalar(size_t, size_t, const float*, size_t, const float*, size_t, float*);

#if defined(__x86_64__)
size_t f32_deltaenc_ukernel__avx2(size_t, const float*, float*, int32_t*, float*, const deltaenc_params*);
void f32_deltaqk_ukernel_8x1__avx2_fma(size_t, const float*, const int32_t*, const float*, size_t, const int32_t*,
                                       size_t, float*, float*);
float f32_dot_ukernel__avx2_fma(size_t, const float*, const float*);
float f32_vexpsum_ukernel__avx2_fma(size_t, float, float*);
void f32_pv_ukernel_8x8__avx2_fma(size_t, size_t, const float*, size_t, const float*, size_t, float*);
#endif

#if defined(__aarch64__)
size_t f32_deltaenc_ukernel__neon(size_t, const float*, float*, int32_t*, float*, const deltaenc_params*);
void f32_deltaqk_ukernel_8x1__neon(size_t, const float*, const int32_t*, const float*, size_t, const int32_t*,
                                   size_t, float*, float*);
float f32_dot_ukernel__neon(size_t, const float*, const float*);
float f32_vexpsum_ukernel__neon(size_t, float, float*);
void f32_pv_ukernel_8x8__neon(size_t, size_t, const float*, size_t, const float*, size_t, float*);
#endif

}  // namespace dlm
