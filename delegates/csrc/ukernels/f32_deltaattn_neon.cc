// NEON micro-kernels for arm64 (AArch64 always has Advanced SIMD with FMA: no run-time check).
#if defined(__aarch64__)
#include <arm_neon.h>

#include <algorithm>
#include <cmath>

#include "fp16.h"
#include "mca.h"
#include "ukernels.h"

namespace dlm {

// FCVTN rounds to nearest even (the default FPCR mode) like f32_to_f16; FMAX/FMIN pass a NaN.
void f32_f16_vcvt_ukernel_x8__neon(size_t n, const float* x, uint16_t* y) {
  const float32x4_t vhi = vdupq_n_f32(kF16Max), vlo = vdupq_n_f32(-kF16Max);
  for (size_t i = 0; i < n; i += 8) {
    const float32x4_t a = vminq_f32(vmaxq_f32(vld1q_f32(x + i), vlo), vhi);
    const float32x4_t b = vminq_f32(vmaxq_f32(vld1q_f32(x + i + 4), vlo), vhi);
    vst1q_u16(y + i, vreinterpretq_u16_f16(vcvt_high_f16_f32(vcvt_f16_f32(a), b)));
  }
}

// The fp16 K cache's keys back to fp32 (exact), for the wide tiles' qk.
void f16_f32_vcvt_ukernel_x8__neon(size_t n, const uint16_t* x, float* y) {
  for (size_t i = 0; i < n; i += 8) {
    const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
    vst1q_f32(y + i, vcvt_f32_f16(vget_low_f16(h)));
    vst1q_f32(y + i + 4, vcvt_high_f32_f16(h));
  }
}

size_t f32_deltaenc_ukernel__neon(size_t d, const float* k, float* k_hat, uint8_t* mask, uint16_t* val,
                                  const deltaenc_params* params) {
  size_t n = 0;
  const float32x4_t vtheta = vdupq_n_f32(params->theta), vhi = vdupq_n_f32(kF16Max), vlo = vdupq_n_f32(-kF16Max);
  for (size_t c = 0; c < d; c += 8) {
    uint32_t bits = 0;
    for (size_t i = c; i < c + 8; i += 4) {
      const float32x4_t vh = vld1q_f32(k_hat + i);
      const float32x4_t vd = vsubq_f32(vld1q_f32(k + i), vh);
      const float16x4_t h = vcvt_f16_f32(vminq_f32(vmaxq_f32(vd, vlo), vhi));   // round to nearest even
      const float32x4_t r = vcvt_f32_f16(h);
      // |Δ| > θ and Δ does not round to zero (a delta that rounds to zero is no delta); token 0: all
      const uint32x4_t keep = params->dense ? vdupq_n_u32(~0u)
                                            : vandq_u32(vcagtq_f32(vd, vtheta), vmvnq_u32(vceqzq_f32(r)));
      if (vmaxvq_u32(keep) == 0) continue;
      vst1q_f32(k_hat + i, vbslq_f32(keep, vaddq_f32(vh, r), vh));
      uint16_t hv[4];
      uint32_t km[4];
      vst1_u16(hv, vreinterpret_u16_f16(h));
      vst1q_u32(km, keep);
      for (size_t b = 0; b < 4; b++) {
        if (!km[b]) continue;
        val[n++] = hv[b];
        bits |= 1u << (i - c + b);
      }
    }
    mask[c / 8] = static_cast<uint8_t>(bits);
  }
  return n;
}

// Expands a key's mask row into indices and its packed fp16 values into fp32 (4 at a time: reading
// up to d values from the key's start stays inside the stream); prefetches the mask row 4 keys on
// and the value stream 512 bytes on (one sequential stream per kv head).
static inline size_t load_key(size_t t, size_t n_keys, size_t d, const uint8_t* mask, size_t mask_stride,
                              const uint16_t* tv, int32_t* idx, float* w) {
  const uint8_t* tm = mask + t * mask_stride;
  if (t + 4 < n_keys) {
    __builtin_prefetch(tm + 4 * mask_stride);
    __builtin_prefetch(tv + 256);
  }
  const size_t count = expand_mask(tm, d, idx);
  for (size_t z = 0; z < count; z += 4) vst1q_f32(w + z, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(tv + z))));
  return count;
}

