// AVX2 variants of the q8_0 / q4_0 cache kernels (qblocks.h; compiled with -mavx2 -mfma -mf16c).
// Encode and decode are bit-identical to the scalar variants (the same fp32 operations; cvtps2dq
// rounds to nearest even like nearbyint); the integer dots use the sign trick of llama.cpp's AVX2
// q8_0 dot: |k| (u8) × sign(q, k) (s8) with vpmaddubsw, then vpmaddwd into int32.
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "fp16.h"
#include "mca.h"
#include "qblocks.h"
#include "ukernels.h"

namespace dlm {

namespace {

inline float block_scale(const uint8_t* blk) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  return _cvtsh_ss(h);
}

inline void store_scale(uint8_t* blk, float d) {
  const uint16_t h = f32_to_f16(std::min(std::max(d, -kF16Max), kF16Max));
  std::memcpy(blk, &h, 2);
}

inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// max |x| over a block of 32 (exact: max is order-free).
inline float block_amax(const float* x) {
  const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_and_ps(_mm256_loadu_ps(x), abs);
  for (int i = 8; i < 32; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + i), abs));
  return hmax8(m);
}

// rint(x·id) of a block of 32 as 32 int8 in element order (|x·id| <= 127.5: no saturation).
inline __m256i block_codes(const float* x, float id) {
  const __m256 vid = _mm256_set1_ps(id);
  __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), vid));
  __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), vid));
  __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), vid));
  __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), vid));
  const __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
  return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// A block's 32 codes as int8 in element order: q8_0's bytes, q4_0's nibbles − 8.
template <size_t kBytes>
inline __m256i load_codes(const uint8_t* blk) {
  if constexpr (kBytes == kQ8Bytes) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
  } else {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i m4 = _mm_set1_epi8(15);
    const __m256i u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m4), _mm_and_si128(b, m4));
    return _mm256_sub_epi8(u, _mm256_set1_epi8(8));
  }
}

// 8 codes of a block from element `off` (a multiple of 8) as fp32.
template <size_t kBytes>
inline __m256 load_codes8(const uint8_t* blk, size_t off) {
  if constexpr (kBytes == kQ8Bytes) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + off))));
  } else {
    __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + (off & 15))));
    if (off >= 16) u = _mm256_srli_epi32(u, 4);
    u = _mm256_sub_epi32(_mm256_and_si256(u, _mm256_set1_epi32(15)), _mm256_set1_epi32(8));
    return _mm256_cvtepi32_ps(u);
  }
}

// The 8 row accumulators of one key (or two keys' 4) → 8 lanes of scores (a horizontal-add tree).
inline __m256 row_sums8(const __m256* a) {
  const __m256 s01 = _mm256_hadd_ps(a[0], a[1]), s23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 s45 = _mm256_hadd_ps(a[4], a[5]), s67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// R query rows against n keys: per block, |k| once, then per row sign(q, k), vpmaddubsw, vpmaddwd,
// and the block's scale qd·dk into an fp32 accumulator along the block; the rows' accumulators are
// summed by the tree (4 lanes: two keys per tree, as the fp32 qkdot). kD > 0: head_dim known at
// compile time (64 and 128), so the blocks unroll.
template <int R, size_t kBytes, size_t kD>
void qkdot(size_t n, size_t d_, size_t lanes, const int8_t* qs, const float* qd, const uint8_t* k, size_t k_stride,
           float* scores) {
  const size_t d = kD > 0 ? kD : d_, nb = d / kQBlock;
  const __m256i ones = _mm256_set1_epi16(1);
  const auto dot = [&](size_t t, __m256* a) __attribute__((always_inline)) {
    const uint8_t* kt = k + t * k_stride;
    // 4 keys on; unconditional (a prefetch never faults), so the key's step has no branch
    _mm_prefetch(reinterpret_cast<const char*>(kt) + 4 * k_stride, _MM_HINT_T0);
    for (size_t b = 0; b < nb; b++) {
      const uint8_t* blk = kt + b * kBytes;
      const __m256i kq = load_codes<kBytes>(blk);
      const __m256i ax = _mm256_sign_epi8(kq, kq);
      const float dk = block_scale(blk);
      for (int r = 0; r < R; r++) {
        const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + r * d + b * kQBlock));
        const __m256i s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(qv, kq)), ones);
        a[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_set1_ps(dk * qd[r * nb + b]), a[r]);
      }
    }
  };
  size_t t = 0;
  if constexpr (R <= 4) {
    if (lanes == kTRQuad) {
      for (; t + 2 <= n; t += 2) {
        DLM_MCA_BEGIN("qk.q", kBytes, R, 2, kD);
        __m256 a[8];
        for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
        dot(t, a);
        dot(t + 1, a + 4);
        _mm256_storeu_ps(scores + t * 4, row_sums8(a));
        DLM_MCA_END();
      }
      if (t < n) {
        __m256 a[8];
        for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
        dot(t, a);
        _mm_storeu_ps(scores + t * 4, _mm256_castps256_ps128(row_sums8(a)));
      }
      return;
    }
  }
  for (; t < n; t++) {
    DLM_MCA_BEGIN("qk.q", kBytes, R, 1, kD);
    __m256 a[8];
    for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
    dot(t, a);
    _mm256_storeu_ps(scores + t * 8, row_sums8(a));
    DLM_MCA_END();
  }
}

