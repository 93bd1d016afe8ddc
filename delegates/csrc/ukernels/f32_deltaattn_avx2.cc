// AVX2 + FMA micro-kernels (compiled with -mavx2 -mfma; chosen at run time by cpuid).
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "fp16.h"
#include "mca.h"
#include "ukernels.h"

namespace dlm {

// F16C rounds to nearest even like f32_to_f16; max/min return their second operand for a NaN, so
// NaN passes the clamp. 8 values per step: the scalar conversion's branches took 36 instructions and
// ~10 ns per value, a quarter of a 128-token prefill's attention call (callgrind, bench timing).
void f32_f16_vcvt_ukernel_x8__avx2(size_t n, const float* x, uint16_t* y) {
  const __m256 vhi = _mm256_set1_ps(kF16Max), vlo = _mm256_set1_ps(-kF16Max);
  for (size_t i = 0; i < n; i += 8) {
    const __m256 v = _mm256_min_ps(vhi, _mm256_max_ps(vlo, _mm256_loadu_ps(x + i)));
    const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), h);
  }
}

// The fp16 K cache's keys back to fp32 (exact: every fp16 is an fp32), for the wide tiles' qk.
void f16_f32_vcvt_ukernel_x8__avx2(size_t n, const uint16_t* x, float* y) {
  for (size_t i = 0; i < n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
}

size_t f32_deltaenc_ukernel__avx2(size_t d, const float* k, float* k_hat, uint8_t* mask, uint16_t* val,
                                  const deltaenc_params* params) {
  size_t n = 0;
  const __m256 vtheta = _mm256_set1_ps(params->theta);
  const __m256 vabs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 vhi = _mm256_set1_ps(kF16Max), vlo = _mm256_set1_ps(-kF16Max);
  for (size_t c = 0; c < d; c += 8) {
    const __m256 vh = _mm256_loadu_ps(k_hat + c);
    const __m256 vd = _mm256_sub_ps(_mm256_loadu_ps(k + c), vh);
    const __m128i h = _mm256_cvtps_ph(_mm256_min_ps(_mm256_max_ps(vd, vlo), vhi), _MM_FROUND_TO_NEAREST_INT);
    const __m256 r = _mm256_cvtph_ps(h);
    // |Δ| > θ and Δ does not round to zero (a delta that rounds to zero is no delta); token 0: all
    const __m256 keep = params->dense ? _mm256_castsi256_ps(_mm256_set1_epi32(-1))
                                      : _mm256_and_ps(_mm256_cmp_ps(_mm256_and_ps(vd, vabs), vtheta, _CMP_GT_OQ),
                                                      _mm256_cmp_ps(r, _mm256_setzero_ps(), _CMP_NEQ_OQ));
    int bits = _mm256_movemask_ps(keep);
    mask[c / 8] = static_cast<uint8_t>(bits);
    if (bits == 0) continue;
    _mm256_storeu_ps(k_hat + c, _mm256_blendv_ps(vh, _mm256_add_ps(vh, r), keep));
    alignas(16) uint16_t hv[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(hv), h);
    while (bits) {
      val[n++] = hv[__builtin_ctz(bits)];
      bits &= bits - 1;
    }
  }
  return n;
}

// Expands a key's mask row into indices and its packed fp16 values into fp32 (8 at a time: reading
// up to d values from the key's start stays inside the stream); prefetches the mask row 4 keys on
// and the value stream 512 bytes on (one sequential stream per kv head).
static inline size_t load_key(size_t t, size_t n_keys, size_t d, const uint8_t* mask, size_t mask_stride,
                              const uint16_t* tv, int32_t* idx, float* w) {
  const uint8_t* tm = mask + t * mask_stride;
  if (t + 4 < n_keys) {
    _mm_prefetch(reinterpret_cast<const char*>(tm + 4 * mask_stride), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(tv + 256), _MM_HINT_T0);
  }
  const size_t count = expand_mask(tm, d, idx);
  for (size_t z = 0; z < count; z += 8)
    _mm256_store_ps(w + z, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tv + z))));
  return count;
}

