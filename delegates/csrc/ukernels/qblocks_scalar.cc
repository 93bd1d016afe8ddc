// Scalar variants of the q8_0 / q4_0 cache kernels (qblocks.h): the reference the SIMD variants
// match bit for bit (encode, decode) or to fp32 rounding (the dots and P·V).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "fp16.h"
#include "qblocks.h"

namespace dlm {

namespace {

inline float block_scale(const uint8_t* blk) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  return f16_to_f32(h);
}

inline void store_scale(uint8_t* blk, float d) {
  const uint16_t h = f32_to_f16(std::min(std::max(d, -kF16Max), kF16Max));
  std::memcpy(blk, &h, 2);
}

inline int32_t rint_i32(float x) { return static_cast<int32_t>(std::nearbyint(x)); }

// Element i (< 32) of a block's integer code: q8_0 its int8, q4_0 its nibble − 8.
template <size_t kBytes>
inline int32_t code(const uint8_t* blk, size_t i) {
  if constexpr (kBytes == kQ8Bytes) {
    return static_cast<int8_t>(blk[2 + i]);
  } else {
    const uint8_t b = blk[2 + (i & 15)];
    return static_cast<int32_t>(i < 16 ? b & 15 : b >> 4) - 8;
  }
}

template <size_t kBytes>
void dec(size_t d, const uint8_t* x, float* y) {
  for (size_t b = 0; b < d / kQBlock; b++, x += kBytes) {
    const float s = block_scale(x);
    for (size_t i = 0; i < kQBlock; i++) y[b * kQBlock + i] = s * static_cast<float>(code<kBytes>(x, i));
  }
}

template <size_t kBytes>
void qkdot(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs, const float* qd, const uint8_t* k,
           size_t k_stride, float* scores) {
  const size_t nb = d / kQBlock;
  for (size_t t = 0; t < n; t++, k += k_stride) {
    for (size_t r = 0; r < lanes; r++) {
      float s = 0.0f;
      for (size_t b = 0; r < rows && b < nb; b++) {
        const uint8_t* blk = k + b * kBytes;
        int32_t dot = 0;
        for (size_t i = 0; i < kQBlock; i++) dot += static_cast<int32_t>(qs[r * d + b * kQBlock + i]) * code<kBytes>(blk, i);
        s += qd[r * nb + b] * block_scale(blk) * static_cast<float>(dot);
      }
      scores[t * lanes + r] = s;
    }
  }
}

template <size_t kBytes>
void pv(size_t n, size_t d, size_t m, const float* p, size_t p_stride, const uint8_t* v, size_t v_stride,
        const float* corr, float* acc) {
  for (size_t r = 0; r < m; r++)
    for (size_t c = 0; c < d; c++) acc[r * d + c] *= corr[r];
  for (size_t j = 0; j < n; j++, v += v_stride) {
    for (size_t b = 0; b < d / kQBlock; b++) {
      const uint8_t* blk = v + b * kBytes;
      const float s = block_scale(blk);
      for (size_t r = 0; r < m; r++) {
        const float w = p[j * p_stride + r] * s;
        for (size_t i = 0; i < kQBlock; i++)
          acc[r * d + b * kQBlock + i] += w * static_cast<float>(code<kBytes>(blk, i));
      }
    }
  }
}

}  // namespace

void q8_0_enc_ukernel__scalar(size_t n, size_t d, const float* x, uint8_t* y) {
  for (size_t b = 0; b < n * d / kQBlock; b++, x += kQBlock, y += kQ8Bytes) {
    float amax = 0.0f;
    for (size_t i = 0; i < kQBlock; i++) amax = std::max(amax, std::fabs(x[i]));
    const float s = amax / 127.0f, id = s != 0.0f ? 1.0f / s : 0.0f;
    store_scale(y, s);
    for (size_t i = 0; i < kQBlock; i++) y[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(rint_i32(x[i] * id)));
  }
}

void q4_0_enc_ukernel__scalar(size_t n, size_t d, const float* x, uint8_t* y) {
  for (size_t b = 0; b < n * d / kQBlock; b++, x += kQBlock, y += kQ4Bytes) {
    float amax = std::fabs(x[0]), mx = x[0];   // the first element of largest |x|
    for (size_t i = 1; i < kQBlock; i++)
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        mx = x[i];
      }
    const float s = mx / -8.0f, id = s != 0.0f ? 1.0f / s : 0.0f;
    store_scale(y, s);
    for (size_t i = 0; i < 16; i++) {
      const int32_t lo = std::min(7, std::max(-8, rint_i32(x[i] * id))) + 8;
      const int32_t hi = std::min(7, std::max(-8, rint_i32(x[i + 16] * id))) + 8;
      y[2 + i] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void q8_0_dec_ukernel__scalar(size_t d, const uint8_t* x, float* y) { dec<kQ8Bytes>(d, x, y); }
void q4_0_dec_ukernel__scalar(size_t d, const uint8_t* x, float* y) { dec<kQ4Bytes>(d, x, y); }

void f32_q8q_ukernel__scalar(size_t d, const float* x, int8_t* qs, float* qd) {
  for (size_t b = 0; b < d / kQBlock; b++, x += kQBlock, qs += kQBlock) {
    float amax = 0.0f;
    for (size_t i = 0; i < kQBlock; i++) amax = std::max(amax, std::fabs(x[i]));
    const float s = amax / 127.0f, id = s != 0.0f ? 1.0f / s : 0.0f;
    qd[b] = s;
    for (size_t i = 0; i < kQBlock; i++) qs[i] = static_cast<int8_t>(rint_i32(x[i] * id));
  }
}

void qs8_qkdot_q8_0k_ukernel_8x32__scalar(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs,
                                          const float* qd, const uint8_t* k, size_t k_stride, float* scores) {
  qkdot<kQ8Bytes>(n, d, rows, lanes, qs, qd, k, k_stride, scores);
}
void qs8_qkdot_q4_0k_ukernel_8x32__scalar(size_t n, size_t d, size_t rows, size_t lanes, const int8_t* qs,
                                          const float* qd, const uint8_t* k, size_t k_stride, float* scores) {
  qkdot<kQ4Bytes>(n, d, rows, lanes, qs, qd, k, k_stride, scores);
}
void f32_pv_q8_0v_ukernel_4x32__scalar(size_t n, size_t d, size_t m, const float* p, size_t p_stride,
                                       const uint8_t* v, size_t v_stride, const float* corr, float* acc) {
  pv<kQ8Bytes>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}
void f32_pv_q4_0v_ukernel_4x32__scalar(size_t n, size_t d, size_t m, const float* p, size_t p_stride,
                                       const uint8_t* v, size_t v_stride, const float* corr, float* acc) {
  pv<kQ4Bytes>(n, d, m, p, p_stride, v, v_stride, corr, acc);
}

}  // namespace dlm
