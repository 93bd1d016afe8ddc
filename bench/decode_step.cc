// One decode step of our attention kernels, timed natively over the core's C API
// (libdeltallm_core.so, the library the eager op and the runtime call): no Python between calls.
// bench/attention.py runs it for its decode rows; built by bench/native_timer.py.
//
//   decode_step KIND V_FORMAT CTX HEADS KV_HEADS HEAD_DIM LAYERS THREADS REPS THETA GAMMA QKV [OUT]
//
// KIND: dense (dlm_dense_attention_f32 with an fp32 K cache), dense_f16k / dense_q8_0k / dense_q4_0k
// (the same with an fp16 / q8_0 / q4_0 K cache) or delta (dlm_delta_attention_f32, w_max 2^20, W_d 4).
// V_FORMAT: the V cache's format, fp32 | fp16 | q8_0 | q4_0 (or 0 / 1 for fp32 / fp16).
// QKV: raw float32 q [CTX, HEADS, D], then k and v [CTX, KV_HEADS, D]. Each of LAYERS states gets a
// prefill of the first CTX − 1 tokens, then one step at position CTX − 1 is timed per layer, the
// layers in turn (LAYERS > 1: the states come from memory, as in a model; 1: cache-resident).
// The step repeats at the same position: dense's update is idempotent, delta's reference key is
// restored (untimed) first. Prints one JSON object: the median ms per layer and the decode
// counters. OUT: the last step's output (float32 [HEADS, D]), for tests.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "deltaattn.h"

namespace {

struct Layer {
  std::vector<float> k_ring, k_sink, k_hat, k_hat0, k_ckpt;
  std::vector<uint16_t> dk_val;
  std::vector<uint8_t> kc, vc;   // the K (dense) and V caches, in their formats
  std::vector<uint8_t> dk_mask;
  std::vector<int32_t> dk_end;
};

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "decode_step: %s\n", msg.c_str());
  std::exit(2);
}

int64_t format_of(const std::string& s, const char* what) {
  const char* names[] = {"fp32", "fp16", "q8_0", "q4_0"};
  for (int64_t f = 0; f < 4; f++)
    if (s == names[f]) return f;
  if (s == "0" || s == "1") return s == "1";
  die(std::string(what) + " must be fp32, fp16, q8_0 or q4_0, got '" + s + "'");
}

const char* format_name(int64_t f) {
  const char* names[] = {"fp32", "fp16", "q8_0", "q4_0"};
  return names[f];
}