void f32_deltaqk_ukernel_64x1__avx2_fma(size_t n_keys, size_t d, const float* qt, const uint8_t* mask,
                                        size_t mask_stride, const uint16_t* val, float* acc, float* scores) {
  static_assert(kTR == 64, "8 ymm accumulators hold the tile's 64 rows");
  int32_t idx[1024];
  alignas(32) float w[1024];
  __m256 a0 = _mm256_loadu_ps(acc), a1 = _mm256_loadu_ps(acc + 8), a2 = _mm256_loadu_ps(acc + 16);
  __m256 a3 = _mm256_loadu_ps(acc + 24), a4 = _mm256_loadu_ps(acc + 32), a5 = _mm256_loadu_ps(acc + 40);
  __m256 a6 = _mm256_loadu_ps(acc + 48), a7 = _mm256_loadu_ps(acc + 56);
  const uint16_t* tv = val;   // key t's packed values: they follow key t − 1's
  for (size_t t = 0; t < n_keys; t++) {
    const size_t count = load_key(t, n_keys, d, mask, mask_stride, tv, idx, w);
    tv += count;
    for (size_t z = 0; z < count; z++) {   // one non-zero: 8 independent FMAs into the prefix sums
      const float* q = qt + static_cast<size_t>(idx[z]) * 64;
      const __m256 wz = _mm256_broadcast_ss(w + z);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q), wz, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8), wz, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 16), wz, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 24), wz, a3);
      a4 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 32), wz, a4);
      a5 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 40), wz, a5);
      a6 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 48), wz, a6);
      a7 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 56), wz, a7);
    }
    float* st = scores + t * 64;
    _mm256_storeu_ps(st, a0);
    _mm256_storeu_ps(st + 8, a1);
    _mm256_storeu_ps(st + 16, a2);
    _mm256_storeu_ps(st + 24, a3);
    _mm256_storeu_ps(st + 32, a4);
    _mm256_storeu_ps(st + 40, a5);
    _mm256_storeu_ps(st + 48, a6);
    _mm256_storeu_ps(st + 56, a7);
  }
  _mm256_storeu_ps(acc, a0);
  _mm256_storeu_ps(acc + 8, a1);
  _mm256_storeu_ps(acc + 16, a2);
  _mm256_storeu_ps(acc + 24, a3);
  _mm256_storeu_ps(acc + 32, a4);
  _mm256_storeu_ps(acc + 40, a5);
  _mm256_storeu_ps(acc + 48, a6);
  _mm256_storeu_ps(acc + 56, a7);
}

void f32_qk_ukernel_32x2__avx2_fma(size_t n, size_t d, const float* qt, const float* k, size_t k_stride,
                                  float* scores) {
  static_assert(kTR % 32 == 0, "the tile's rows in slices of 32 (4 ymm)");
  for (int r0 = 0; r0 < kTR; r0 += 32) {   // 32 rows x 2 keys: 8 accumulators, 4 Q loads + 2 broadcasts per element
    const float* q = qt + r0;
    size_t t = 0;
    for (; t + 2 <= n; t += 2) {
      const float* k0 = k + t * k_stride;
      const float* k1 = k0 + k_stride;
      if (r0 == 0 && t + 6 < n)   // key rows 4 ahead (strided by the kv heads)
        for (size_t i = 0; i < d; i += 16) {
          _mm_prefetch(reinterpret_cast<const char*>(k0 + 4 * k_stride + i), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(k1 + 4 * k_stride + i), _MM_HINT_T0);
        }
      __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00, s12 = s00, s13 = s00;
      for (size_t c = 0; c < d; c++) {
        const float* qc = q + c * kTR;
        const __m256 q0 = _mm256_loadu_ps(qc), q1 = _mm256_loadu_ps(qc + 8);
        const __m256 q2 = _mm256_loadu_ps(qc + 16), q3 = _mm256_loadu_ps(qc + 24);
        const __m256 w0 = _mm256_broadcast_ss(k0 + c), w1 = _mm256_broadcast_ss(k1 + c);
        s00 = _mm256_fmadd_ps(q0, w0, s00);
        s01 = _mm256_fmadd_ps(q1, w0, s01);
        s02 = _mm256_fmadd_ps(q2, w0, s02);
        s03 = _mm256_fmadd_ps(q3, w0, s03);
        s10 = _mm256_fmadd_ps(q0, w1, s10);
        s11 = _mm256_fmadd_ps(q1, w1, s11);
        s12 = _mm256_fmadd_ps(q2, w1, s12);
        s13 = _mm256_fmadd_ps(q3, w1, s13);
      }
      float* o0 = scores + t * kTR + r0;
      float* o1 = o0 + kTR;
      _mm256_storeu_ps(o0, s00);
      _mm256_storeu_ps(o0 + 8, s01);
      _mm256_storeu_ps(o0 + 16, s02);
      _mm256_storeu_ps(o0 + 24, s03);
      _mm256_storeu_ps(o1, s10);
      _mm256_storeu_ps(o1 + 8, s11);
      _mm256_storeu_ps(o1 + 16, s12);
      _mm256_storeu_ps(o1 + 24, s13);
    }
    if (t < n) {
      const float* k0 = k + t * k_stride;
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (size_t c = 0; c < d; c++) {
        const float* qc = q + c * kTR;
        const __m256 w = _mm256_broadcast_ss(k0 + c);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(qc), w, s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(qc + 8), w, s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(qc + 16), w, s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(qc + 24), w, s3);
      }
      float* o0 = scores + t * kTR + r0;
      _mm256_storeu_ps(o0, s0);
      _mm256_storeu_ps(o0 + 8, s1);
      _mm256_storeu_ps(o0 + 16, s2);
      _mm256_storeu_ps(o0 + 24, s3);
    }
  }
}

