// Delta attention driver: validation, cache update, delta encoding, (kv-head, row-tile) tasks,
// sparsity counters. The arithmetic lives in the micro-kernels (ukernels/), chosen per CPU in
// kernel_table.cc.
#include "deltaattn.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernel_table.h"
#include "task_pool.h"
#include "ukernels/fp16.h"

namespace {

using dlm::Kernels;

int fail(char* err, size_t len, const char* msg) {
  if (err && len) std::snprintf(err, len, "delta_attention: %s", msg);
  return DLM_ERR_INVALID;
}

struct TaskCtx {
  const dlm_attn_args* a;
  const Kernels* k;
  int64_t group;      // query heads per kv head
  int64_t rows;       // S * group rows per kv head
  int64_t lanes;      // rows per tile: kTR, or (decode) kTRNarrow / kTRQuad when rows fit
  int64_t tiles;      // ceil(rows / lanes)
  int64_t band;       // W
  int64_t splits;     // key splits per tile (> 1: tasks write softmax partials, merged afterwards)
  int64_t split_len;  // keys per split: a multiple of DLM_CKPT_STRIDE (a split starts at a checkpoint)
  float* partial;     // splits > 1: per (kv head, tile, split): mx [L], sum [L], acc [L, D]
  const void* kc;         // dense: the K cache, every key from it (kv head g's key j at row g·T + j), else null
  int64_t k_format;       // its format (DLM_FMT_*)
  int64_t k_row, v_row;   // bytes of a K (kc) and a V cache row
  const dlm::QFormatKernels* kq;   // kc quantized: its kernels, else null
  const dlm::QFormatKernels* vq;   // the V cache quantized: its kernels, else null
};

constexpr int64_t kKB = 64;   // keys per block
// Decode tasks per call: enough for 8 threads to share (a few tasks each), few enough that a task
// streams a long run of K and V rows. Splits of one checkpoint stride each (256 keys: 128 tasks for
// Llama-3.2-1B at 4096) restarted the memory streams and the merge 128 times per step; 24 took a
// streamed Llama-shaped step at 4096 from ~0.44 to ~0.35 ms at two threads (zen4; 12 or 16: the same).
constexpr int64_t kDecodeTasks = 24;

// Rows of D values in each kv head's stream of packed ΔK non-zeros (dlm_dk_rows).
inline int64_t stream_rows(const dlm_attn_args& a) { return a.dk_rows ? a.dk_rows : a.max_len; }
// Kv head g's stream.
inline uint16_t* value_stream(const dlm_attn_args& a, int64_t g) {
  return a.dk_val + g * stream_rows(a) * a.head_dim;
}
// Where key t's non-zeros start in kv head g's stream.
inline int64_t value_start(const dlm_attn_args& a, int64_t t, int64_t g) {
  return t > 0 ? a.dk_end[(t - 1) * a.n_kv_heads + g] : 0;
}

// Exact scores of n keys (k_stride apart) into scores[t*L + r]: the wide tile's qk over its
// transposed queries qt, a narrow tile's qkdot over the row-major queries qr of its `rows` rows.
void exact_run(const TaskCtx& c, const float* qt, const float* qr, int64_t rows, const float* key, int64_t k_stride,
               int64_t n, float* scores) {
  const size_t D = static_cast<size_t>(c.a->head_dim);
  if (c.lanes != dlm::kTR)
    c.k->qkdot(static_cast<size_t>(n), D, static_cast<size_t>(rows), static_cast<size_t>(c.lanes), qr, D, key,
               static_cast<size_t>(k_stride), scores);
  else
    c.k->qk(static_cast<size_t>(n), D, qt, key, static_cast<size_t>(k_stride), scores);
}

// The same from an fp16 K cache (n <= kKB keys): a narrow tile's qkdot converts each key as it
// loads it; a wide tile's keys are converted into kbuf [n, D] first (1/L of its qk's work).
void exact_run_f16k(const TaskCtx& c, const float* qt, const float* qr, int64_t rows, const uint16_t* key,
                    int64_t k_stride, int64_t n, float* scores, float* kbuf) {
  const size_t D = static_cast<size_t>(c.a->head_dim);
  if (c.lanes != dlm::kTR) {
    c.k->qkdot_f16k(static_cast<size_t>(n), D, static_cast<size_t>(rows), static_cast<size_t>(c.lanes), qr, D, key,
                    static_cast<size_t>(k_stride), scores);
    return;
  }
  for (int64_t t = 0; t < n; t++) c.k->f32cvt(D, key + t * k_stride, kbuf + t * static_cast<int64_t>(D));
  c.k->qk(static_cast<size_t>(n), D, qt, kbuf, D, scores);
}

// The same from a quantized K cache (n <= kKB keys, k_stride bytes apart): a narrow tile's integer
// dots over its quantized queries (qs, qd); a wide tile's keys decoded into kbuf [n, D] for qk over
// its queries, which were quantized and decoded into qt.
void exact_run_q(const TaskCtx& c, const float* qt, const int8_t* qs, const float* qd, int64_t rows,
                 const uint8_t* key, int64_t k_stride, int64_t n, float* scores, float* kbuf) {
  const size_t D = static_cast<size_t>(c.a->head_dim);
  if (c.lanes != dlm::kTR) {
    c.kq->qkdot(static_cast<size_t>(n), D, static_cast<size_t>(rows), static_cast<size_t>(c.lanes), qs, qd, key,
                static_cast<size_t>(k_stride), scores);
    return;
  }
  for (int64_t t = 0; t < n; t++) c.kq->dec(D, key + t * k_stride, kbuf + t * static_cast<int64_t>(D));
  c.k->qk(static_cast<size_t>(n), D, qt, kbuf, D, scores);
}

// Exact scores of keys [j_from, j_to) of kv head g into scores[(j − j0)*L + r]. Keys of this call
// (j >= start_pos) come from the input k, earlier ones from the ring (slot j % R); each contiguous
// run of rows is one qk call. A dense call (c.kc) reads every key from its K cache (head-major: kv
// head g's keys are rows g·T .. g·T + T − 1, one contiguous stream), this call's
// already stored: all keys are rounded alike, whatever the chunking.
// Narrow tiles (decode) use the row-major queries qr of their `rows` rows (qkdot).
void exact_scores(const TaskCtx& c, int64_t g, const float* qt, const float* qr, const int8_t* qs, const float* qd,
                  int64_t rows, int64_t j0, int64_t j_from, int64_t j_to, float* scores, float* kbuf) {
  const dlm_attn_args& a = *c.a;
  const int64_t D = a.head_dim, Hkv = a.n_kv_heads, L = c.lanes, R = a.ring_len;
  if (c.kc) {
    const char* key = static_cast<const char*>(c.kc) + (g * a.max_len + j_from) * c.k_row;
    float* out = scores + (j_from - j0) * L;
    if (c.kq)
      exact_run_q(c, qt, qs, qd, rows, reinterpret_cast<const uint8_t*>(key), c.k_row, j_to - j_from, out, kbuf);
    else if (c.k_format == DLM_FMT_F16)
      exact_run_f16k(c, qt, qr, rows, reinterpret_cast<const uint16_t*>(key), D, j_to - j_from, out, kbuf);
    else
      exact_run(c, qt, qr, rows, reinterpret_cast<const float*>(key), D, j_to - j_from, out);
    return;
  }
  for (int64_t j = j_from; j < j_to;) {
    const float* key;
    int64_t run;
    if (j >= a.start_pos) {
      key = a.k + ((j - a.start_pos) * Hkv + g) * D;
      run = j_to - j;
    } else {
      const int64_t slot = j % R;
      key = a.k_ring + (slot * Hkv + g) * D;
      run = std::min({j_to, a.start_pos, j + R - slot}) - j;
    }
    exact_run(c, qt, qr, rows, key, Hkv * D, run, scores + (j - j0) * L);
    j += run;
  }
}

// Decode tiles with fp32 V: their V rows (n rows of `bytes`, `stride` apart) are prefetched kPfKeys
// keys at a time between the sparse score calls, which wait on arithmetic, so the P·V after the
// block's softmax finds them in L1 (delta decode steps 0.86–0.92x). Not done for fp16 V (no gain:
// the hardware prefetcher keeps up with half the bytes) nor for dense tiles, which wait on K (no
// consistent gain).
constexpr int64_t kPfKeys = 16;
inline void prefetch_rows(const char* row, int64_t n, int64_t stride, int64_t bytes) {
  for (; n > 0; n--, row += stride)
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(row + b, 0, 3);
}

// One task: up to L query rows of one kv-head group (a tile) against all their keys, in blocks of
// kKB keys with an online (running max / sum) softmax. A wide tile's queries are transposed and its
// scores key-major, so each key element (exact part) or ΔK non-zero (sparse part) is loaded once
// and multiplied into all L rows; a narrow (decode) tile keeps its few queries row-major and dots
// them with each key along head_dim. Each block of K, ΔK and V is read from memory once per tile.
// Keys before a row's band use the sparse Q·ΔKᵀ prefix sums (deltaqk), keys in the band the exact
// Q·Kᵀ (qk); keys past a row's position are masked (causal).
void run_tile(void* vctx, size_t task) {
  const TaskCtx& c = *static_cast<const TaskCtx*>(vctx);
  const dlm_attn_args& a = *c.a;
  const int64_t D = a.head_dim, H = a.n_heads, Hkv = a.n_kv_heads, ld = Hkv * D, L = c.lanes;
  const int64_t per_g = c.tiles * c.splits, tile = (static_cast<int64_t>(task) % per_g) / c.splits;
  const int64_t g = static_cast<int64_t>(task) / per_g, split = static_cast<int64_t>(task) % c.splits;
  const int64_t t0 = tile * L;
  const int64_t rows = std::min<int64_t>(L, c.rows - t0);
  const bool wide = L == dlm::kTR;

  // Per-thread scratch, 64-byte aligned so no vector load of a tile row splits a cache line.
  thread_local std::vector<float> scratch;
  const size_t tile_floats = static_cast<size_t>(D * L), blk_floats = static_cast<size_t>(kKB * L);
  const bool v_dec = c.vq && (wide || rows > 4);   // quantized V decoded per block (the fused P·V takes <= 4 rows)
  const size_t kbuf_floats = c.kc && c.k_format != DLM_FMT_F32 && wide ? kKB * D : 0;
  const size_t vbuf_floats = v_dec ? kKB * D : 0;
  const size_t qs_floats = c.kq ? tile_floats / 4 + tile_floats / dlm::kQBlock : 0;
  scratch.resize(3 * tile_floats + 3 * blk_floats + kbuf_floats + vbuf_floats + qs_floats + 16);
  float* base = scratch.data() + ((64 - reinterpret_cast<uintptr_t>(scratch.data()) % 64) % 64) / sizeof(float);
  float* const qt = base;
  float* const acc = qt + tile_floats;
  float* const s_approx = acc + tile_floats;
  float* const s_exact = s_approx + blk_floats;
  float* const p = s_exact + blk_floats;
  float* const qr = p + blk_floats;   // narrow tiles: the rows' queries, row-major
  float* const kbuf = qr + tile_floats;   // wide tiles over an fp16 or quantized K cache: a block's keys in fp32
  float* const vbuf = kbuf + kbuf_floats;   // a quantized V cache decoded: a block's values in fp32
  float* const qd = vbuf + vbuf_floats;     // a quantized K cache: the rows' query scales [L, D/32] ...
  int8_t* const qs = reinterpret_cast<int8_t*>(qd + tile_floats / dlm::kQBlock);   // ... and codes [L, D]
  // Wide tiles read the transposed queries qt, narrow (decode) tiles the row-major qr only.
  std::fill(wide ? qt : acc, acc + tile_floats, 0.0f);
  int64_t pos[dlm::kTR], n_approx[dlm::kTR];
  int32_t blk_approx[dlm::kTR], blk_valid[dlm::kTR];
  float mx[dlm::kTR], sum[dlm::kTR], dq[dlm::kTR], corr[dlm::kTR];
  int64_t max_pos = -1, min_approx = INT64_MAX, max_approx = 0;
  for (int64_t r = 0; r < L; r++) {
    mx[r] = -INFINITY;
    sum[r] = 0.0f;
    dq[r] = 0.0f;
    if (r >= rows) continue;
    const int64_t s = (t0 + r) / c.group, head = g * c.group + (t0 + r) % c.group;
    pos[r] = a.start_pos + s;
    n_approx[r] = std::max<int64_t>(0, pos[r] + 1 - c.band);
    max_approx = std::max(max_approx, n_approx[r]);
    min_approx = std::min(min_approx, n_approx[r]);
    max_pos = std::max(max_pos, pos[r]);
    const float* qrow = a.q + (s * H + head) * D;
    if (c.kq) {   // quantized once per tile; a wide tile computes with the decoded values
      constexpr int64_t kQB = dlm::kQBlock;
      const int64_t nb = D / kQB;
      c.k->q8q(static_cast<size_t>(D), qrow, qs + r * D, qd + r * nb);
      if (wide)
        for (int64_t d = 0; d < D; d++) qt[d * L + r] = qd[r * nb + d / kQB] * static_cast<float>(qs[r * D + d]);
    } else if (wide) {
      for (int64_t d = 0; d < D; d++) qt[d * L + r] = qrow[d];
    }
    if (!wide) std::copy(qrow, qrow + D, qr + r * D);
  }
  // Unused lanes of a partial tile (their queries are 0, their outputs dropped) mirror the last
  // row's keys, so a block every row sees whole stays one uniform softmax sweep.
  for (int64_t r = rows; r < L; r++) {
    pos[r] = pos[rows - 1];
    n_approx[r] = n_approx[rows - 1];
  }
  // This task's keys: all of them, or one split of split_len keys (whole checkpoint strides) whose
  // prefix sums start from the checkpointed reference key k̂ before it (q·k̂ = the sum of q·Δk before it).
  const int64_t k_lo = c.splits > 1 ? split * c.split_len : 0;
  const int64_t k_end = c.splits > 1 ? std::min(max_pos + 1, k_lo + c.split_len) : max_pos + 1;
  if (k_lo > 0 && k_lo < max_approx) {
    const float* ck = a.k_ckpt + ((k_lo / DLM_CKPT_STRIDE) * Hkv + g) * D;
    if (wide)
      for (int64_t d = 0; d < D; d++)
        for (int64_t r = 0; r < L; r++) dq[r] += qt[d * L + r] * ck[d];
    else
      for (int64_t r = 0; r < rows; r++)
        for (int64_t d = 0; d < D; d++) dq[r] += qr[r * D + d] * ck[d];
  }
  const dlm::softmax_params sp{1.0f / std::sqrt(static_cast<float>(D))};
  for (int64_t j0 = k_lo; j0 < k_end; j0 += kKB) {
    const int64_t nb = std::min<int64_t>(kKB, k_end - j0);
    // Sparse q·Δk with the running prefix sums, for the block's keys before the widest band start.
    const int64_t na = std::max<int64_t>(0, std::min<int64_t>(nb, max_approx - j0));
    if (na > 0) {
      const uint8_t* m = a.dk_mask + (j0 * Hkv + g) * (D / 8);
      if (wide) {
        c.k->deltaqk(static_cast<size_t>(na), static_cast<size_t>(D), qt, m, static_cast<size_t>(ld / 8),
                     value_stream(a, g) + value_start(a, j0, g), dq, s_approx);
      } else {
        const bool pf = a.v_format == DLM_FMT_F32;
        const int64_t step = pf ? kPfKeys : na;
        const char* v_pf = pf ? static_cast<const char*>(a.v_cache) + (g * a.max_len + j0) * c.v_row : nullptr;
        for (int64_t i0 = 0; i0 < na; i0 += step) {
          const int64_t ni = std::min<int64_t>(step, na - i0);
          if (pf) prefetch_rows(v_pf + i0 * c.v_row, ni, c.v_row, c.v_row);
          c.k->deltaqkdot(static_cast<size_t>(ni), static_cast<size_t>(D), static_cast<size_t>(rows),
                          static_cast<size_t>(L), qr, static_cast<size_t>(D), m + i0 * (ld / 8),
                          static_cast<size_t>(ld / 8), value_stream(a, g) + value_start(a, j0 + i0, g), dq,
                          s_approx + i0 * L);
        }
      }
      if (j0 == 0) {   // the sink: key 0's score is exact for every row (its fp16 Δ only feeds the prefix)
        exact_run(c, qt, qr, rows, a.k_sink + g * D, 0, 1, p);
        std::copy(p, p + L, s_approx);
      }
    }
    // Exact q·k for the block's keys from the narrowest band start on.
    const int64_t e0 = std::max<int64_t>(0, std::min<int64_t>(nb, min_approx - j0));
    if (e0 < nb) exact_scores(c, g, qt, qr, qs, qd, rows, j0, j0 + e0, j0 + nb, s_exact, kbuf);
    for (int64_t r = 0; r < L; r++) {
      blk_approx[r] = static_cast<int32_t>(std::max<int64_t>(0, std::min<int64_t>(nb, n_approx[r] - j0)));
      blk_valid[r] = static_cast<int32_t>(std::max<int64_t>(0, std::min<int64_t>(nb, pos[r] + 1 - j0)));
    }
    c.k->softmax(L, nb, s_approx, s_exact, blk_approx, blk_valid, mx, sum, corr, p, &sp);
    const char* v_blk = static_cast<const char*>(a.v_cache) + (g * a.max_len + j0) * c.v_row;   // head-major
    if (c.vq && !v_dec) {   // decode, <= 4 rows: the fused P·V decodes each V row once for all rows
      c.vq->pv(static_cast<size_t>(nb), static_cast<size_t>(D), static_cast<size_t>(rows), p,
               static_cast<size_t>(L), reinterpret_cast<const uint8_t*>(v_blk), static_cast<size_t>(c.v_row),
               corr, acc);
      continue;
    }
    bool decoded = false;
    for (int64_t r0 = 0; r0 < rows; r0 += dlm::kPR) {
      // Rows that see no key of this block keep corr = 1 and get p = 0: nothing to do for them.
      if (pos[std::min<int64_t>(rows, r0 + dlm::kPR) - 1] < j0) continue;
      const size_t m = static_cast<size_t>(std::min<int64_t>(dlm::kPR, rows - r0));
      if (v_dec && !decoded) {   // the block's values into vbuf once, for every row group
        for (int64_t j = 0; j < nb; j++)
          c.vq->dec(static_cast<size_t>(D), reinterpret_cast<const uint8_t*>(v_blk) + j * c.v_row, vbuf + j * D);
        decoded = true;
      }
      const bool f16 = a.v_format == DLM_FMT_F16;
      (f16 ? c.k->pv_f16v : c.k->pv)(static_cast<size_t>(nb), static_cast<size_t>(D), m, p + r0,
                                     static_cast<size_t>(L), v_dec ? static_cast<const void*>(vbuf) : v_blk,
                                     static_cast<size_t>(D), corr + r0, acc + r0 * D);
    }
  }
  if (c.splits > 1) {
    float* part = c.partial + ((g * c.tiles + tile) * c.splits + split) * L * (D + 2);
    std::copy(mx, mx + L, part);
    std::copy(sum, sum + L, part + L);
    std::copy(acc, acc + L * D, part + 2 * L);
    return;
  }
  for (int64_t r = 0; r < rows; r++) {
    const int64_t s = (t0 + r) / c.group, head = g * c.group + (t0 + r) % c.group;
    float* o = a.out + (s * H + head) * D;
    const float inv = 1.0f / sum[r];
    for (int64_t d = 0; d < D; d++) o[d] = acc[r * D + d] * inv;
  }
}

// Splits of one tile into its rows' outputs: rescale each split's sum and accumulator to the
// largest running max (a split a row sees no key of has max −inf and weighs nothing).
void merge_splits(const TaskCtx& c, int64_t g, int64_t tile) {
  const dlm_attn_args& a = *c.a;
  const int64_t D = a.head_dim, H = a.n_heads, L = c.lanes, t0 = tile * L;
  const int64_t rows = std::min<int64_t>(L, c.rows - t0);
  const float* base = c.partial + (g * c.tiles + tile) * c.splits * L * (D + 2);
  for (int64_t r = 0; r < rows; r++) {
    float m = -INFINITY;
    for (int64_t sp = 0; sp < c.splits; sp++) m = std::max(m, base[sp * L * (D + 2) + r]);
    const int64_t s = (t0 + r) / c.group, head = g * c.group + (t0 + r) % c.group;
    float* o = a.out + (s * H + head) * D;
    std::fill(o, o + D, 0.0f);
    float total = 0.0f;
    for (int64_t sp = 0; sp < c.splits; sp++) {
      const float* part = base + sp * L * (D + 2);
      if (part[r] == -INFINITY) continue;
      const float w = std::exp(part[r] - m);
      total += part[L + r] * w;
      const float* acc = part + 2 * L + r * D;
      for (int64_t d = 0; d < D; d++) o[d] += acc[d] * w;
    }
    const float inv = 1.0f / total;
    for (int64_t d = 0; d < D; d++) o[d] *= inv;
  }
}

void count(const dlm_attn_args& a, int64_t band) {
  if (a.layer < 0) return;
  const int64_t D = a.head_dim, H = a.n_heads, Hkv = a.n_kv_heads, group = H / Hkv;
  const int64_t total = a.start_pos + a.seq_len;
  dlm_counts c{};
  c.dk_elements = static_cast<uint64_t>(a.seq_len * Hkv * D);
  uint64_t nnz_new = 0;
  for (int64_t g = 0; g < Hkv; g++)
    nnz_new += static_cast<uint64_t>(value_start(a, total, g) - value_start(a, a.start_pos, g));
  c.dk_zeros = c.dk_elements - nnz_new;
  for (int64_t g = 0; g < Hkv; g++) {
    for (int64_t i = a.start_pos; i < total; i++) {
      const int64_t n_app = std::max<int64_t>(0, i + 1 - band);
      const uint64_t prefix = static_cast<uint64_t>(value_start(a, n_app, g));   // Σ nnz[τ, g] for τ < n_app
      const uint64_t performed = prefix + static_cast<uint64_t>(std::min<int64_t>(band, i + 1) * D);
      c.macs_performed += performed * group;
      c.macs_dense += static_cast<uint64_t>((i + 1) * D) * group;
    }
  }
  dlm::stats_add(a.layer, a.seq_len == 1 ? DLM_PHASE_DECODE : DLM_PHASE_PREFILL, c);
}

// Checks shared by the delta and dense entry points.
int check_shape_args(const dlm_attn_args& a, char* err, size_t len) {
  if (a.seq_len < 1) return fail(err, len, "seq_len must be >= 1");
  if (a.n_heads < 1 || a.n_kv_heads < 1 || a.head_dim < 1) return fail(err, len, "head counts and head_dim must be >= 1");
  if (a.n_heads % a.n_kv_heads) return fail(err, len, "n_heads must be a multiple of n_kv_heads");
  if (a.start_pos < 0) return fail(err, len, "start_pos must be >= 0");
  if (a.start_pos + a.seq_len > a.max_len) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "cache overflow: start_pos %lld + seq_len %lld > max context %lld",
                  static_cast<long long>(a.start_pos), static_cast<long long>(a.seq_len),
                  static_cast<long long>(a.max_len));
    return fail(err, len, msg);
  }
  if (a.head_dim % 8 != 0 || a.head_dim > 1024) return fail(err, len, "head_dim must be a multiple of 8, <= 1024");
  return DLM_OK;
}

