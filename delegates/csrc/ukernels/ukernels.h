// Micro-kernels (XNNPACK style): name = dlm_<dtype>_<op>_ukernel_<tile>__<arch>.
// No allocation; tiny params structs; all buffers given by the caller.
//
// A task of the driver is a tile of kTR query rows of one kv-head group. Its queries are stored
// transposed (qt[c*kTR + r]) and its scores key-major (s[t*kTR + r]), so every key element or
// non-zero is loaded once and multiplied into all kTR rows with full-width vector FMAs.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <type_traits>

namespace dlm {

constexpr int kTR = 64;        // query rows per tile (lanes of the score vectors)
constexpr int kTRNarrow = 8;   // rows per tile when a call has at most 8 rows per kv head (decode)
constexpr int kTRQuad = 4;     // ... and at most 4 (decode with a GQA group <= 4: two keys per 8-lane vector)
constexpr int kPR = 8;   // rows per P·V micro-tile

// The decode micro-kernels' rows → template dispatch: calls f(std::integral_constant<int, R>{})
// with R = rows clamped to [1, kMax], so a kernel is compiled once per row count it can meet.
template <int R, int kMax, class F>
inline void with_rows_from(size_t rows, F& f) {
  if constexpr (R == kMax) {
    f(std::integral_constant<int, R>{});
  } else if (rows <= R) {
    f(std::integral_constant<int, R>{});
  } else {
    with_rows_from<R + 1, kMax>(rows, f);
  }
}
template <int kMax, class F>
inline void with_rows(size_t rows, F&& f) {
  with_rows_from<1, kMax>(rows, f);
}

struct deltaenc_params {
  float theta;
  bool dense;  // token 0: store every element
};

// Encode one key row (d a multiple of 8): Δ = k − k̂ where |Δ| > θ (every element if dense); each
// kept Δ is clamped to ±kF16Max and rounded to fp16, and k̂ advances by exactly that rounded value
// (error feedback). Writes the row's bitmask (d/8 bytes) and its fp16 non-zeros packed in element
// order; returns their count.
typedef size_t (*deltaenc_ukernel_fn)(size_t d, const float* k, float* k_hat, uint8_t* mask, uint16_t* val,
                                      const deltaenc_params* params);

// The same under a budget (deltaenc_budget.cc): enc as above; if it stored more than `budget` values,
// the row is encoded again from the k̂ it started from with only the `budget` largest |Δ| (ties: the
// lower element), in element order; the rest stay in k − k̂ (deferred to later keys). Returns the
// count stored. Scalar: it runs only for keys over budget. budget >= 1.
size_t deltaenc_within_budget(deltaenc_ukernel_fn enc, size_t d, const float* k, float* k_hat, uint8_t* mask,
                              uint16_t* val, const deltaenc_params* params, size_t budget);

// Sparse Q·ΔKᵀ with prefix sum over keys, for a kTR-row tile: for τ in [0, n_keys):
// acc[r] += Σ_nz qt[c*kTR + r] * Δk_τ[c]; scores[τ*kTR + r] = acc[r].
// Key τ's mask row at mask + τ*mask_stride (d/8 bytes); the keys' fp16 non-zeros packed back to back
// from val (key τ's follow key τ−1's), so the values are read as one sequential stream. A kernel may
// read up to d values from a key's start (the stream holds them: dlm_dk_rows).
typedef void (*deltaqk_ukernel_fn)(size_t n_keys, size_t d, const float* qt, const uint8_t* mask,
                                   size_t mask_stride, const uint16_t* val, float* acc, float* scores);

// The same for a narrow tile of `lanes` (kTRNarrow or kTRQuad) lanes and rows <= lanes query rows
// (decode), along head_dim: each key's ΔK row is decompressed into registers (fp16 → fp32, its
// non-zeros moved to their elements by a per-mask-byte table) and dotted with the row-major queries
// q[r*q_stride + c], so the work per key is d/8 vector steps whatever the row count, and the bytes
// read are the compressed row. For τ < n_keys, r < lanes: acc[r] += q_r·Δk_τ (0 for r >= rows);
// scores[τ*lanes + r] = acc[r]. With 4 lanes, the scores of keys τ and τ+1 fill one 8-float vector.
typedef void (*deltaqkdot_ukernel_fn)(size_t n_keys, size_t d, size_t rows, size_t lanes, const float* q,
                                      size_t q_stride, const uint8_t* mask, size_t mask_stride, const uint16_t* val,
                                      float* acc, float* scores);

// Exact Q·Kᵀ for an L-row tile and n keys: scores[t*L + r] = Σ_c qt[c*L + r] * k[t*k_stride + c].
typedef void (*qk_ukernel_fn)(size_t n, size_t d, const float* qt, const float* k, size_t k_stride, float* scores);

// Exact Q·Kᵀ for a narrow tile (rows <= lanes, lanes kTRNarrow or kTRQuad; decode), vectorised
// along head_dim instead of along rows, so a row count below the lanes does not waste work: for
// t < n, r < lanes: scores[t*lanes + r] = Σ_c q[r*q_stride + c] * k[t*k_stride + c] (0 for r >= rows).
// d a multiple of 8.
typedef void (*qkdot_ukernel_fn)(size_t n, size_t d, size_t rows, size_t lanes, const float* q, size_t q_stride,
                                 const float* k, size_t k_stride, float* scores);
// The same over an fp16 K cache (a dense program's attention.k_cache=fp16), each key converted as loaded.
typedef void (*qkdot_f16k_ukernel_fn)(size_t n, size_t d, size_t rows, size_t lanes, const float* q,
                                      size_t q_stride, const uint16_t* k, size_t k_stride, float* scores);
// One block of n keys of the online softmax, for the L rows of a tile (L = kTRQuad or a multiple
// of 8; the AVX2 kernel takes two keys per vector when L = 4). Row r's
// score of key t is s_approx[t*L + r] if t < n_approx[r], else s_exact[t*L + r]; keys t >= n_valid[r]
// are masked (causal). With x = score * scale: new max m' = max(mx, max_t x); corr[r] = exp(mx − m')
// (0 while mx = −∞); p[t*L + r] = exp(x − m') (0 if masked); sum = sum·corr + Σ_t p; mx = m'.
struct softmax_params {
  float scale;
};
typedef void (*softmax_ukernel_fn)(size_t rows, size_t n, const float* s_approx, const float* s_exact, const int32_t* n_approx,
                                   const int32_t* n_valid, float* mx, float* sum, float* corr, float* p,
                                   const softmax_params* params);

// P·V for m <= kPR rows and a block of n keys, each V row loaded once for the m rows (d a multiple of 8):
// acc[r*d + c] = acc[r*d + c] * corr[r] + Σ_j p[j*p_stride + r] * v[j*v_stride + c]   (r < m, c < d).
// V is fp32 (pv) or fp16 (pv_f16v, converted as loaded); v_stride counts elements. m <= 4 (decode:
// the query heads of one kv head) takes a 4-row register tile instead of wasting half of an 8-row one.
typedef void (*pv_ukernel_fn)(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const void* v,
                              size_t v_stride, const float* corr, float* acc);

// The V cache's store: y[i] = x[i] clamped to ±kF16Max and rounded to the nearest fp16 (ties to
// even), bit-identical across the variants; NaN stays NaN (its payload may differ: F16C and NEON
// keep its top bits, the scalar variant writes the quiet NaN). n a multiple of 8 (rows of head_dim).
typedef void (*f16cvt_ukernel_fn)(size_t n, const float* x, uint16_t* y);
// fp16 → fp32 (exact): y[i] = x[i]. n a multiple of 8. The wide tiles' keys from an fp16 K cache.
typedef void (*f32cvt_ukernel_fn)(size_t n, const uint16_t* x, float* y);

#define DLM_DECLARE_UKERNELS(arch, qk_tile, softmax_tile, pv_tile)                                              \
  void f32_deltaqk_ukernel_64x1__##arch(size_t, size_t, const float*, const uint8_t*, size_t, const uint16_t*,    \
                                        float*, float*);                                                         \
  void f32_deltaqkdot_ukernel_8x1__##arch(size_t, size_t, size_t, size_t, const float*, size_t, const uint8_t*,  \
                                          size_t, const uint16_t*, float*, float*);                              \
  void f32_qk_ukernel_##qk_tile##__##arch(size_t, size_t, const float*, const float*, size_t, float*);            \
  void f32_qkdot_ukernel_8x1__##arch(size_t, size_t, size_t, size_t, const float*, size_t, const float*, size_t,   \
                                     float*);                                                                    \
  void f32_qkdot_f16k_ukernel_8x1__##arch(size_t, size_t, size_t, size_t, const float*, size_t, const uint16_t*,  \
                                          size_t, float*);                                                       \
  void f32_softmax_ukernel_##softmax_tile##__##arch(size_t, size_t, const float*, const float*, const int32_t*,   \
                                                    const int32_t*, float*, float*, float*, float*,              \
                                                    const softmax_params*);                                      \
  void f32_pv_ukernel_##pv_tile##__##arch(size_t, size_t, size_t, const float*, size_t, const void*, size_t,     \
                                          const float*, float*);                                                 \
  void f32_pv_f16v_ukernel_##pv_tile##__##arch(size_t, size_t, size_t, const float*, size_t, const void*, size_t,\
                                               const float*, float*);