namespace {

// Decode streams each kv head's K and V rows from memory: the row kPfNear rows on into L1 and the
// one kPfFar rows on into L2 (a prefetch never faults; past the block it serves the next one). With
// the hardware prefetchers alone (and 4 rows on, ~60 ns of work: less than one DRAM latency) a
// streamed step took about its in-cache time plus its memory time; each distance shortened it in
// A/B runs on zen4 (docs/results.md, decode against its roofline).
constexpr size_t kPfNear = 16, kPfFar = 64;
__attribute__((always_inline)) static inline void prefetch_ahead(const void* row_part, size_t row_bytes) {
  const char* x = static_cast<const char*>(row_part);
  _mm_prefetch(x + kPfNear * row_bytes, _MM_HINT_T0);
  _mm_prefetch(x + kPfFar * row_bytes, _MM_HINT_T1);
}

// The 8 row accumulators of one key → its 8 lanes of scores (a horizontal-add tree).
__attribute__((always_inline)) static inline __m256 row_sums8(const __m256* a) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 lo = _mm256_hadd_ps(h01, h23), hi = _mm256_hadd_ps(h45, h67);   // [r0..3 | r0..3], [r4..7 | r4..7]
  return _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31));
}

// A key's 8 elements from an fp32 or an fp16 (F16C) K cache.
__attribute__((always_inline)) static inline __m256 load_k8(const float* k) { return _mm256_loadu_ps(k); }
__attribute__((always_inline)) static inline __m256 load_k8(const uint16_t* k) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(k)));
}