const dlm::QFormatKernels* q_kernels(const Kernels& k, int64_t format) {
  return format == DLM_FMT_Q8_0 ? &k.q8_0 : format == DLM_FMT_Q4_0 ? &k.q4_0 : nullptr;
}

// A call's new rows src [S, Hkv, D] into a head-major cache of the format (kv head g's row t at
// g·T + t): fp32 copied, fp16 rounded to nearest even and clamped to its range, q8_0 / q4_0 quantized.
void store_rows(const Kernels& k, int64_t format, const dlm_attn_args& a, const float* src, void* cache) {
  const int64_t D = a.head_dim, Hkv = a.n_kv_heads, row = dlm_cache_row_bytes(format, D);
  const dlm::QFormatKernels* q = q_kernels(k, format);
  for (int64_t g = 0; g < Hkv; g++) {
    char* dst = static_cast<char*>(cache) + (g * a.max_len + a.start_pos) * row;
    for (int64_t s = 0; s < a.seq_len; s++, dst += row) {
      const float* x = src + (s * Hkv + g) * D;
      if (format == DLM_FMT_F32)
        std::memcpy(dst, x, sizeof(float) * D);
      else if (format == DLM_FMT_F16)
        k.f16cvt(static_cast<size_t>(D), x, reinterpret_cast<uint16_t*>(dst));
      else
        q->enc(1, static_cast<size_t>(D), x, reinterpret_cast<uint8_t*>(dst));
    }
  }
}