template <size_t kBytes>
void qkdot_rows(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs, const float* qd, const uint8_t* k,
                size_t k_stride, float* scores) {
  with_rows<8>(rows, [&](auto r) {
    constexpr int R = decltype(r)::value;
    if (d == 64)
      qkdot<R, kBytes, 64>(n, d, lanes, qs, qd, k, k_stride, scores);
    else if (d == 128)
      qkdot<R, kBytes, 128>(n, d, lanes, qs, qd, k, k_stride, scores);
    else
      qkdot<R, kBytes, 0>(n, d, lanes, qs, qd, k, k_stride, scores);
  });
}

// MR rows x 8·NC columns from column c0 of block b in registers; each key's codes decoded once for the rows.
// The 16 ymm registers hold the MR·NC accumulators and either NC code vectors and one weight, or
// MR weights and one code vector (3 x 4: the whole block in two passes fewer than 3 x 2's four).
template <int MR, int NC, size_t kBytes>
inline void pv_tile(size_t n, size_t d, size_t b, size_t c0, const float* p, size_t p_stride, const uint8_t* v,
                    size_t v_stride, const float* corr, float* acc) {
  const size_t col = b * kQBlock + c0;
  constexpr bool kColumnInner = MR * NC + NC + 1 > 16;
  static_assert(!kColumnInner || MR * NC + MR + 1 <= 16, "the accumulators and operands fit the ymm registers");
  __m256 a[MR][NC];
  for (int r = 0; r < MR; r++)
    for (int i = 0; i < NC; i++) a[r][i] = _mm256_mul_ps(_mm256_loadu_ps(acc + r * d + col + 8 * i), _mm256_broadcast_ss(corr + r));
  for (size_t j = 0; j < n; j++) {
    DLM_MCA_BEGIN("pv.q", kBytes, MR, 1, 8 * NC);
    const uint8_t* blk = v + j * v_stride + b * kBytes;
    const float s = block_scale(blk);
    if constexpr (kColumnInner) {   // MR weights, then one column vector at a time
      __m256 w[MR];
      for (int r = 0; r < MR; r++) w[r] = _mm256_set1_ps(p[j * p_stride + r] * s);
      for (int i = 0; i < NC; i++) {
        const __m256 vv = load_codes8<kBytes>(blk, c0 + 8 * i);
        for (int r = 0; r < MR; r++) a[r][i] = _mm256_fmadd_ps(w[r], vv, a[r][i]);
      }
    } else {
      __m256 vj[NC];
      for (int i = 0; i < NC; i++) vj[i] = load_codes8<kBytes>(blk, c0 + 8 * i);
      for (int r = 0; r < MR; r++) {
        const __m256 w = _mm256_set1_ps(p[j * p_stride + r] * s);
        for (int i = 0; i < NC; i++) a[r][i] = _mm256_fmadd_ps(w, vj[i], a[r][i]);
      }
    }
    DLM_MCA_END();
  }
  for (int r = 0; r < MR; r++)
    for (int i = 0; i < NC; i++) _mm256_storeu_ps(acc + r * d + col + 8 * i, a[r][i]);
}