// R rows: one accumulator per row along head_dim, one K load shared by the rows, then the
// horizontal-add tree. With 4 lanes (R <= 4) two keys share a tree and one store (key t's rows in
// lanes 0..3, key t+1's in 4..7: their places in the scores). kD > 0: head_dim known at compile
// time (64, the common one) and so is the queries' stride (the driver's is head_dim), so the
// element loop unrolls and every query chunk is a fixed offset from one register (with a runtime
// stride GCC kept R·d/8 chunk pointers on the stack and spilled the chunks). The lambdas are
// always_inline: GCC kept deltaqkdot's pair() out of line. Both: 26 % fewer instructions per delta
// key, 10 % per dense key (callgrind, `bench/decode_ukernels.cc`, SmolLM2's shape).
template <int R, int kD, typename KT>
void qkdot(size_t n, size_t d_, size_t lanes, const float* q, size_t q_stride, const KT* k, size_t k_stride,
           float* scores) {
  const size_t d = kD > 0 ? kD : d_, qs = kD > 0 ? kD : q_stride;
  constexpr size_t kLine = 64 / sizeof(KT);   // key elements per cache line
  const auto dot = [&](size_t t, __m256* a) __attribute__((always_inline)) {
    const KT* kt = k + t * k_stride;
    for (size_t c = 0; c < d; c += kLine) prefetch_ahead(kt + c, k_stride * sizeof(KT));
    for (size_t c = 0; c < d; c += 8) {
      const __m256 kv = load_k8(kt + c);
      for (int r = 0; r < R; r++) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * qs + c), kv, a[r]);
    }
  };
  size_t t = 0;
  if constexpr (R <= 4) {
    if (lanes == kTRQuad) {
      for (; t + 2 <= n; t += 2) {
        DLM_MCA_BEGIN("qk.f", 8 * sizeof(KT), R, 2, kD);
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
    DLM_MCA_BEGIN("qk.f", 8 * sizeof(KT), R, 1, kD);
    __m256 a[8];
    for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
    dot(t, a);
    _mm256_storeu_ps(scores + t * 8, row_sums8(a));
    DLM_MCA_END();
  }
}

// pshufb indices for 8 packed fp16 values per mask byte (fp16.h).
alignas(16) constexpr ExpandLut<2, 0x80> kExpandLut{};

// One key's ΔK row decompressed 8 elements at a time (the chunk's packed fp16 values, loaded from
// its offset, moved to their elements by pshufb with the rest zeroed, then converted) and dotted
// with R row-major queries along head_dim into a[0..R). Returns the next key's start in the stream.
// The value pointer advances by each chunk's popcount (taken from the LUT offset, mask byte × 16,
// which has the byte's bits): 5 scalar ops per chunk and a 1-cycle add chain, where a SWAR prefix
// popcount per 8 mask bytes, so that no chunk waited on the one before, cost 6 per chunk plus 14 per
// key (deltaqkdot 15 % fewer instructions, 0.82–0.91x the time; callgrind and bench/decode_ukernels.cc).
// Chunk i's values start at most 8i values past the key's start, so the 8 it reads stay within the
// d values per key the stream holds.
template <int R>
__attribute__((always_inline)) static inline const uint16_t* delta_key_dot(size_t d, const uint8_t* tm, const uint16_t* tv, const float* q, size_t q_stride,
                                 __m256* a) {
  const auto chunk = [&](size_t c0, size_t i, uint64_t m8) __attribute__((always_inline)) {
    const size_t lut = (i == 0 ? m8 << 4 : m8 >> (8 * i - 4)) & 0xff0;   // mask byte i × 16
    const __m128i h = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tv)),
                                       _mm_load_si128(reinterpret_cast<const __m128i*>(
                                           reinterpret_cast<const uint8_t*>(kExpandLut.idx) + lut)));
    tv += __builtin_popcountll(lut);
    const __m256 kv = _mm256_cvtph_ps(h);
    const float* qc = q + c0 + 8 * i;
    for (int r = 0; r < R; r++) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(qc + r * q_stride), kv, a[r]);
  };
  for (size_t c0 = 0; c0 < d; c0 += 64) {
    const size_t chunks = std::min<size_t>(8, (d - c0) / 8);
    const uint64_t m8 = load_mask8(tm + c0 / 8, chunks);
    if (chunks == 8) {
#pragma GCC unroll 8
      for (size_t i = 0; i < 8; i++) chunk(c0, i, m8);
    } else {
      for (size_t i = 0; i < chunks; i++) chunk(c0, i, m8);
    }
  }
  return tv;
}

