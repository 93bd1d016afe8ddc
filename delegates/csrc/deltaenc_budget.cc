// The ΔK value stream's budget (see dlm_dk_rows in deltaattn.h): the stream's size, and the
// encoding of a key row whose budget is below head_dim.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "deltaattn.h"
#include "ukernels/fp16.h"
#include "ukernels/ukernels.h"

namespace dlm {

size_t deltaenc_within_budget(deltaenc_ukernel_fn enc, size_t d, const float* k, float* k_hat, uint8_t* mask,
                              uint16_t* val, const deltaenc_params* params, size_t budget) {
  float before[1024];   // head_dim <= 1024 (checked by the driver)
  std::memcpy(before, k_hat, sizeof(float) * d);
  const size_t n = enc(d, k, k_hat, mask, val, params);
  if (n <= budget) return n;   // the common case: the arch's encoder, as without a budget
  // Too many non-zeros: keep the `budget` largest |Δ| of the ones the encoder stored (ties: the lower
  // element), in element order; the others stay in k − k̂ for later keys.
  std::memcpy(k_hat, before, sizeof(float) * d);
  struct Candidate {
    float mag;
    uint32_t i;
  };
  Candidate cand[1024];
  size_t m = 0;
  for (size_t i = 0; i < d; i++) {
    const float delta = k[i] - before[i];
    if (!(std::fabs(delta) > params->theta)) continue;
    const uint16_t h = f32_to_f16(std::min(std::max(delta, -kF16Max), kF16Max));
    if ((h & 0x7fffu) != 0) cand[m++] = Candidate{std::fabs(delta), static_cast<uint32_t>(i)};
  }
  std::nth_element(cand, cand + budget, cand + m, [](const Candidate& a, const Candidate& b) {
    return a.mag > b.mag || (a.mag == b.mag && a.i < b.i);
  });
  bool keep[1024] = {};
  for (size_t z = 0; z < budget; z++) keep[cand[z].i] = true;
  size_t stored = 0;
  for (size_t c = 0; c < d; c += 8) {
    uint8_t bits = 0;
    for (size_t b = 0; b < 8; b++) {
      if (!keep[c + b]) continue;
      const uint16_t h = f32_to_f16(std::min(std::max(k[c + b] - k_hat[c + b], -kF16Max), kF16Max));
      k_hat[c + b] += f16_to_f32(h);
      val[stored++] = h;
      bits = static_cast<uint8_t>(bits | (1u << b));
    }
    mask[c / 8] = bits;
  }
  return stored;
}

}  // namespace dlm

extern "C" {

int64_t dlm_dk_rows(int64_t max_len, int64_t head_dim, int64_t per_key) {
  if (max_len <= 2 || head_dim < 1) return std::max<int64_t>(1, max_len);
  per_key = std::min(std::max<int64_t>(per_key, 1), head_dim);
  // Stored values: at most D + (T − 1)·per_key; a kernel reads up to D values from the last key's
  // start (at most D + (T − 2)·per_key): 2D + (T − 2)·per_key in all, T·D when per_key = D.
  return 2 + ((max_len - 2) * per_key + head_dim - 1) / head_dim;
}

int64_t dlm_dk_per_key(int64_t max_len, int64_t head_dim, int64_t rows) {
  if (rows >= max_len) return head_dim;
  if (max_len <= 2 || rows < 2) return 0;
  return std::min(head_dim, (rows - 2) * head_dim / (max_len - 2));
}

}  // extern "C"