int64_t positive(const char* s, const char* what) {
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (*end || v < 1) die(std::string(what) + " must be a positive integer, got '" + s + "'");
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 13 && argc != 14)
    die("usage: decode_step KIND V_FORMAT CTX HEADS KV_HEADS HEAD_DIM LAYERS THREADS REPS THETA GAMMA QKV [OUT]");
  const std::string kind = argv[1];
  const bool delta = kind == "delta";
  int64_t kf = DLM_FMT_F32;
  if (kind == "dense_f16k")
    kf = DLM_FMT_F16;
  else if (kind == "dense_q8_0k")
    kf = DLM_FMT_Q8_0;
  else if (kind == "dense_q4_0k")
    kf = DLM_FMT_Q4_0;
  else if (kind != "dense" && !delta)
    die("KIND must be dense, dense_f16k, dense_q8_0k, dense_q4_0k or delta, got '" + kind + "'");
  const int64_t vf = format_of(argv[2], "V_FORMAT");
  const int64_t T = positive(argv[3], "CTX"), H = positive(argv[4], "HEADS"), Hkv = positive(argv[5], "KV_HEADS");
  const int64_t D = positive(argv[6], "HEAD_DIM"), L = positive(argv[7], "LAYERS");
  const int64_t threads = positive(argv[8], "THREADS"), reps = positive(argv[9], "REPS");
  const float theta = std::strtof(argv[10], nullptr), gamma = std::strtof(argv[11], nullptr);
  if (T < 2) die("CTX must be >= 2 (a prefill, then the timed step)");
  const int64_t k_row = dlm_cache_row_bytes(kf, D), v_row = dlm_cache_row_bytes(vf, D);
  if (k_row == 0 || v_row == 0) die("q8_0 and q4_0 need HEAD_DIM to be a multiple of 32");
  if (dlm_set_num_threads(static_cast<int>(threads)) != DLM_OK) die("THREADS out of range");

  std::vector<float> qkv(static_cast<size_t>(T * (H + 2 * Hkv) * D));
  FILE* f = std::fopen(argv[12], "rb");
  if (!f) die(std::string("cannot open ") + argv[12]);
  const size_t got = std::fread(qkv.data(), sizeof(float), qkv.size(), f);
  const bool extra = std::fgetc(f) != EOF;
  std::fclose(f);
  if (got != qkv.size() || extra) die("QKV must hold CTX x (HEADS + 2 KV_HEADS) x HEAD_DIM float32 values");
  const float* q = qkv.data();
  const float* k = q + T * H * D;
  const float* v = k + T * Hkv * D;
  std::vector<float> out(static_cast<size_t>(T * H * D));

  constexpr int64_t kWMax = 1 << 20, kWDecode = 4;
  const int64_t R = delta ? dlm_ring_len(T, gamma, kWMax, kWDecode) : T;
  std::vector<Layer> layers(static_cast<size_t>(L));
  char err[256] = {0};
  const auto call = [&](Layer& s, int64_t start, int64_t n, int64_t layer) {
    const float *qs = q + start * H * D, *ks = k + start * Hkv * D, *vs = v + start * Hkv * D;
    void* vc = s.vc.data();
    int rc;
    if (delta) {
      dlm_attn_args a{qs, ks, vs, s.k_ring.data(), s.k_sink.data(), vc, s.dk_mask.data(), s.dk_val.data(),
                      s.dk_end.data(), s.k_hat.data(), s.k_ckpt.data(), out.data(), n, H, Hkv, D, T, R, vf,
                      start, theta, gamma, kWMax, kWDecode, layer, nullptr, nullptr};
      rc = dlm_delta_attention_f32(&a, err, sizeof err);
    } else {
      dlm_dense_args a{qs, ks, vs, s.kc.data(), vc, out.data(), n, H, Hkv, D, T, vf, kf, start, nullptr, nullptr};
      rc = dlm_dense_attention_f32(&a, err, sizeof err);
    }
    if (rc != DLM_OK) die(err);
  };
  for (int64_t i = 0; i < L; i++) {
    Layer& s = layers[static_cast<size_t>(i)];
    s.vc.resize(static_cast<size_t>(T * Hkv * v_row));
    if (!delta) s.kc.resize(static_cast<size_t>(T * Hkv * k_row));
    if (delta) {
      s.k_ring.resize(static_cast<size_t>(R * Hkv * D));
      s.k_sink.resize(static_cast<size_t>(Hkv * D));
      s.k_hat.resize(static_cast<size_t>(Hkv * D));
      s.k_ckpt.resize(static_cast<size_t>(dlm_ckpt_len(T) * Hkv * D));
      s.dk_val.resize(static_cast<size_t>(Hkv * T * D));
      s.dk_mask.resize(static_cast<size_t>(T * Hkv * D / 8));
      s.dk_end.resize(static_cast<size_t>(T * Hkv));
    }
    call(s, 0, T - 1, i);
    s.k_hat0 = s.k_hat;
  }
  dlm_stats_reset();
  std::vector<double> ms;
  const int64_t sweeps = L == 1 ? 20 * reps : reps;
  for (int64_t r = 0; r <= sweeps; r++) {   // sweep 0 warms up, untimed
    for (Layer& s : layers) std::copy(s.k_hat0.begin(), s.k_hat0.end(), s.k_hat.begin());
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < L; i++) call(layers[static_cast<size_t>(i)], T - 1, 1, i);
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) ms.push_back(t / static_cast<double>(L));
  }
  std::sort(ms.begin(), ms.end());
  dlm_counts c{};
  uint64_t zeros = 0, elements = 0, performed = 0, dense_macs = 0;
  for (int64_t i = 0; delta && i < L; i++) {
    dlm_stats_read(i, DLM_PHASE_DECODE, &c);
    zeros += c.dk_zeros;
    elements += c.dk_elements;
    performed += c.macs_performed;
    dense_macs += c.macs_dense;
  }
  if (argc == 14) {
    const std::string path = argv[13], tmp = path + ".tmp";   // temp file, then rename
    FILE* o = std::fopen(tmp.c_str(), "wb");
    if (!o || std::fwrite(out.data(), sizeof(float), static_cast<size_t>(H * D), o) != static_cast<size_t>(H * D))
      die("cannot write " + path);
    std::fclose(o);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) die("cannot write " + path);
  }
  // the state a step reads: every key and value row of the context (delta: its ΔK rows aside)
  const double state_bytes = static_cast<double>((T - 1) * Hkv * (v_row + (delta ? 0 : k_row)));
  std::printf("{\"kind\": \"%s\", \"v_fp16\": %d, \"k_format\": \"%s\", \"v_format\": \"%s\", "
              "\"kv_bytes\": %.0f, \"ms\": %.6f, \"ms_min\": %.6f, \"sweeps\": %lld, "
              "\"decode_s_m\": %.17g, \"decode_s_c\": %.17g, \"arch\": \"%s\"}\n",
              kind.c_str(), static_cast<int>(vf == DLM_FMT_F16), delta ? "dk" : format_name(kf), format_name(vf),
              state_bytes, ms[ms.size() / 2], ms.front(), static_cast<long long>(sweeps),
              elements ? static_cast<double>(zeros) / static_cast<double>(elements) : 0.0,
              dense_macs ? 1.0 - static_cast<double>(performed) / static_cast<double>(dense_macs) : 0.0,
              dlm_kernel_arch());
  return 0;
}