// R rows: each key's q·Δk (delta_key_dot, then the horizontal-add tree) into the prefix sums.
// R <= 4 takes two keys per step: their rows fill the tree's 8 lanes (key t in 0..3, key t+1 in
// 4..7), so the two dependency chains overlap and one tree serves both; with 4 lanes that vector
// is also the two keys' place in the scores. The keys' values are one sequential stream (key t+1's
// start = where key t's chunks left the pointer), which the hardware prefetcher follows; a software
// prefetch 512 bytes on and the mask rows 16 keys on help it start. kD as in qkdot.
template <int R, int kD>
void deltaqkdot(size_t n_keys, size_t d_, size_t lanes, const float* q, size_t q_stride, const uint8_t* mask,
                size_t mask_stride, const uint16_t* val, float* acc, float* scores) {
  constexpr size_t kAhead = 16;
  const size_t d = kD > 0 ? kD : d_, qs = kD > 0 ? kD : q_stride;
  const __m256 zero = _mm256_setzero_ps();
  const uint16_t* tv = val;
  const auto prefetch = [&](size_t t) __attribute__((always_inline)) {
    if (t + kAhead < n_keys) _mm_prefetch(reinterpret_cast<const char*>(mask + (t + kAhead) * mask_stride), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(tv + 256), _MM_HINT_T0);
  };
  const auto one = [&](size_t t) __attribute__((always_inline)) {   // key t's q·Δk in lanes 0..R-1
    prefetch(t);
    const uint8_t* m0 = mask + t * mask_stride;
    __m256 a[8];
    for (int r = 0; r < 8; r++) a[r] = zero;
    tv = delta_key_dot<R>(d, m0, tv, q, qs, a);
    return row_sums8(a);
  };
  const auto singles8 = [&](size_t t, __m256 vacc) {   // keys t.. one at a time, 8 lanes
    for (; t < n_keys; t++) {
      vacc = _mm256_add_ps(vacc, one(t));
      _mm256_storeu_ps(scores + t * 8, vacc);
    }
    _mm256_storeu_ps(acc, vacc);
  };
  if constexpr (R <= 4) {
    // keys t, t+1: lanes 0..3, 4..7. Not one() twice: one tree for both keys, and key t+1's start
    // is ready 8 adds into key t's dot, so the two dots overlap (a shared helper measured 23 %
    // slower per key).
    const auto pair = [&](size_t t) __attribute__((always_inline)) {
      prefetch(t);
      const uint8_t* m0 = mask + t * mask_stride;
      __m256 a[8];
      for (int r = 0; r < 8; r++) a[r] = zero;
      const uint16_t* tv1 = delta_key_dot<R>(d, m0, tv, q, qs, a);
      tv = delta_key_dot<R>(d, m0 + mask_stride, tv1, q, qs, a + 4);
      return row_sums8(a);
    };
    size_t t = 0;
    if (lanes == kTRQuad) {
      __m256 vacc = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(acc));   // [acc | acc]
      for (; t + 2 <= n_keys; t += 2) {
        DLM_MCA_BEGIN("qk.delta", 16, R, 2, kD);
        const __m256 x = pair(t);
        const __m256 y = _mm256_add_ps(vacc, _mm256_add_ps(x, _mm256_permute2f128_ps(x, x, 0x08)));   // + [0 | x0]
        _mm256_storeu_ps(scores + t * 4, y);   // [acc + x0 | acc + x0 + x1]
        vacc = _mm256_permute2f128_ps(y, y, 0x11);
        DLM_MCA_END();
      }
      if (t < n_keys) {
        vacc = _mm256_add_ps(vacc, one(t));
        _mm_storeu_ps(scores + t * 4, _mm256_castps256_ps128(vacc));
      }
      _mm_storeu_ps(acc, _mm256_castps256_ps128(vacc));
      return;
    }
    __m256 vacc = _mm256_loadu_ps(acc);
    for (; t + 2 <= n_keys; t += 2) {
      const __m256 x = pair(t);
      vacc = _mm256_add_ps(vacc, _mm256_blend_ps(x, zero, 0xF0));
      _mm256_storeu_ps(scores + t * 8, vacc);
      vacc = _mm256_add_ps(vacc, _mm256_permute2f128_ps(x, x, 0x81));   // key t+1's lanes down, upper half 0
      _mm256_storeu_ps(scores + (t + 1) * 8, vacc);
    }
    singles8(t, vacc);
  } else {
    singles8(0, _mm256_loadu_ps(acc));
  }
}

}  // namespace

template <typename KT>
static void qkdot_rows(size_t n, size_t d, size_t rows, size_t lanes, const float* q, size_t q_stride, const KT* k,
                       size_t k_stride, float* scores) {
  static_assert(kTRNarrow == 8 && kTRQuad == 4, "one ymm register holds a key's 8 lanes of scores, or two keys' 4");
  with_rows<8>(rows, [&](auto r) {
    constexpr int R = decltype(r)::value;
    if (d == 64 && q_stride == 64)
      qkdot<R, 64>(n, d, lanes, q, q_stride, k, k_stride, scores);
    else
      qkdot<R, 0>(n, d, lanes, q, q_stride, k, k_stride, scores);
  });
}

void f32_qkdot_ukernel_8x1__avx2_fma(size_t n, size_t d, size_t rows, size_t lanes, const float* q, size_t q_stride,
                                     const float* k, size_t k_stride, float* scores) {
  qkdot_rows(n, d, rows, lanes, q, q_stride, k, k_stride, scores);
}

void f32_qkdot_f16k_ukernel_8x1__avx2_fma(size_t n, size_t d, size_t rows, size_t lanes, const float* q,
                                          size_t q_stride, const uint16_t* k, size_t k_stride, float* scores) {
  qkdot_rows(n, d, rows, lanes, q, q_stride, k, k_stride, scores);
}

