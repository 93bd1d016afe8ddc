// The block-quantized cache formats q8_0 and q4_0 (llama.cpp's layouts): one unit with their encode,
// decode and the attention micro-kernels that read them. A row of head_dim values (one key or value
// of one kv head; head_dim a multiple of 32) is head_dim/32 blocks of 32 elements, each block:
//   q8_0 (34 B): fp16 scale d, then int8 q[32]                        x[i] ≈ d·q[i]
//   q4_0 (18 B): fp16 scale d, then 16 bytes: element i (< 16) in the low nibble of byte i,
//                element i + 16 in its high nibble, as u4 u[i]       x[i] ≈ d·(u[i] − 8)
// Encode (on write, round to nearest, ties to even):
//   q8_0: amax = max|x|, d = amax/127, id = 1/d (0 if d = 0), q = rint(x·id)
//   q4_0: m = the element of largest |x| (the first such), d = m/−8, id = 1/d (0 if d = 0),
//         u = min(7, max(−8, rint(x·id))) + 8
// d is computed and used in fp32 and stored as fp16 (clamped to ±65504, nearest even). Decode is
// exact in fp32: d·q needs at most 18 significant bits. Inputs must be finite.
//
// The query of a call over a quantized K cache is quantized once per tile to q8 blocks with an fp32
// scale (qs: int8 [d], qd: float [d/32], the q8_0 rule with d kept in fp32), so a score is
//   q·k = Σ_b qd[b]·dk[b]·Σ_{i<32} qs[32b+i]·kq[32b+i]
// with an exact integer dot per block: decode tiles take it from integer dot-product kernels, wide
// (prefill) tiles from the fp32 kernels over both sides decoded (the same value to fp32 rounding).
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dlm {

constexpr size_t kQBlock = 32;
constexpr size_t kQ8Bytes = 34, kQ4Bytes = 18;

// n rows of d floats (x, contiguous) → n rows of d/32 blocks (y, contiguous).
typedef void (*qenc_ukernel_fn)(size_t n, size_t d, const float* x, uint8_t* y);
// One row of d/32 blocks → d floats (exact).
typedef void (*qdec_ukernel_fn)(size_t d, const uint8_t* x, float* y);
// One query row of d floats → qs [d] int8 and qd [d/32] fp32 scales.
typedef void (*q8q_ukernel_fn)(size_t d, const float* x, int8_t* qs, float* qd);
// Scores of a narrow (decode) tile over a quantized K cache: rows <= lanes query rows (lanes
// kTRNarrow or kTRQuad), quantized (qs [rows, d], qd [rows, d/32]); n keys k_stride bytes apart:
// scores[t*lanes + r] = Σ_b qd[r][b]·dk_t[b]·(qs_r · kq_t over block b)   (0 for r >= rows).
typedef void (*qkdot_qk_ukernel_fn)(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs,
                                    const float* qd, const uint8_t* k, size_t k_stride, float* scores);
// P·V over a quantized V cache for m <= 4 rows (decode), each V row (v_stride bytes apart) decoded
// once for the m rows: acc[r*d + c] = acc[r*d + c]·corr[r] + Σ_j p[j*p_stride + r]·v_j[c].
typedef void (*pv_qv_ukernel_fn)(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const uint8_t* v,
                                 size_t v_stride, const float* corr, float* acc);

// One format's kernels (the driver's table: kernels of the host's best variant).
struct QFormatKernels {
  qenc_ukernel_fn enc;
  qdec_ukernel_fn dec;
  qkdot_qk_ukernel_fn qkdot;
  pv_qv_ukernel_fn pv;
};

#define DLM_DECLARE_QUKERNELS(arch)                                                                              \
  void q8_0_enc_ukernel__##arch(size_t, size_t, const float*, uint8_t*);                                        \
  void q4_0_enc_ukernel__##arch(size_t, size_t, const float*, uint8_t*);                                        \
  void q8_0_dec_ukernel__##arch(size_t, const uint8_t*, float*);                                                \
  void q4_0_dec_ukernel__##arch(size_t, const uint8_t*, float*);                                                \
  void f32_q8q_ukernel__##arch(size_t, const float*, int8_t*, float*);                                          \
  void qs8_qkdot_q8_0k_ukernel_8x32__##arch(size_t, size_t, size_t, size_t, const int8_t*, const float*,         \
                                            const uint8_t*, size_t, float*);                                    \
  void qs8_qkdot_q4_0k_ukernel_8x32__##arch(size_t, size_t, size_t, size_t, const int8_t*, const float*,         \
                                            const uint8_t*, size_t, float*);                                    \
  void f32_pv_q8_0v_ukernel_4x32__##arch(size_t, size_t, size_t, const float*, size_t, const uint8_t*, size_t,  \
                                         const float*, float*);                                                 \
  void f32_pv_q4_0v_ukernel_4x32__##arch(size_t, size_t, size_t, const float*, size_t, const uint8_t*, size_t,  \
                                         const float*, float*);

DLM_DECLARE_QUKERNELS(scalar)
#if defined(__x86_64__)
DLM_DECLARE_QUKERNELS(avx2)
#endif
#if defined(__aarch64__)
DLM_DECLARE_QUKERNELS(neon)
// The integer dots with SDOT (Armv8.2 dot-product extension; chosen at run time by HWCAP_ASIMDDP).
void qs8_qkdot_q8_0k_ukernel_8x32__neondot(size_t, size_t, size_t, size_t, const int8_t*, const float*,
                                           const uint8_t*, size_t, float*);
void qs8_qkdot_q4_0k_ukernel_8x32__neondot(size_t, size_t, size_t, size_t, const int8_t*, const float*,
                                           const uint8_t*, size_t, float*);
#endif
#undef DLM_DECLARE_QUKERNELS

}  // namespace dlm
