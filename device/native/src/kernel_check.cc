#include "kernel_check.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include <deltaattn.h>

namespace dlm {

namespace {

template <typename T>
bool read(std::ifstream& f, T* v, size_t n = 1) {
  return static_cast<bool>(f.read(reinterpret_cast<char*>(v), static_cast<std::streamsize>(sizeof(T) * n)));
}

}  // namespace

Status KernelCheck(const std::string& cases_path, const std::string& out_path, bool force_scalar,
                   std::string* arch) {
  std::ifstream f(cases_path, std::ios::binary);
  char magic[4];
  int32_t count = 0;
  if (!f || !read(f, magic, 4) || std::memcmp(magic, "DLMK", 4) != 0 || !read(f, &count))
    return Status::BadInput(cases_path + ": not a kernel-check cases file");
  dlm_force_scalar(force_scalar ? 1 : 0);
  *arch = dlm_kernel_arch();
  std::ofstream out(out_path + ".tmp", std::ios::binary);
  for (int32_t c = 0; c < count; c++) {
    // n, H, Hkv, D, T, w_max, w_decode, chunks, V format (DLM_FMT_*), kind (0 delta, else dense with a
    // K cache of format kind − 1), rows of each kv head's ΔK value stream (0: T, every non-zero; fewer:
    // a budget, dlm_dk_rows)
    int64_t h[11];
    if (!read(f, h, 11) || h[7] < 1 || h[7] > 4096 || h[8] < DLM_FMT_F32 || h[8] > DLM_FMT_Q4_0 || h[9] < 0 ||
        h[9] > DLM_FMT_Q4_0 + 1 || h[10] < 0 || h[10] > h[4])
      return Status::BadInput(cases_path + ": truncated case header");
    const int64_t n = h[0], H = h[1], Hkv = h[2], D = h[3], T = h[4];
    std::vector<int64_t> chunks(static_cast<size_t>(h[7]));
    float tg[2];
    if (!read(f, chunks.data(), chunks.size()) || !read(f, tg, 2)) return Status::BadInput(cases_path + ": truncated");
    std::vector<float> q(n * H * D), k(n * Hkv * D), v(n * Hkv * D), o(n * H * D);
    if (!read(f, q.data(), q.size()) || !read(f, k.data(), k.size()) || !read(f, v.data(), v.size()))
      return Status::BadInput(cases_path + ": truncated tensors");
    int64_t longest = 1;
    for (int64_t len : chunks) longest = std::max(longest, len);
    const int64_t R = dlm_ring_len(longest, tg[1], h[5], h[6]);   // as an export sizes it
    std::vector<float> kr(R * Hkv * D), ks(Hkv * D), kh(Hkv * D), kc(dlm_ckpt_len(T) * Hkv * D);
    // the K and V caches, in bytes (fp32 rows are the largest of every format)
    std::vector<float> kcache(T * Hkv * D), vcache(T * Hkv * D);
    std::vector<uint8_t> dm(T * Hkv * D / 8);
    std::vector<uint16_t> dv((h[10] ? h[10] : T) * Hkv * D);
    std::vector<int32_t> dn(T * Hkv);
    dlm_stats_reset();
    // The fields both entry points' arguments share (the dense one: every key exact, K and V caches
    // of T rows, no ΔK state).
    const auto shared_fields = [&](auto& a, int64_t pos, int64_t len) {
      a.q = q.data() + pos * H * D;
      a.k = k.data() + pos * Hkv * D;
      a.v = v.data() + pos * Hkv * D;
      a.v_format = h[8];
      a.v_cache = vcache.data();
      a.out = o.data() + pos * H * D;
      a.seq_len = len;
      a.n_heads = H;
      a.n_kv_heads = Hkv;
      a.head_dim = D;
      a.max_len = T;
      a.start_pos = pos;
    };
    int64_t pos = 0;
    for (int64_t len : chunks) {
      char err[256] = {0};
      int rc;
      if (h[9] > 0) {
        dlm_dense_args a{};
        shared_fields(a, pos, len);
        a.k_format = h[9] - 1;
        a.k_cache = kcache.data();
        rc = dlm_dense_attention_f32(&a, err, sizeof err);
      } else {
        dlm_attn_args a{};
        shared_fields(a, pos, len);
        a.k_ring = kr.data();
        a.k_sink = ks.data();
        a.dk_mask = dm.data();
        a.dk_val = dv.data();
        a.dk_end = dn.data();
        a.dk_rows = h[10];
        a.k_hat = kh.data();
        a.k_ckpt = kc.data();
        a.ring_len = R;
        a.theta = tg[0];
        a.gamma = tg[1];
        a.w_max = h[5];
        a.w_decode = h[6];
        a.layer = 0;
        rc = dlm_delta_attention_f32(&a, err, sizeof err);
      }
      if (rc != DLM_OK) return Status::BadInput("case " + std::to_string(c) + ": " + err);
      pos += len;
    }
    out.write(reinterpret_cast<const char*>(o.data()), static_cast<std::streamsize>(o.size() * sizeof(float)));
    for (int phase = 0; phase < 2; phase++) {
      dlm_counts cnt{};
      dlm_stats_read(0, phase, &cnt);
      const uint64_t row[5] = {cnt.dk_zeros, cnt.dk_elements, cnt.macs_performed, cnt.macs_dense, cnt.calls};
      out.write(reinterpret_cast<const char*>(row), sizeof row);
    }
  }
  out.close();
  if (!out || std::rename((out_path + ".tmp").c_str(), out_path.c_str()) != 0)
    return Status::Runtime(out_path + ": write failed");
  return Status::Ok();
}

}  // namespace dlm
