// Per-key time of each decode micro-kernel of this machine's arch, cache-resident (built and run
// by bench/decode_ukernels.py). Arguments: rows head_dim keys kv_heads theta reps. One JSON object
// on stdout: ns per key of exact scores (qkdot, fp32 K), ΔK scores (deltaqkdot), the softmax of
// the tile (4 lanes for <= 4 rows, else 8), P·V with fp32 and fp16 V, and the ΔK non-zeros per key.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "ukernels/fp16.h"
#include "ukernels/ukernels.h"

#if defined(__x86_64__)
#define DLM_ARCH(name) name##__avx2_fma
#define DLM_ENC dlm::f32_deltaenc_ukernel__avx2
#define DLM_SOFTMAX dlm::f32_softmax_ukernel_x8__avx2_fma
#define DLM_PV(v) dlm::f32_pv##v##_ukernel_8x8__avx2_fma
#elif defined(__aarch64__)
#define DLM_ARCH(name) name##__neon
#define DLM_ENC dlm::f32_deltaenc_ukernel__neon
#define DLM_SOFTMAX dlm::f32_softmax_ukernel_x4__neon
#define DLM_PV(v) dlm::f32_pv##v##_ukernel_8x8__neon
#endif

template <class F>
static double best_ns(F f, int reps) {
  f();
  double best = 1e30;
  for (int k = 0; k < 7; k++) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; i++) f();
    best = std::min(best, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / reps);
  }
  return best;
}

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s rows head_dim keys kv_heads theta reps\n", argv[0]);
    return 2;
  }
  const size_t R = std::strtoul(argv[1], nullptr, 10), d = std::strtoul(argv[2], nullptr, 10);
  const size_t n = std::strtoul(argv[3], nullptr, 10), hkv = std::strtoul(argv[4], nullptr, 10);
  const float theta = std::strtof(argv[5], nullptr);
  const int reps = std::atoi(argv[6]);
  if (R < 1 || R > 8 || d % 8 || d < 8 || d > 1024 || n < 64 || n % 64 || hkv < 1 || reps < 1) {
    std::fprintf(stderr, "error: need 1 <= rows <= 8, head_dim a multiple of 8 in [8, 1024], keys a multiple of 64, "
                         "kv_heads >= 1, reps >= 1\n");
    return 2;
  }
  const size_t ld = hkv * d, lanes = R <= 4 ? dlm::kTRQuad : dlm::kTRNarrow, kb = 64;
  std::mt19937 gen(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> k(n * ld), v(n * ld), q(R * d), k_hat(d, 0.0f);
  for (auto& x : k) x = nd(gen);
  for (auto& x : v) x = nd(gen);
  for (auto& x : q) x = nd(gen);
  // a random walk per element, as keys drift: ΔK sparsity then depends on theta
  for (size_t t = 1; t < n; t++)
    for (size_t c = 0; c < ld; c++) k[t * ld + c] = k[(t - 1) * ld + c] + 0.5f * k[t * ld + c];
  std::vector<uint16_t> v16(n * ld), val(n * d + 64);
  std::vector<uint8_t> mask(n * ld / 8);
  for (size_t i = 0; i < v.size(); i++) v16[i] = dlm::f32_to_f16(v[i]);
  size_t nnz = 0;
  for (size_t t = 0; t < n; t++) {   // kv head 0's stream
    const dlm::deltaenc_params p{theta, t == 0};
    nnz += DLM_ENC(d, k.data() + t * ld, k_hat.data(), mask.data() + t * ld / 8, val.data() + nnz, &p);
  }
  std::vector<float> s(n * lanes), acc(lanes), p(kb * lanes), out(R * d), corr(lanes), mx(lanes), sum(lanes);
  std::vector<int32_t> n_approx(lanes, static_cast<int32_t>(kb)), n_valid(lanes, static_cast<int32_t>(kb));
  const dlm::softmax_params sp{1.0f / std::sqrt(static_cast<float>(d))};
  const double t_qk = best_ns([&] { DLM_ARCH(dlm::f32_qkdot_ukernel_8x1)(n, d, R, lanes, q.data(), d, k.data(), ld, s.data()); }, reps);
  const double t_dqk = best_ns([&] {
    std::fill(acc.begin(), acc.end(), 0.0f);
    DLM_ARCH(dlm::f32_deltaqkdot_ukernel_8x1)(n, d, R, lanes, q.data(), d, mask.data(), ld / 8, val.data(), acc.data(), s.data());
  }, reps);
  const double t_sm = best_ns([&] {
    std::fill(mx.begin(), mx.end(), -INFINITY);
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (size_t j = 0; j < n; j += kb)
      DLM_SOFTMAX(lanes, kb, s.data() + j * lanes, s.data() + j * lanes, n_approx.data(), n_valid.data(), mx.data(),
                  sum.data(), corr.data(), p.data(), &sp);
  }, reps);
  const auto pv_ns = [&](auto fn, const void* vv, size_t esize) {
    return best_ns([&] {
      for (size_t j = 0; j < n; j += kb)
        fn(kb, d, R, p.data(), lanes, static_cast<const char*>(vv) + j * ld * esize, ld, corr.data(), out.data());
    }, reps);
  };
  const double t_pv = pv_ns(DLM_PV(), v.data(), sizeof(float)), t_pv16 = pv_ns(DLM_PV(_f16v), v16.data(), 2);
  std::printf("{\"rows\": %zu, \"head_dim\": %zu, \"keys\": %zu, \"kv_heads\": %zu, \"theta\": %g, \"nnz_per_key\": %.2f, "
              "\"qkdot_ns\": %.3f, \"deltaqkdot_ns\": %.3f, \"softmax_ns\": %.3f, \"pv_ns\": %.3f, \"pv_f16v_ns\": %.3f}\n",
              R, d, n, hkv, theta, static_cast<double>(nnz) / n, t_qk / n, t_dqk / n, t_sm / n, t_pv / n, t_pv16 / n);
  return 0;
}
