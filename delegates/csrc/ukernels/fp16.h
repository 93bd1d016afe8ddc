// IEEE fp16 <-> fp32, round to nearest even (bit-identical to F16C, NEON and torch's .half()), and
// the expansion of a ΔK bitmask row. static inline: every translation unit (scalar, AVX2, NEON)
// gets its own copy, compiled with its own flags.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace dlm {

// ΔK values are clamped to the finite fp16 range before rounding (the reference does the same).
constexpr float kF16Max = 65504.0f;

static inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to infinity
  if (ax < 0x38800000u) {                                               // fp16 subnormal (or zero)
    if (ax < 0x33000000u) return static_cast<uint16_t>(sign);           // below half the smallest subnormal
    const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) h++;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (((ax >> 23) - 112) << 10) | ((ax & 0x7fffffu) >> 13);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;              // a carry rolls into the exponent
  return static_cast<uint16_t>(sign | h);
}

static inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t x;
  if (e == 0) {
    float v = static_cast<float>(m) * (1.0f / 16777216.0f);            // m * 2^-24, exact
    memcpy(&x, &v, 4);
    x |= sign;
  } else if (e == 31) {
    x = sign | 0x7f800000u | (m << 13);
  } else {
    x = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &x, 4);
  return f;
}

// Bit positions of every byte value, in order, and their count: a branch-free mask expansion
// (a loop over set bits mispredicts its exit once per key).
struct MaskLut {
  uint8_t pos[256][8];
  uint8_t count[256];
  constexpr MaskLut() : pos(), count() {
    for (int b = 0; b < 256; b++) {
      int n = 0;
      for (int i = 0; i < 8; i++)
        if ((b >> i) & 1) pos[b][n++] = static_cast<uint8_t>(i);
      count[b] = static_cast<uint8_t>(n);
    }
  }
};
inline constexpr MaskLut kMaskLut{};

// The element indices of the set bits of a d-bit mask (d a multiple of 8), in order; returns the
// count. Each mask byte writes 8 entries at the running count (the unused ones are overwritten by
// the next byte): entries stay below d, since the count before byte c/8 is at most c.
static inline size_t expand_mask(const uint8_t* mask, size_t d, int32_t* idx) {
  size_t n = 0;
  for (size_t c = 0; c < d; c += 8) {
    const uint8_t b = mask[c / 8];
    const uint8_t* pos = kMaskLut.pos[b];
    for (int i = 0; i < 8; i++) idx[n + i] = static_cast<int32_t>(c + pos[i]);
    n += kMaskLut.count[b];
  }
  return n;
}

// Per mask byte: byte-shuffle indices (pshufb on AVX2, TBL on NEON) that move a chunk's packed
// values (kBytes each) to their elements: bytes kBytes*i .. of element i come from value rank(i);
// kZero where the bit is clear (0x80 makes pshufb write 0, an out-of-range 0xFF makes TBL write 0).
template <int kBytes, uint8_t kZero>
struct ExpandLut {
  uint8_t idx[256][8 * kBytes];
  constexpr ExpandLut() : idx() {
    for (int b = 0; b < 256; b++) {
      int rank = 0;
      for (int i = 0; i < 8; i++) {
        const bool set = (b >> i) & 1;
        for (int k = 0; k < kBytes; k++)
          idx[b][kBytes * i + k] = set ? static_cast<uint8_t>(kBytes * rank + k) : kZero;
        rank += set;
      }
    }
  }
};

// Where each of 8 mask bytes' non-zeros start among the row's packed values: byte i of the result
// is the number of set bits in bytes 0..i-1 of m (a SWAR popcount per byte, then a prefix sum by
// multiplication), so the 8 chunks of a decompression do not wait on each other.
static inline uint64_t mask_byte_offsets(uint64_t m) {
  uint64_t x = m - ((m >> 1) & 0x5555555555555555ull);
  x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
  x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
  return (x * 0x0101010101010101ull) << 8;
}

// Up to 8 bytes of a mask row (bytes past n_bytes read as 0), little-endian as the offsets expect.
static inline uint64_t load_mask8(const uint8_t* mask, size_t n_bytes) {
  uint64_t m = 0;
  if (n_bytes >= 8) {
    memcpy(&m, mask, 8);
  } else {
    for (size_t i = 0; i < n_bytes; i++) m |= static_cast<uint64_t>(mask[i]) << (8 * i);
  }
  return m;
}

}  // namespace dlm
