// Delta attention driver: validation, cache update, delta encoding, (kv-head, row-tile) tasks,
// sparsity counters. The arithmetic lives in the micro-kernels (ukernels/).
#include "deltaattn.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "ukernels/ukernels.h"

namespace {

struct Kernels {
  dlm::deltaenc_ukernel_fn deltaenc;
  dlm::deltaqk_ukernel_fn deltaqk;
  dlm::dot_ukernel_fn dot;
  dlm::vexpsum_ukernel_fn vexpsum;
  dlm::pv_ukernel_fn pv;
  const char* arch;
};

std::atomic<bool> g_force_scalar{false};

const Kernels& kernels() {
  static const Kernels scalar{dlm::f32_deltaenc_ukernel__scalar, dlm::f32_deltaqk_ukernel_8x1__scalar,
                              dlm::f32_dot_ukernel__scalar, dlm::f32_vexpsum_ukernel__scalar,
                              dlm::f32_pv_ukernel_8xd__scalar, "scalar"};
#if defined(__x86_64__)
  static const Kernels avx2{dlm::f32_deltaenc_ukernel__avx2, dlm::f32_deltaqk_ukernel_8x1__avx2_fma,
                            dlm::f32_dot_ukernel__avx2_fma,
                            dlm::f32_vexpsum_ukernel__avx2_fma, dlm::f32_pv_ukernel_8x8__avx2_fma, "avx2_fma"};
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (has_avx2 && !g_force_scalar.load()) return avx2;
#endif
#if defined(__aarch64__)
  static const Kernels neon{dlm::f32_deltaenc_ukernel__neon, dlm::f32_deltaqk_ukernel_8x1__neon,
                            dlm::f32_dot_ukernel__neon, dlm::f32_vexpsum_ukernel__neon,
                            dlm::f32_pv_ukernel_8x8__neon, "neon"};
  if (!g_force_scalar.load()) return neon;   // Advanced SIMD is part of every AArch64 CPU
#endif
  return scalar;
}

std::mutex g_stats_mutex;
dlm_counts g_stats[DLM_MAX_LAYERS][2];
int64_t g_num_layers = 0;

int fail(char* err, size_t len, const char* msg) {
  if (err && len) std::snprintf(err, len, "delta_attention: %s", msg);
  return DLM_ERR_INVALID;
}

struct TaskCtx {
  const dlm_attn_args* a;
  const Kernels* k;
  int64_t group;      // query heads per kv head
  int64_t rows;       // S * group rows per kv head
  int64_t tiles;      // ceil(rows / MR)
  int64_t band;       // W
};

constexpr int64_t kKB = 64;   // keys per block

// One task: MR query rows of one kv-head group against all their keys, in blocks of kKB keys with
// an online (running max / sum) softmax, so each block of V is read once for the whole tile.
// Scores of keys before a row's band come from the sparse Q·ΔKᵀ prefix sums (deltaqk), keys in
// the band from exact dot products; keys past a row's position are masked (causal).
void run_tile(void* vctx, size_t task) {
  const TaskCtx& c = *static_cast<const TaskCtx*>(vctx);
  const dlm_attn_args& a = *c.a;
  const int64_t D = a.head_dim, H = a.n_heads, Hkv = a.n_kv_heads;
  const int64_t g = static_cast<int64_t>(task) / c.tiles;
  const int64_t r0 = (static_cast<int64_t>(task) % c.tiles) * dlm::kMR;
  const int64_t m = std::min<int64_t>(dlm::kMR, c.rows - r0);

  thread_local std::vector<float> qt, sblk, p, acc;
  qt.assign(static_cast<size_t>(D) * dlm::kMR, 0.0f);
  sblk.resize(static_cast<size_t>(kKB) * dlm::kMR);
  p.assign(static_cast<size_t>(kKB) * dlm::kMR, 0.0f);
  acc.assign(static_cast<size_t>(D) * dlm::kMR, 0.0f);
  int64_t pos[dlm::kMR], n_approx[dlm::kMR];
  const float* qrow[dlm::kMR];
  float mx[dlm::kMR], sum[dlm::kMR];
  int64_t max_approx = 0, max_pos = -1;
  for (int64_t r = 0; r < dlm::kMR; r++) {
    mx[r] = -INFINITY;
    sum[r] = 0.0f;
    pos[r] = -1;                 // unused rows of a partial tile see no keys
    n_approx[r] = 0;
    qrow[r] = nullptr;
    if (r >= m) continue;
    const int64_t s = (r0 + r) / c.group;
    const int64_t head = g * c.group + (r0 + r) % c.group;
    pos[r] = a.start_pos + s;
    n_approx[r] = std::max<int64_t>(0, pos[r] + 1 - c.band);
    max_approx = std::max(max_approx, n_approx[r]);
    max_pos = std::max(max_pos, pos[r]);
    qrow[r] = a.q + (s * H + head) * D;
    for (int64_t d = 0; d < D; d++) qt[d * dlm::kMR + r] = qrow[r][d];
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  float dq_acc[dlm::kMR] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t j0 = 0; j0 <= max_pos; j0 += kKB) {
    const int64_t nb = std::min<int64_t>(kKB, max_pos + 1 - j0);
    // Sparse q·Δk with the running prefix sum for the block's keys before the widest band start.
    const int64_t na = std::max<int64_t>(0, std::min<int64_t>(nb, max_approx - j0));
    if (na > 0)
      c.k->deltaqk(na, qt.data(), a.dk_idx + (j0 * Hkv + g) * D, a.dk_val + (j0 * Hkv + g) * D, Hkv * D,
                   a.dk_nnz + j0 * Hkv + g, Hkv, dq_acc, sblk.data());
    for (int64_t r = 0; r < dlm::kMR; r++) {
      float* pr = p.data() + r * kKB;
      const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(nb, pos[r] + 1 - j0));   // causal
      if (valid == 0) {
        std::fill(pr, pr + nb, 0.0f);
        continue;
      }
      float bmax = -INFINITY;
      for (int64_t jj = 0; jj < valid; jj++) {
        const int64_t j = j0 + jj;
        const float sc = j < n_approx[r] ? sblk[jj * dlm::kMR + r]
                                         : c.k->dot(D, qrow[r], a.k_cache + (j * Hkv + g) * D);
        pr[jj] = sc * scale;
        bmax = std::max(bmax, pr[jj]);
      }
      std::fill(pr + valid, pr + nb, 0.0f);
      const float new_max = std::max(mx[r], bmax);
      const float corr = mx[r] == -INFINITY ? 0.0f : std::exp(mx[r] - new_max);
      sum[r] = sum[r] * corr + c.k->vexpsum(valid, new_max, pr);
      if (corr != 1.0f)
        for (int64_t d = 0; d < D; d++) acc[r * D + d] *= corr;
      mx[r] = new_max;
    }
    c.k->pv(nb, D, p.data(), kKB, a.v_cache + (j0 * Hkv + g) * D, Hkv * D, acc.data());
  }
  for (int64_t r = 0; r < m; r++) {
    const int64_t s = (r0 + r) / c.group;
    const int64_t head = g * c.group + (r0 + r) % c.group;
    float* o = a.out + (s * H + head) * D;
    const float inv = 1.0f / sum[r];
    for (int64_t d = 0; d < D; d++) o[d] = acc[r * D + d] * inv;
  }
}