void f32_deltaqk_ukernel_64x1__neon(size_t n_keys, size_t d, const float* qt, const uint8_t* mask,
                                    size_t mask_stride, const uint16_t* val, float* acc, float* scores) {
  static_assert(kTR == 64, "16 q registers hold the tile's 64 rows");
  int32_t idx[1024];
  float w[1024];
  float32x4_t a[16];
  for (int i = 0; i < 16; i++) a[i] = vld1q_f32(acc + 4 * i);
  const uint16_t* tv = val;   // key t's packed values: they follow key t − 1's
  for (size_t t = 0; t < n_keys; t++) {
    const size_t count = load_key(t, n_keys, d, mask, mask_stride, tv, idx, w);
    tv += count;
    for (size_t z = 0; z < count; z++) {   // one non-zero: 16 independent FMAs into the prefix sums
      const float* q = qt + static_cast<size_t>(idx[z]) * 64;
      for (int i = 0; i < 16; i++) a[i] = vfmaq_n_f32(a[i], vld1q_f32(q + 4 * i), w[z]);
    }
    for (int i = 0; i < 16; i++) vst1q_f32(scores + t * 64 + 4 * i, a[i]);
  }
  for (int i = 0; i < 16; i++) vst1q_f32(acc + 4 * i, a[i]);
}

void f32_qk_ukernel_16x2__neon(size_t n, size_t d, const float* qt, const float* k, size_t k_stride,
                               float* scores) {
  static_assert(kTR % 16 == 0, "the tile's rows in slices of 16 (4 q registers)");
  for (int r0 = 0; r0 < kTR; r0 += 16) {   // 16 rows x 2 keys: 8 accumulators, 4 Q loads per element
    const float* q = qt + r0;
    size_t t = 0;
    for (; t + 2 <= n; t += 2) {
      const float* k0 = k + t * k_stride;
      const float* k1 = k0 + k_stride;
      float32x4_t s0[4], s1[4];
      for (int i = 0; i < 4; i++) s0[i] = s1[i] = vdupq_n_f32(0.0f);
      for (size_t c = 0; c < d; c++) {
        const float* qc = q + c * kTR;
        const float w0 = k0[c], w1 = k1[c];
        for (int i = 0; i < 4; i++) {
          const float32x4_t qv = vld1q_f32(qc + 4 * i);
          s0[i] = vfmaq_n_f32(s0[i], qv, w0);
          s1[i] = vfmaq_n_f32(s1[i], qv, w1);
        }
      }
      for (int i = 0; i < 4; i++) {
        vst1q_f32(scores + t * kTR + r0 + 4 * i, s0[i]);
        vst1q_f32(scores + (t + 1) * kTR + r0 + 4 * i, s1[i]);
      }
    }
    if (t < n) {
      const float* k0 = k + t * k_stride;
      float32x4_t s0[4];
      for (int i = 0; i < 4; i++) s0[i] = vdupq_n_f32(0.0f);
      for (size_t c = 0; c < d; c++)
        for (int i = 0; i < 4; i++) s0[i] = vfmaq_n_f32(s0[i], vld1q_f32(q + c * kTR + 4 * i), k0[c]);
      for (int i = 0; i < 4; i++) vst1q_f32(scores + t * kTR + r0 + 4 * i, s0[i]);
    }
  }
}

namespace {

// A key's 4 elements from an fp32 or an fp16 (FCVTL) K cache.
inline float32x4_t load_k4(const float* k) { return vld1q_f32(k); }
inline float32x4_t load_k4(const uint16_t* k) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(k))); }

// R rows: one accumulator per row along head_dim (4 lanes), one K load shared by the rows, then an
// across-vector add per row. Keys fp32 or fp16 (KT).