// The cache formats' checks (both entry points).
int check_format(int64_t format, const char* name, int64_t head_dim, char* err, size_t len) {
  if (dlm_cache_row_bytes(format, head_dim) > 0) return DLM_OK;
  char msg[160];
  if (format < DLM_FMT_F32 || format > DLM_FMT_Q4_0)
    std::snprintf(msg, sizeof msg, "%s: unknown cache format %lld", name, static_cast<long long>(format));
  else
    std::snprintf(msg, sizeof msg, "%s: q8_0 and q4_0 need head_dim to be a multiple of 32, got %lld", name,
                  static_cast<long long>(head_dim));
  return fail(err, len, msg);
}

// The (kv head, row tile) tasks of one call, then the new raw keys into the ring (after the tiles,
// which may still read the slots they replace).
void run_tiles(const dlm_attn_args& a, const Kernels& k, int64_t band, const void* kc = nullptr,
               int64_t k_format = DLM_FMT_F32) {
  TaskCtx ctx{&a, &k, a.n_heads / a.n_kv_heads, 0, 0, 0, band, 1, DLM_CKPT_STRIDE, nullptr, kc, k_format,
              dlm_cache_row_bytes(k_format, a.head_dim), dlm_cache_row_bytes(a.v_format, a.head_dim),
              kc ? q_kernels(k, k_format) : nullptr, q_kernels(k, a.v_format)};
  ctx.rows = a.seq_len * ctx.group;
  ctx.lanes = ctx.rows <= dlm::kTRQuad ? dlm::kTRQuad : ctx.rows <= dlm::kTRNarrow ? dlm::kTRNarrow : dlm::kTR;
  ctx.tiles = (ctx.rows + ctx.lanes - 1) / ctx.lanes;
  // Few rows (decode): one task per kv head would leave threads idle and serialise long contexts,
  // so each kv head's keys are split, into about kDecodeTasks tasks in all (splits start at a k̂
  // checkpoint: multiples of DLM_CKPT_STRIDE keys).
  thread_local std::vector<float> partial;
  if (ctx.lanes != dlm::kTR) {
    const int64_t keys = a.start_pos + a.seq_len;
    const int64_t per_head = std::max<int64_t>(1, (kDecodeTasks + a.n_kv_heads - 1) / a.n_kv_heads);
    const int64_t want = (keys + per_head - 1) / per_head;
    ctx.split_len = std::max<int64_t>(1, (want + DLM_CKPT_STRIDE - 1) / DLM_CKPT_STRIDE) * DLM_CKPT_STRIDE;
    ctx.splits = (a.start_pos + a.seq_len + ctx.split_len - 1) / ctx.split_len;
    if (ctx.splits > 1) {
      partial.resize(static_cast<size_t>(a.n_kv_heads * ctx.tiles * ctx.splits * ctx.lanes * (a.head_dim + 2)));
      ctx.partial = partial.data();
    }
  }
  const size_t n_tasks = static_cast<size_t>(a.n_kv_heads * ctx.tiles * ctx.splits);
  if (a.parallel) {
    a.parallel(a.pool_ctx, n_tasks, run_tile, &ctx);
  } else {
    dlm::run_on_task_pool(n_tasks, run_tile, &ctx);
  }
  if (ctx.splits > 1)
    for (int64_t g = 0; g < a.n_kv_heads; g++)
      for (int64_t t = 0; t < ctx.tiles; t++) merge_splits(ctx, g, t);
  if (kc) return;   // the K cache was stored before the tiles
  const int64_t end = a.start_pos + a.seq_len, R = a.ring_len, kv = a.n_kv_heads * a.head_dim;
  for (int64_t t = std::max(a.start_pos, end - R); t < end; t++)
    std::memcpy(a.k_ring + (t % R) * kv, a.k + (t - a.start_pos) * kv, sizeof(float) * kv);
}