void count(const dlm_attn_args& a, int64_t band) {
  if (a.layer < 0) return;
  const int64_t D = a.head_dim, H = a.n_heads, Hkv = a.n_kv_heads, group = H / Hkv;
  const int64_t total = a.start_pos + a.seq_len;
  dlm_counts c{};
  c.dk_elements = static_cast<uint64_t>(a.seq_len * Hkv * D);
  uint64_t nnz_new = 0;
  for (int64_t t = a.start_pos; t < total; t++)
    for (int64_t g = 0; g < Hkv; g++) nnz_new += static_cast<uint64_t>(a.dk_nnz[t * Hkv + g]);
  c.dk_zeros = c.dk_elements - nnz_new;
  for (int64_t g = 0; g < Hkv; g++) {
    uint64_t prefix = 0;  // Σ nnz[τ, g] for τ < next
    int64_t next = 0;
    for (int64_t i = a.start_pos; i < total; i++) {
      const int64_t n_app = std::max<int64_t>(0, i + 1 - band);
      while (next < n_app) prefix += static_cast<uint64_t>(a.dk_nnz[(next++) * Hkv + g]);
      const uint64_t performed = prefix + static_cast<uint64_t>(std::min<int64_t>(band, i + 1) * D);
      c.macs_performed += performed * group;
      c.macs_dense += static_cast<uint64_t>((i + 1) * D) * group;
    }
  }
  const int phase = a.seq_len == 1 ? DLM_PHASE_DECODE : DLM_PHASE_PREFILL;
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  dlm_counts& s = g_stats[a.layer][phase];
  s.dk_zeros += c.dk_zeros;
  s.dk_elements += c.dk_elements;
  s.macs_performed += c.macs_performed;
  s.macs_dense += c.macs_dense;
  s.calls += 1;
  g_num_layers = std::max(g_num_layers, a.layer + 1);
}

}  // namespace