DLM_DECLARE_UKERNELS(scalar, 64x1, x1, 8xd)
size_t f32_deltaenc_ukernel__scalar(size_t, const float*, float*, uint8_t*, uint16_t*, const deltaenc_params*);
void f32_f16_vcvt_ukernel_x1__scalar(size_t, const float*, uint16_t*);
void f16_f32_vcvt_ukernel_x1__scalar(size_t, const uint16_t*, float*);
#if defined(__x86_64__)
DLM_DECLARE_UKERNELS(avx2_fma, 32x2, x8, 8x8)
size_t f32_deltaenc_ukernel__avx2(size_t, const float*, float*, uint8_t*, uint16_t*, const deltaenc_params*);
void f32_f16_vcvt_ukernel_x8__avx2(size_t, const float*, uint16_t*);
void f16_f32_vcvt_ukernel_x8__avx2(size_t, const uint16_t*, float*);
#endif
#if defined(__aarch64__)
DLM_DECLARE_UKERNELS(neon, 16x2, x4, 8x8)
size_t f32_deltaenc_ukernel__neon(size_t, const float*, float*, uint8_t*, uint16_t*, const deltaenc_params*);
void f32_f16_vcvt_ukernel_x8__neon(size_t, const float*, uint16_t*);
void f16_f32_vcvt_ukernel_x8__neon(size_t, const uint16_t*, float*);
#endif
#undef DLM_DECLARE_UKERNELS

}  // namespace dlm