// Kv head g's new keys into its ΔK stream: key t's non-zeros go on after key t − 1's, k̂ advances by
// what was stored, and k̂ is checkpointed every DLM_CKPT_STRIDE keys. Heads share nothing, so a
// long call encodes them as parallel tasks (a prefill's encoding was serial: 4 % of a 512-token call
// at one thread, twice that share at two).
struct EncCtx {
  const dlm_attn_args* a;
  const Kernels* k;
  int64_t per_key;
};
constexpr int64_t kParallelEncodeMin = 64;   // new keys per call below which one thread encodes all heads

void encode_head(void* vctx, size_t gi) {
  const EncCtx& c = *static_cast<const EncCtx*>(vctx);
  const dlm_attn_args& a = *c.a;
  const int64_t g = static_cast<int64_t>(gi), D = a.head_dim, Hkv = a.n_kv_heads;
  float* k_hat = a.k_hat + g * D;
  uint16_t* stream = value_stream(a, g);
  for (int64_t s = 0; s < a.seq_len; s++) {
    const int64_t t = a.start_pos + s, row = t * Hkv + g, start = value_start(a, t, g);
    const dlm::deltaenc_params p{a.theta, t == 0};
    const int64_t budget = t == 0 ? D : std::min(D, D + t * c.per_key - start);   // see dlm_dk_rows
    const float* key = a.k + (s * Hkv + g) * D;
    uint8_t* mask = a.dk_mask + row * (D / 8);
    const size_t n = budget >= D ? c.k->deltaenc(static_cast<size_t>(D), key, k_hat, mask, stream + start, &p)
                                 : dlm::deltaenc_within_budget(c.k->deltaenc, static_cast<size_t>(D), key, k_hat,
                                                               mask, stream + start, &p, static_cast<size_t>(budget));
    a.dk_end[row] = static_cast<int32_t>(start + static_cast<int64_t>(n));
    if ((t + 1) % DLM_CKPT_STRIDE == 0)
      std::memcpy(a.k_ckpt + ((t + 1) / DLM_CKPT_STRIDE * Hkv + g) * D, k_hat, sizeof(float) * D);
  }
}

}  // namespace