// kD > 0: head_dim known at compile time (64) and so is the queries' stride (the driver's is
// head_dim), so the key's loop unrolls and every query chunk is a fixed offset from one register
// (llvm-mca of the runtime-stride build: R·d/4 chunk pointers spilled and reloaded per key).
template <int R, int kD, typename KT>
void qkdot(size_t n, size_t d_, size_t lanes, const float* q, size_t q_stride_, const KT* k, size_t k_stride,
           float* scores) {
  const size_t d = kD > 0 ? kD : d_, q_stride = kD > 0 ? kD : q_stride_;
  for (size_t t = 0; t < n; t++) {
    DLM_MCA_BEGIN("qk.f", 8 * sizeof(KT), R, 1, kD);
    const KT* kt = k + t * k_stride;
    float32x4_t a[R];
    for (int r = 0; r < R; r++) a[r] = vdupq_n_f32(0.0f);
    for (size_t c = 0; c < d; c += 4) {
      const float32x4_t kv = load_k4(kt + c);
      for (int r = 0; r < R; r++) a[r] = vfmaq_f32(a[r], vld1q_f32(q + r * q_stride + c), kv);
    }
    float* s = scores + t * lanes;
    for (int r = R; r < 8; r++)   // a fixed bound: a runtime one became a memset call per key
      if (r < static_cast<int>(lanes)) s[r] = 0.0f;
    for (int r = 0; r < R; r++) s[r] = vaddvq_f32(a[r]);
    DLM_MCA_END();
  }
}

// TBL byte indices for 8 packed fp32 values (two registers, a 32-byte table) per mask byte (fp16.h).
alignas(16) constexpr ExpandLut<4, 0xFF> kExpandLut{};

// R rows: each key's ΔK row decompressed 8 elements at a time (8 packed fp16 values from the
// chunk's offset, converted, moved to their elements by TBL) and dotted along head_dim; the
// key's q·Δk per row goes into the prefix sums. Offsets from one SWAR prefix popcount per 8 mask
// bytes.
template <int R>
void deltaqkdot(size_t n_keys, size_t d, size_t lanes, const float* q, size_t q_stride, const uint8_t* mask,
                size_t mask_stride, const uint16_t* val, float* acc, float* scores) {
  float run[8];
  for (size_t r = 0; r < lanes; r++) run[r] = acc[r];
  const uint16_t* tv = val;   // key t's packed values: they follow key t − 1's (one sequential stream)
  for (size_t t = 0; t < n_keys; t++) {
    const uint8_t* tm = mask + t * mask_stride;
    if (t + 4 < n_keys) {
      __builtin_prefetch(tm + 4 * mask_stride);
      __builtin_prefetch(tv + 256);
    }
    float32x4_t a[R];
    for (int r = 0; r < R; r++) a[r] = vdupq_n_f32(0.0f);
    size_t base = 0;
    for (size_t c0 = 0; c0 < d; c0 += 64) {
      const size_t chunks = std::min<size_t>(8, (d - c0) / 8);
      const uint64_t m8 = load_mask8(tm + c0 / 8, chunks);
      const uint64_t offs = mask_byte_offsets(m8);
      for (size_t i = 0; i < chunks; i++) {
        DLM_MCA_BEGIN("qk.delta", 16, R, 1, 8);   // one chunk of 8 elements (the key's epilogue not counted)
        const size_t b = (m8 >> (8 * i)) & 0xff, off = base + ((offs >> (8 * i)) & 0xff);
        const uint16x8_t h = vld1q_u16(tv + off);   // off <= c0 + 8i: within d values of the key's start
        uint8x16x2_t tab;
        tab.val[0] = vreinterpretq_u8_f32(vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h))));
        tab.val[1] = vreinterpretq_u8_f32(vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h))));
        const float32x4_t k0 = vreinterpretq_f32_u8(vqtbl2q_u8(tab, vld1q_u8(kExpandLut.idx[b])));
        const float32x4_t k1 = vreinterpretq_f32_u8(vqtbl2q_u8(tab, vld1q_u8(kExpandLut.idx[b] + 16)));
        const float* qc = q + c0 + 8 * i;
        for (int r = 0; r < R; r++) {
          a[r] = vfmaq_f32(a[r], vld1q_f32(qc + r * q_stride), k0);
          a[r] = vfmaq_f32(a[r], vld1q_f32(qc + r * q_stride + 4), k1);
        }
        DLM_MCA_END();
      }
      base += static_cast<size_t>(__builtin_popcountll(m8));
    }
    tv += base;
    float* s = scores + t * lanes;
    for (int r = 0; r < R; r++) run[r] += vaddvq_f32(a[r]);
    for (size_t r = 0; r < lanes; r++) s[r] = run[r];
  }
  for (size_t r = 0; r < lanes; r++) acc[r] = run[r];
}

}  // namespace