void f32_deltaqkdot_ukernel_8x1__avx2_fma(size_t n_keys, size_t d, size_t rows, size_t lanes, const float* q,
                                          size_t q_stride, const uint8_t* mask, size_t mask_stride,
                                          const uint16_t* val, float* acc, float* scores) {
  static_assert(kTRNarrow == 8 && kTRQuad == 4, "one ymm register holds a key's 8 lanes of scores, or two keys' 4");
  with_rows<8>(rows, [&](auto r) {
    constexpr int R = decltype(r)::value;
    if (d == 64 && q_stride == 64)
      deltaqkdot<R, 64>(n_keys, d, lanes, q, q_stride, mask, mask_stride, val, acc, scores);
    else
      deltaqkdot<R, 0>(n_keys, d, lanes, q, q_stride, mask, mask_stride, val, acc, scores);
  });
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

// L = 4 (decode with a GQA group <= 4): keys 2u and 2u+1 share one vector (lanes 0..3 and 4..7,
// their places in the scores and in p), so a block takes n/2 exps of 8 lanes instead of n of
// which half would be idle; the two halves' maxima and sums are merged per block. An odd last key
// takes the low half alone (the high half, past the block, is masked and not stored).
static void softmax_pairs4(size_t n, const float* s_approx, const float* s_exact, const int32_t* n_approx,
                           const int32_t* n_valid, float* mx, float* sum, float* corr, float* p, float scale) {
  const __m256 vscale = _mm256_set1_ps(scale), vninf = _mm256_set1_ps(-INFINITY), zero = _mm256_setzero_ps();
  const __m128i va4 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(n_approx));
  const __m128i vv4 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(n_valid));
  const __m256i va = _mm256_set_m128i(va4, va4), vv = _mm256_set_m128i(vv4, vv4);
  const __m128i vn = _mm_set1_epi32(static_cast<int32_t>(n));
  const auto none = [](__m128i m) { return _mm_movemask_ps(_mm_castsi128_ps(m)) == 0; };
  const float* uniform = !none(_mm_cmpgt_epi32(vn, vv4)) ? nullptr          // a row is masked in this block
                         : none(_mm_cmpgt_epi32(vn, va4)) ? s_approx        // every key approximate
                         : none(_mm_cmpgt_epi32(va4, _mm_setzero_si128())) ? s_exact : nullptr;
  const size_t steps = (n + 1) / 2;
  const __m256 low_half = _mm256_castsi256_ps(_mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0));
  const auto load = [&](const float* s, size_t u) {
    return 2 * u + 1 < n ? _mm256_loadu_ps(s + 8 * u) : _mm256_set_m128(_mm_setzero_ps(), _mm_loadu_ps(s + 8 * u));
  };
  // Step u's scaled scores and which lanes count (causal; the odd last key's high half does not).
  const auto scaled = [&](size_t u, __m256* ok) {
    if (uniform) {
      *ok = 2 * u + 1 < n ? _mm256_castsi256_ps(_mm256_set1_epi32(-1)) : low_half;
      return _mm256_mul_ps(load(uniform, u), vscale);
    }
    const __m256i vt = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(2 * u)),
                                        _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
    const __m256 use_exact = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_add_epi32(vt, _mm256_set1_epi32(1)), va));
    *ok = _mm256_castsi256_ps(_mm256_cmpgt_epi32(vv, vt));   // the high half past n: vt = n >= n_valid
    return _mm256_mul_ps(_mm256_blendv_ps(load(s_approx, u), load(s_exact, u), use_exact), vscale);
  };
  const __m128 old = _mm_loadu_ps(mx);
  __m256 m8 = _mm256_set_m128(old, old);
  for (size_t u = 0; u < steps; u++) {
    __m256 ok;
    const __m256 x = scaled(u, &ok);
    m8 = _mm256_max_ps(m8, _mm256_blendv_ps(vninf, x, ok));
  }
  const __m128 m = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
  const __m256 mm = _mm256_set_m128(m, m), old8 = _mm256_set_m128(old, old);
  const __m256 c = _mm256_blendv_ps(exp256_ps(_mm256_sub_ps(old8, mm)), zero, _mm256_cmp_ps(old8, vninf, _CMP_EQ_OQ));
  const __m256 msub = _mm256_blendv_ps(mm, zero, _mm256_cmp_ps(mm, vninf, _CMP_EQ_OQ));   // no key yet: exp stays finite
  __m256 total = zero;
  for (size_t u = 0; u < steps; u++) {
    __m256 ok;
    const __m256 x = scaled(u, &ok);
    const __m256 e = _mm256_and_ps(exp256_ps(_mm256_sub_ps(x, msub)), ok);
    if (2 * u + 1 < n)
      _mm256_storeu_ps(p + 8 * u, e);
    else
      _mm_storeu_ps(p + 8 * u, _mm256_castps256_ps128(e));
    total = _mm256_add_ps(total, e);
  }
  const __m128 c4 = _mm256_castps256_ps128(c);
  _mm_storeu_ps(corr, c4);
  _mm_storeu_ps(sum, _mm_fmadd_ps(_mm_loadu_ps(sum), c4, _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1))));
  _mm_storeu_ps(mx, m);
}