extern "C" {

int64_t dlm_band_width(int64_t seq_len, float gamma, int64_t w_max, int64_t w_decode) {
  if (seq_len == 1) return w_decode;
  const int64_t w = static_cast<int64_t>(std::floor(static_cast<double>(gamma) * static_cast<double>(seq_len)));
  return std::max<int64_t>(1, std::min(w, w_max));
}

int dlm_delta_attention_f32(const dlm_attn_args* a, char* err, size_t len) {
  if (!a) return fail(err, len, "null arguments");
  if (!a->q || !a->k || !a->v || !a->k_cache || !a->v_cache || !a->dk_idx || !a->dk_val || !a->dk_nnz ||
      !a->k_hat || !a->out)
    return fail(err, len, "null tensor");
  if (a->seq_len < 1) return fail(err, len, "seq_len must be >= 1");
  if (a->n_heads < 1 || a->n_kv_heads < 1 || a->head_dim < 1) return fail(err, len, "head counts and head_dim must be >= 1");
  if (a->n_heads % a->n_kv_heads) return fail(err, len, "n_heads must be a multiple of n_kv_heads");
  if (a->start_pos < 0) return fail(err, len, "start_pos must be >= 0");
  if (a->start_pos + a->seq_len > a->max_len) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "cache overflow: start_pos %lld + seq_len %lld > max context %lld",
                  static_cast<long long>(a->start_pos), static_cast<long long>(a->seq_len),
                  static_cast<long long>(a->max_len));
    return fail(err, len, msg);
  }
  if (!(a->theta >= 0.0f) || !std::isfinite(a->theta)) return fail(err, len, "theta must be finite and >= 0");
  if (!(a->gamma >= 0.0f && a->gamma <= 1.0f)) return fail(err, len, "gamma must be in [0, 1]");
  if (a->w_max < 1 || a->w_decode < 1) return fail(err, len, "w_max and w_decode must be >= 1");
  if (a->layer >= DLM_MAX_LAYERS) return fail(err, len, "layer index too large for the counters");

  const Kernels& k = kernels();
  const int64_t D = a->head_dim, Hkv = a->n_kv_heads;
  if (a->start_pos == 0) std::memset(a->k_hat, 0, sizeof(float) * Hkv * D);
  std::memcpy(a->k_cache + a->start_pos * Hkv * D, a->k, sizeof(float) * a->seq_len * Hkv * D);
  std::memcpy(a->v_cache + a->start_pos * Hkv * D, a->v, sizeof(float) * a->seq_len * Hkv * D);
  for (int64_t s = 0; s < a->seq_len; s++) {
    const int64_t t = a->start_pos + s;
    const dlm::deltaenc_params p{a->theta, t == 0};
    for (int64_t g = 0; g < Hkv; g++) {
      const size_t off = static_cast<size_t>((t * Hkv + g) * D);
      a->dk_nnz[t * Hkv + g] = static_cast<int32_t>(
          k.deltaenc(D, a->k + (s * Hkv + g) * D, a->k_hat + g * D, a->dk_idx + off, a->dk_val + off, &p));
    }
  }
  TaskCtx ctx{a, &k, a->n_heads / Hkv, 0, 0, dlm_band_width(a->seq_len, a->gamma, a->w_max, a->w_decode)};
  ctx.rows = a->seq_len * ctx.group;
  ctx.tiles = (ctx.rows + dlm::kMR - 1) / dlm::kMR;
  const size_t n_tasks = static_cast<size_t>(Hkv * ctx.tiles);
  if (a->parallel) {
    a->parallel(a->pool_ctx, n_tasks, run_tile, &ctx);
  } else {
    for (size_t i = 0; i < n_tasks; i++) run_tile(&ctx, i);
  }
  count(*a, ctx.band);
  return DLM_OK;
}

int dlm_stats_read(int64_t layer, int phase, dlm_counts* out) {
  if (!out || layer < 0 || layer >= DLM_MAX_LAYERS || (phase != 0 && phase != 1)) return DLM_ERR_INVALID;
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  *out = g_stats[layer][phase];
  return DLM_OK;
}

int64_t dlm_stats_num_layers(void) {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  return g_num_layers;
}

void dlm_stats_reset(void) {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  std::memset(g_stats, 0, sizeof g_stats);
  g_num_layers = 0;
}

const char* dlm_kernel_arch(void) { return kernels().arch; }

void dlm_force_scalar(int on) { g_force_scalar.store(on != 0); }

}  // extern "C"