template <typename KT>
static void qkdot_rows(size_t n, size_t d, size_t rows, size_t lanes, const float* q, size_t q_stride, const KT* k,
                       size_t k_stride, float* scores) {
  with_rows<8>(rows, [&](auto r) {
    constexpr int R = decltype(r)::value;
    if (d == 64 && q_stride == 64)
      qkdot<R, 64>(n, d, lanes, q, q_stride, k, k_stride, scores);
    else
      qkdot<R, 0>(n, d, lanes, q, q_stride, k, k_stride, scores);
  });
}

void f32_deltaqkdot_ukernel_8x1__neon(size_t n_keys, size_t d, size_t rows, size_t lanes, const float* q,
                                      size_t q_stride, const uint8_t* mask, size_t mask_stride, const uint16_t* val,
                                      float* acc, float* scores) {
  static_assert(kTRNarrow == 8 && kTRQuad == 4, "a key has at most 8 lanes of scores");
  with_rows<8>(rows, [&](auto r) {
    deltaqkdot<decltype(r)::value>(n_keys, d, lanes, q, q_stride, mask, mask_stride, val, acc, scores);
  });
}

void f32_qkdot_ukernel_8x1__neon(size_t n, size_t d, size_t rows, size_t lanes, const float* q, size_t q_stride,
                                 const float* k, size_t k_stride, float* scores) {
  static_assert(kTRNarrow == 8 && kTRQuad == 4, "a key has at most 8 lanes of scores");
  qkdot_rows(n, d, rows, lanes, q, q_stride, k, k_stride, scores);
}

void f32_qkdot_f16k_ukernel_8x1__neon(size_t n, size_t d, size_t rows, size_t lanes, const float* q,
                                      size_t q_stride, const uint16_t* k, size_t k_stride, float* scores) {
  qkdot_rows(n, d, rows, lanes, q, q_stride, k, k_stride, scores);
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

void f32_softmax_ukernel_x4__neon(size_t rows, size_t n, const float* s_approx, const float* s_exact,
                                  const int32_t* n_approx, const int32_t* n_valid, float* mx, float* sum, float* corr,
                                  float* p, const softmax_params* params) {
  const float32x4_t vninf = vdupq_n_f32(-INFINITY);
  const size_t L = rows;
  for (size_t r = 0; r < rows; r += 4) {   // 4 rows at a time, walking the block's keys
    const int32x4_t va = vld1q_s32(n_approx + r), vv = vld1q_s32(n_valid + r);
    const float32x4_t old = vld1q_f32(mx + r);
    float32x4_t m = old;
    // The common block: every row sees every key, all from one source (no selects, no masks).
    const int32x4_t vn = vdupq_n_s32(static_cast<int32_t>(n));
    const bool all_valid = vminvq_u32(vcgeq_s32(vv, vn)) != 0;
    const float* uniform = !all_valid ? nullptr
                           : vminvq_u32(vcgeq_s32(va, vn)) != 0 ? s_approx
                           : vmaxvq_s32(va) <= 0 ? s_exact : nullptr;
    if (uniform) {
      for (size_t t = 0; t < n; t++) m = vmaxq_f32(m, vmulq_n_f32(vld1q_f32(uniform + t * L + r), params->scale));
      const float32x4_t c = vbslq_f32(vceqq_f32(old, vninf), vdupq_n_f32(0.0f), exp_f32x4(vsubq_f32(old, m)));
      float32x4_t total = vdupq_n_f32(0.0f);
      for (size_t t = 0; t < n; t++) {
        const float32x4_t e = exp_f32x4(vsubq_f32(vmulq_n_f32(vld1q_f32(uniform + t * L + r), params->scale), m));
        vst1q_f32(p + t * L + r, e);
        total = vaddq_f32(total, e);
      }
      vst1q_f32(corr + r, c);
      vst1q_f32(sum + r, vfmaq_f32(total, vld1q_f32(sum + r), c));
      vst1q_f32(mx + r, m);
      continue;
    }
    for (size_t t = 0; t < n; t++) {
      const int32x4_t vt = vdupq_n_s32(static_cast<int32_t>(t));
      const uint32x4_t use_exact = vcgeq_s32(vt, va), valid = vcgtq_s32(vv, vt);
      const float32x4_t x = vbslq_f32(use_exact, vld1q_f32(s_exact + t * L + r), vld1q_f32(s_approx + t * L + r));
      m = vmaxq_f32(m, vbslq_f32(valid, vmulq_n_f32(x, params->scale), vninf));
    }
    const uint32x4_t was_empty = vceqq_f32(old, vninf), now_empty = vceqq_f32(m, vninf);
    const float32x4_t c = vbslq_f32(was_empty, vdupq_n_f32(0.0f), exp_f32x4(vsubq_f32(old, m)));
    const float32x4_t msub = vbslq_f32(now_empty, vdupq_n_f32(0.0f), m);   // no key yet: keep exp finite
    float32x4_t total = vdupq_n_f32(0.0f);
    for (size_t t = 0; t < n; t++) {
      const int32x4_t vt = vdupq_n_s32(static_cast<int32_t>(t));
      const uint32x4_t use_exact = vcgeq_s32(vt, va), valid = vcgtq_s32(vv, vt);
      const float32x4_t x = vbslq_f32(use_exact, vld1q_f32(s_exact + t * L + r), vld1q_f32(s_approx + t * L + r));
      const float32x4_t e = vreinterpretq_f32_u32(
          vandq_u32(vreinterpretq_u32_f32(exp_f32x4(vsubq_f32(vmulq_n_f32(x, params->scale), msub))), valid));
      vst1q_f32(p + t * L + r, e);
      total = vaddq_f32(total, e);
    }
    vst1q_f32(corr + r, c);
    vst1q_f32(sum + r, vfmaq_f32(total, vld1q_f32(sum + r), c));
    vst1q_f32(mx + r, m);
  }
}

template <bool kF16V>
static inline float32x4_t load_v4(const void* v, size_t i) {
  return kF16V ? vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(static_cast<const uint16_t*>(v) + i)))
               : vld1q_f32(static_cast<const float*>(v) + i);
}