template <size_t kBytes>
void pv(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const uint8_t* v, size_t v_stride,
        const float* corr, float* acc) {
  with_rows<4>(m, [&](auto r) {
    constexpr int MR = decltype(r)::value;
    for (size_t b = 0; b < d / kQBlock; b++) {
      if constexpr (MR <= 3) {   // 4 x MR accumulators: the whole block at once
        pv_tile<MR, 4, kBytes>(n, d, b, 0, p, p_stride, v, v_stride, corr, acc);
      } else {
        pv_tile<MR, 2, kBytes>(n, d, b, 0, p, p_stride, v, v_stride, corr, acc);
        pv_tile<MR, 2, kBytes>(n, d, b, 16, p, p_stride, v, v_stride, corr, acc);
      }
    }
  });
}

}  // namespace

void q8_0_enc_ukernel__avx2(size_t n, size_t d, const float* x, uint8_t* y) {
  for (size_t b = 0; b < n * d / kQBlock; b++, x += kQBlock, y += kQ8Bytes) {
    const float s = block_amax(x) / 127.0f, id = s != 0.0f ? 1.0f / s : 0.0f;
    store_scale(y, s);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + 2), block_codes(x, id));
  }
}

void q4_0_enc_ukernel__avx2(size_t n, size_t d, const float* x, uint8_t* y) {
  for (size_t b = 0; b < n * d / kQBlock; b++, x += kQBlock, y += kQ4Bytes) {
    const float amax = block_amax(x);
    size_t i = 0;
    while (i + 1 < kQBlock && std::fabs(x[i]) != amax) i++;   // the first element of largest |x|
    const float s = x[i] / -8.0f, id = s != 0.0f ? 1.0f / s : 0.0f;
    store_scale(y, s);
    __m256i c = block_codes(x, id);   // rint(x·id) in [-8, 8]
    c = _mm256_add_epi8(_mm256_min_epi8(_mm256_max_epi8(c, _mm256_set1_epi8(-8)), _mm256_set1_epi8(7)),
                        _mm256_set1_epi8(8));
    const __m128i lo = _mm256_castsi256_si128(c), hi = _mm256_extracti128_si256(c, 1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 2), _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
  }
}

void q8_0_dec_ukernel__avx2(size_t d, const uint8_t* x, float* y) {
  for (size_t b = 0; b < d / kQBlock; b++, x += kQ8Bytes, y += kQBlock) {
    const __m256 s = _mm256_set1_ps(block_scale(x));
    for (size_t i = 0; i < kQBlock; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(s, load_codes8<kQ8Bytes>(x, i)));
  }
}

void q4_0_dec_ukernel__avx2(size_t d, const uint8_t* x, float* y) {
  for (size_t b = 0; b < d / kQBlock; b++, x += kQ4Bytes, y += kQBlock) {
    const __m256 s = _mm256_set1_ps(block_scale(x));
    for (size_t i = 0; i < kQBlock; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(s, load_codes8<kQ4Bytes>(x, i)));
  }
}

void f32_q8q_ukernel__avx2(size_t d, const float* x, int8_t* qs, float* qd) {
  for (size_t b = 0; b < d / kQBlock; b++, x += kQBlock, qs += kQBlock) {
    const float s = block_amax(x) / 127.0f, id = s != 0.0f ? 1.0f / s : 0.0f;
    qd[b] = s;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), block_codes(x, id));
  }
}

void qs8_qkdot_q8_0k_ukernel_8x32__avx2(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs,
                                        const float* qd, const uint8_t* k, size_t k_stride, float* scores) {
  qkdot_rows<kQ8Bytes>(n, d, rows, lanes, qs, qd, k, k_stride, scores);
}
void qs8_qkdot_q4_0k_ukernel_8x32__avx2(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs,
                                        const float* qd, const uint8_t* k, size_t k_stride, float* scores) {
  qkdot_rows<kQ4Bytes>(n, d, rows, lanes, qs, qd, k, k_stride, scores);
}
void f32_pv_q8_0v_ukernel_4x32__avx2(size_t n, size_t d, size_t m, const float* p, size_t p_stride,
                                     const uint8_t* v, size_t v_stride, const float* corr, float* acc) {
  pv<kQ8Bytes>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}
void f32_pv_q4_0v_ukernel_4x32__avx2(size_t n, size_t d, size_t m, const float* p, size_t p_stride,
                                     const uint8_t* v, size_t v_stride, const float* corr, float* acc) {
  pv<kQ4Bytes>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}

}  // namespace dlm
#endif