void f32_softmax_ukernel_x8__avx2_fma(size_t rows, size_t n, const float* s_approx, const float* s_exact,
                                      const int32_t* n_approx, const int32_t* n_valid, float* mx, float* sum,
                                      float* corr, float* p, const softmax_params* params) {
  if (rows == kTRQuad) return softmax_pairs4(n, s_approx, s_exact, n_approx, n_valid, mx, sum, corr, p, params->scale);
  const __m256 vscale = _mm256_set1_ps(params->scale), vninf = _mm256_set1_ps(-INFINITY);
  const size_t L = rows;
  for (size_t r = 0; r < rows; r += 8) {   // 8 rows at a time, walking the block's keys
    const __m256i va = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(n_approx + r));
    const __m256i vv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(n_valid + r));
    const __m256 old = _mm256_loadu_ps(mx + r);
    __m256 m = old;
    // The common block: every row sees every key, all from one source (no selects, no masks).
    const __m256i vn = _mm256_set1_epi32(static_cast<int32_t>(n));
    const bool all_valid = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(vn, vv))) == 0;
    const int approx_all = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(vn, va)));   // bit: n > n_approx
    const float* uniform = !all_valid ? nullptr
                           : approx_all == 0 ? s_approx
                           : (_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(va, _mm256_setzero_si256()))) == 0
                                  ? s_exact : nullptr);
    if (uniform) {
      for (size_t t = 0; t < n; t++) m = _mm256_max_ps(m, _mm256_mul_ps(_mm256_loadu_ps(uniform + t * L + r), vscale));
      const __m256 c = _mm256_blendv_ps(exp256_ps(_mm256_sub_ps(old, m)), _mm256_setzero_ps(),
                                        _mm256_cmp_ps(old, vninf, _CMP_EQ_OQ));
      __m256 total = _mm256_setzero_ps();
      for (size_t t = 0; t < n; t++) {
        const __m256 e = exp256_ps(_mm256_fmsub_ps(_mm256_loadu_ps(uniform + t * L + r), vscale, m));
        _mm256_storeu_ps(p + t * L + r, e);
        total = _mm256_add_ps(total, e);
      }
      _mm256_storeu_ps(corr + r, c);
      _mm256_storeu_ps(sum + r, _mm256_fmadd_ps(_mm256_loadu_ps(sum + r), c, total));
      _mm256_storeu_ps(mx + r, m);
      continue;
    }
    for (size_t t = 0; t < n; t++) {
      const __m256i vt = _mm256_set1_epi32(static_cast<int32_t>(t));
      const __m256 use_exact = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_add_epi32(vt, _mm256_set1_epi32(1)), va));
      const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(vv, vt));
      __m256 x = _mm256_blendv_ps(_mm256_loadu_ps(s_approx + t * L + r), _mm256_loadu_ps(s_exact + t * L + r),
                                  use_exact);
      x = _mm256_blendv_ps(vninf, _mm256_mul_ps(x, vscale), valid);
      m = _mm256_max_ps(m, x);
    }
    const __m256 was_empty = _mm256_cmp_ps(old, vninf, _CMP_EQ_OQ);
    const __m256 now_empty = _mm256_cmp_ps(m, vninf, _CMP_EQ_OQ);
    const __m256 c = _mm256_blendv_ps(exp256_ps(_mm256_sub_ps(old, m)), _mm256_setzero_ps(), was_empty);
    const __m256 msub = _mm256_blendv_ps(m, _mm256_setzero_ps(), now_empty);   // no key yet: keep exp finite
    __m256 total = _mm256_setzero_ps();
    for (size_t t = 0; t < n; t++) {
      const __m256i vt = _mm256_set1_epi32(static_cast<int32_t>(t));
      const __m256 use_exact = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_add_epi32(vt, _mm256_set1_epi32(1)), va));
      const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(vv, vt));
      const __m256 x = _mm256_blendv_ps(_mm256_loadu_ps(s_approx + t * L + r),
                                        _mm256_loadu_ps(s_exact + t * L + r), use_exact);
      const __m256 e = _mm256_and_ps(exp256_ps(_mm256_fmsub_ps(x, vscale, msub)), valid);
      _mm256_storeu_ps(p + t * L + r, e);
      total = _mm256_add_ps(total, e);
    }
    _mm256_storeu_ps(corr + r, c);
    _mm256_storeu_ps(sum + r, _mm256_fmadd_ps(_mm256_loadu_ps(sum + r), c, total));
    _mm256_storeu_ps(mx + r, m);
  }
}

template <bool kF16V>
static inline __m256 load_v8(const void* v, size_t i) {
  return kF16V ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(v) + i)))
               : _mm256_loadu_ps(static_cast<const float*>(v) + i);
}