extern "C" {

int64_t dlm_band_width(int64_t seq_len, float gamma, int64_t w_max, int64_t w_decode) {
  if (seq_len == 1) return w_decode;
  const int64_t w = static_cast<int64_t>(std::floor(static_cast<double>(gamma) * static_cast<double>(seq_len)));
  return std::max<int64_t>(1, std::min(w, w_max));
}

int64_t dlm_cache_row_bytes(int64_t format, int64_t head_dim) {
  if (head_dim < 1) return 0;
  switch (format) {
    case DLM_FMT_F32: return 4 * head_dim;
    case DLM_FMT_F16: return 2 * head_dim;
    case DLM_FMT_Q8_0: return head_dim % 32 ? 0 : head_dim / 32 * static_cast<int64_t>(dlm::kQ8Bytes);
    case DLM_FMT_Q4_0: return head_dim % 32 ? 0 : head_dim / 32 * static_cast<int64_t>(dlm::kQ4Bytes);
    default: return 0;
  }
}

int64_t dlm_ckpt_len(int64_t max_len) { return std::max<int64_t>(0, max_len) / DLM_CKPT_STRIDE + 1; }

int64_t dlm_ring_len(int64_t max_seq_len, float gamma, int64_t w_max, int64_t w_decode) {
  return std::max(dlm_band_width(std::max<int64_t>(2, max_seq_len), gamma, w_max, w_decode), w_decode);
}

int dlm_delta_attention_f32(const dlm_attn_args* a, char* err, size_t len) {
  if (!a) return fail(err, len, "null arguments");
  if (!a->q || !a->k || !a->v || !a->k_ring || !a->k_sink || !a->v_cache || !a->dk_mask || !a->dk_val ||
      !a->dk_end || !a->k_hat || !a->k_ckpt || !a->out)
    return fail(err, len, "null tensor");
  if (const int rc = check_shape_args(*a, err, len)) return rc;
  if (const int rc = check_format(a->v_format, "v_cache", a->head_dim, err, len)) return rc;
  if (!(a->theta >= 0.0f) || !std::isfinite(a->theta)) return fail(err, len, "theta must be finite and >= 0");
  if (!(a->gamma >= 0.0f && a->gamma <= 1.0f)) return fail(err, len, "gamma must be in [0, 1]");
  if (a->w_max < 1 || a->w_decode < 1) return fail(err, len, "w_max and w_decode must be >= 1");
  if (a->layer >= DLM_MAX_LAYERS) return fail(err, len, "layer index too large for the counters");
  const int64_t band = dlm_band_width(a->seq_len, a->gamma, a->w_max, a->w_decode);
  if (a->ring_len < 1 || a->ring_len < std::min(band - 1, a->start_pos)) {   // earlier keys the band reads
    char msg[220];
    std::snprintf(msg, sizeof msg, "the key ring holds %lld keys, fewer than the %lld earlier keys this call's "
                  "exact band reads: the ring must be >= dlm_ring_len(max_seq_len, ...)",
                  static_cast<long long>(a->ring_len), static_cast<long long>(std::min(band - 1, a->start_pos)));
    return fail(err, len, msg);
  }
  if (a->max_len > INT32_MAX / a->head_dim)   // dk_end holds offsets into a stream of at most T·D values
    return fail(err, len, "max context x head_dim must be < 2^31 (the ΔK value stream's offsets are int32)");
  const int64_t D = a->head_dim, Hkv = a->n_kv_heads, rows = stream_rows(*a);
  const int64_t per_key = rows <= a->max_len ? dlm_dk_per_key(a->max_len, D, rows) : 0;
  if (per_key < 1) {
    char msg[200];
    std::snprintf(msg, sizeof msg, "dk_val holds %lld rows per kv head; for max context %lld it needs %lld to %lld "
                  "(dlm_dk_rows)", static_cast<long long>(rows), static_cast<long long>(a->max_len),
                  static_cast<long long>(dlm_dk_rows(a->max_len, D, 1)), static_cast<long long>(a->max_len));
    return fail(err, len, msg);
  }
  const Kernels& k = dlm::kernels();
  if (a->start_pos == 0) {
    std::memset(a->k_hat, 0, sizeof(float) * Hkv * D);
    std::memcpy(a->k_sink, a->k, sizeof(float) * Hkv * D);
  }
  store_rows(k, a->v_format, *a, a->v, a->v_cache);   // the new values into the V cache
  EncCtx enc{a, &k, per_key};
  if (a->seq_len >= kParallelEncodeMin && Hkv > 1) {   // each kv head's chain over the keys is its own
    if (a->parallel) {
      a->parallel(a->pool_ctx, static_cast<size_t>(Hkv), encode_head, &enc);
    } else {
      dlm::run_on_task_pool(static_cast<size_t>(Hkv), encode_head, &enc);
    }
  } else {
    for (int64_t g = 0; g < Hkv; g++) encode_head(&enc, static_cast<size_t>(g));
  }
  run_tiles(*a, k, band);
  count(*a, band);
  return DLM_OK;
}

int dlm_dense_attention_f32(const dlm_dense_args* d, char* err, size_t len) {
  if (!d) return fail(err, len, "null arguments");
  if (!d->q || !d->k || !d->v || !d->k_cache || !d->v_cache || !d->out) return fail(err, len, "null tensor");
  // The same tiles with a band covering every key and the K cache as a ring of max_len slots
  // (key j in slot j): no sparse part, no ΔK state.
  dlm_attn_args a{};
  a.q = d->q;
  a.k = d->k;
  a.v = d->v;
  a.k_ring = nullptr;   // every key from the K cache
  a.v_cache = d->v_cache;
  a.out = d->out;
  a.seq_len = d->seq_len;
  a.n_heads = d->n_heads;
  a.n_kv_heads = d->n_kv_heads;
  a.head_dim = d->head_dim;
  a.max_len = d->max_len;
  a.ring_len = d->max_len;
  a.v_format = d->v_format;
  a.start_pos = d->start_pos;
  a.layer = -1;
  a.parallel = d->parallel;
  a.pool_ctx = d->pool_ctx;
  if (const int rc = check_shape_args(a, err, len)) return rc;
  if (const int rc = check_format(d->k_format, "k_cache", a.head_dim, err, len)) return rc;
  if (const int rc = check_format(d->v_format, "v_cache", a.head_dim, err, len)) return rc;
  const Kernels& k = dlm::kernels();
  store_rows(k, a.v_format, a, a.v, a.v_cache);   // the new values into the V cache
  // This call's keys are stored (rounded like V in fp16 or a q format) before the tiles, which read
  // every key from the cache: one answer whatever the chunking.
  store_rows(k, d->k_format, a, a.k, d->k_cache);
  run_tiles(a, k, a.start_pos + a.seq_len, d->k_cache, d->k_format);
  return DLM_OK;
}

}  // extern "C"