// MR rows x 4·NC columns of acc in registers (MR·NC <= 16 accumulators); V rows loaded once per key.
template <int MR, int NC, bool kF16V>
static inline void pv_tile(size_t n, size_t d, size_t c, const float* p, size_t p_stride, const void* v,
                           size_t v_stride, const float* corr, float* acc) {
  float32x4_t a[MR][NC];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int i = 0; i < NC; i++) a[r][i] = vmulq_n_f32(vld1q_f32(acc + r * d + c + 4 * i), corr[r]);
  for (size_t j = 0; j < n; j++) {
    DLM_MCA_BEGIN("pv.f", kF16V ? 16 : 32, MR, 1, 4 * NC);
    float32x4_t vj[NC];
#pragma GCC unroll 4
    for (int i = 0; i < NC; i++) vj[i] = load_v4<kF16V>(v, j * v_stride + c + 4 * i);
    const float* pj = p + j * p_stride;
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
      for (int i = 0; i < NC; i++) a[r][i] = vfmaq_n_f32(a[r][i], vj[i], pj[r]);
    DLM_MCA_END();
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int i = 0; i < NC; i++) vst1q_f32(acc + r * d + c + 4 * i, a[r][i]);
}

template <int MR, bool kF16V>
static inline void pv_rows(size_t n, size_t d, const float* p, size_t p_stride, const void* v, size_t v_stride,
                           const float* corr, float* acc) {
  size_t c = 0;
  for (; c + 16 <= d; c += 16) pv_tile<MR, 4, kF16V>(n, d, c, p, p_stride, v, v_stride, corr, acc);
  if (c < d) pv_tile<MR, 2, kF16V>(n, d, c, p, p_stride, v, v_stride, corr, acc);
}

template <bool kF16V>
static inline void pv(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const void* v, size_t v_stride,
                      const float* corr, float* acc) {
  static_assert(kPR == 8, "8 rows x 8 columns: 16 accumulator registers");
  if (m > 4) {
    for (size_t c = 0; c < d; c += 8) pv_tile<8, 2, kF16V>(n, d, c, p, p_stride, v, v_stride, corr, acc);
    return;
  }
  // decode: the kv head's query rows (no idle row) x 16 columns
  with_rows<4>(m, [&](auto r) { pv_rows<decltype(r)::value, kF16V>(n, d, p, p_stride, v, v_stride, corr, acc); });
}

void f32_pv_ukernel_8x8__neon(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const void* v,
                              size_t v_stride, const float* corr, float* acc) {
  pv<false>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}

void f32_pv_f16v_ukernel_8x8__neon(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const void* v,
                                   size_t v_stride, const float* corr, float* acc) {
  pv<true>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}

}  // namespace dlm
#endif