// MR rows x 8·NC columns of acc in registers (MR·NC <= 12 accumulators); V rows loaded once per key.
// The 16 ymm registers hold the accumulators and either the key's NC value vectors and one
// broadcast weight (8 x 1), or its MR weights and one value vector at a time (3 x 4: the other
// order needs 17 and spilled one accumulator through the stack, a store-to-load chain per key that
// made P·V twice the time of Q·Kᵀ).
template <int MR, int NC, bool kF16V>
static inline void pv_tile(size_t n, size_t d, size_t c, const float* p, size_t p_stride, const void* v,
                           size_t v_stride, const float* corr, float* acc) {
  constexpr bool kColumnInner = MR * NC + NC + 1 > 16;
  static_assert(!kColumnInner || MR * NC + MR + 1 <= 16, "the accumulators and operands fit the ymm registers");
  constexpr size_t kVBytes = kF16V ? 2 : 4;
  __m256 a[MR][NC];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int i = 0; i < NC; i++) a[r][i] = _mm256_mul_ps(_mm256_loadu_ps(acc + r * d + c + 8 * i), _mm256_broadcast_ss(corr + r));
  for (size_t j = 0; j < n; j++) {
    DLM_MCA_BEGIN("pv.f", kF16V ? 16 : 32, MR, 1, 8 * NC);
    const float* pj = p + j * p_stride;
    if (c == 0)   // the first column tile reads ahead for the whole row
      for (size_t e = 0; e < d * kVBytes; e += 64)
        prefetch_ahead(static_cast<const char*>(v) + j * v_stride * kVBytes + e, v_stride * kVBytes);
    if constexpr (kColumnInner) {
      __m256 w[MR];
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++) w[r] = _mm256_broadcast_ss(pj + r);
#pragma GCC unroll 4
      for (int i = 0; i < NC; i++) {
        const __m256 vv = load_v8<kF16V>(v, j * v_stride + c + 8 * i);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) a[r][i] = _mm256_fmadd_ps(w[r], vv, a[r][i]);
      }
    } else {
      __m256 vj[NC];
#pragma GCC unroll 4
      for (int i = 0; i < NC; i++) vj[i] = load_v8<kF16V>(v, j * v_stride + c + 8 * i);
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++) {
        const __m256 w = _mm256_broadcast_ss(pj + r);
#pragma GCC unroll 4
        for (int i = 0; i < NC; i++) a[r][i] = _mm256_fmadd_ps(w, vj[i], a[r][i]);
      }
    }
    DLM_MCA_END();
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int i = 0; i < NC; i++) _mm256_storeu_ps(acc + r * d + c + 8 * i, a[r][i]);
}

template <int MR, bool kF16V>
static inline void pv_rows(size_t n, size_t d, const float* p, size_t p_stride, const void* v, size_t v_stride,
                           const float* corr, float* acc) {
  size_t c = 0;
  if constexpr (MR <= 3 && kF16V)   // 12 accumulator chains hide the FMA latency; each V conversion serves 3 rows
    for (; c + 32 <= d; c += 32) pv_tile<MR, 4, kF16V>(n, d, c, p, p_stride, v, v_stride, corr, acc);
  for (; c + 16 <= d; c += 16) pv_tile<MR, 2, kF16V>(n, d, c, p, p_stride, v, v_stride, corr, acc);
  if (c < d) pv_tile<MR, 1, kF16V>(n, d, c, p, p_stride, v, v_stride, corr, acc);
}

template <bool kF16V>
static inline void pv(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const void* v, size_t v_stride,
                      const float* corr, float* acc) {
  static_assert(kPR == 8, "8 rows x 8 columns: 8 accumulators + V + broadcast fit the 16 ymm registers");
  if (m > 4) {
    for (size_t c = 0; c < d; c += 8) pv_tile<8, 1, kF16V>(n, d, c, p, p_stride, v, v_stride, corr, acc);
    return;
  }
  // decode: the kv head's query rows (no idle row) x 16 columns
  with_rows<4>(m, [&](auto r) { pv_rows<decltype(r)::value, kF16V>(n, d, p, p_stride, v, v_stride, corr, acc); });
}

void f32_pv_ukernel_8x8__avx2_fma(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const void* v,
                                  size_t v_stride, const float* corr, float* acc) {
  pv<false>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}

void f32_pv_f16v_ukernel_8x8__avx2_fma(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const void* v,
                                       size_t v_stride, const float* corr, float* acc) {
  pv<true>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}

}  // namespace dlm
#endif
