// Delta attention (DeltaLLM temporal sparsity): the C core shared by the ExecuTorch kernel
// (deltaattn_executorch.cc) and the eager PyTorch wrapper (ctypes, delegates/kernel.py).
// Plain C ABI so native callers (Android JNI, C runners) can use it and read the counters.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DLM_OK 0
#define DLM_ERR_INVALID 1

// Runs task(task_ctx, i) for i in [0, n); may run them in parallel. NULL: the core's own task pool
// (dlm_set_num_threads; one thread, i.e. serial, unless set).
typedef void (*dlm_task_fn)(void* task_ctx, size_t i);
typedef void (*dlm_parallel_fn)(void* pool_ctx, size_t n, dlm_task_fn task, void* task_ctx);

// One forward call of one layer. Tensors are contiguous, batch 1 (T = max context, R = ring length):
//   q [S, H, D] f32, k/v [S, Hkv, D] f32                 (inputs, post-RoPE)
//   state, updated in place:
//   k_ring [R, Hkv, D] f32      raw keys of the last R positions (key j in slot j % R), for the exact band
//   k_sink [Hkv, D] f32         key 0 (the attention sink: its score is always exact)
//   v_cache [Hkv, T, row]       head-major (each kv head's values one contiguous stream, which the
//                               hardware prefetchers follow), in v_format (DLM_FMT_*): f32, fp16
//                               (rounded to nearest even, clamped to ±65504 as stored), q8_0 or q4_0
//                               (quantized as stored); row = dlm_cache_row_bytes
//   dk_mask [T, Hkv, D/8] u8    bit c%8 of byte c/8: element c of Δk is non-zero
//   dk_val [Hkv, P, D] fp16     per kv head one stream of packed non-zeros: key t's non-zeros, in
//                               element order, follow key t−1's. P = dk_rows rows of D values: T
//                               (every non-zero stored) or fewer, which sets a budget (dlm_dk_rows)
//   dk_end [T, Hkv] i32         end of key t's non-zeros in its head's stream (start: dk_end[t−1], 0
//                               for t = 0; its count is the difference)
//   k_hat [Hkv, D] f32          reference key; advances by exactly the stored (fp16) deltas
//   k_ckpt [C, Hkv, D] f32      k̂ after positions c·DLM_CKPT_STRIDE − 1 (slot c ≥ 1; C = dlm_ckpt_len(T)):
//                               where a split of the keys (decode) starts its prefix sums
//   out [S, H, D] f32
// head_dim must be a multiple of 8; R must be >= the call's band width.
// Cache formats of a V cache (both programs) and a dense program's K cache: how each row of head_dim
// values (one key or value of one kv head) is stored. The q formats are llama.cpp's block layouts
// (32 elements per block with an fp16 scale; head_dim a multiple of 32), see ukernels/qblocks.h.
#define DLM_FMT_F32 0
#define DLM_FMT_F16 1
#define DLM_FMT_Q8_0 2   // 34 bytes per 32 elements
#define DLM_FMT_Q4_0 3   // 18 bytes per 32 elements
// Bytes of one row of head_dim values in a format; 0 if the format is unknown or head_dim does not fit it.
int64_t dlm_cache_row_bytes(int64_t format, int64_t head_dim);

typedef struct dlm_attn_args {
  const float* q;
  const float* k;
  const float* v;
  float* k_ring;
  float* k_sink;
  void* v_cache;
  uint8_t* dk_mask;
  uint16_t* dk_val;
  int32_t* dk_end;
  float* k_hat;
  float* k_ckpt;
  float* out;
  int64_t seq_len;      // S
  int64_t n_heads;      // H
  int64_t n_kv_heads;   // Hkv
  int64_t head_dim;     // D
  int64_t max_len;      // T
  int64_t ring_len;     // R
  int64_t v_format;     // v_cache's format, DLM_FMT_* (0: fp32, 1: fp16)
  int64_t start_pos;
  float theta;
  float gamma;
  int64_t w_max;
  int64_t w_decode;
  int64_t layer;        // counter slot; < 0: do not count
  dlm_parallel_fn parallel;
  void* pool_ctx;
  int64_t dk_rows;      // P, rows of dk_val per kv head (1..T); 0: T
} dlm_attn_args;

// The ΔK value stream's budget. Key 0 stores its D values; every later key earns per_key values
// (1..D) and stores at most min(D, what it and the keys before it earned and did not use): key t's
// budget is min(D, D + t·per_key − dk_end[t−1]). A key with more non-zeros than its budget stores
// the largest |Δ| up to it (ties: the lower element) and defers the others: k̂ does not advance
// there, so they stay in the next keys' Δ (error feedback: nothing is lost, but |k − k̂| may exceed
// θ until they are stored). per_key = D stores every non-zero. Rows of D values a stream with that
// budget needs for max context T (the values, plus the D the encoder may write and a kernel may read
// from the last key's start; T if per_key = D):
int64_t dlm_dk_rows(int64_t max_len, int64_t head_dim, int64_t per_key);
// The budget (values per key) a stream of `rows` rows gives: D if rows >= T, 0 if too short for 1.
int64_t dlm_dk_per_key(int64_t max_len, int64_t head_dim, int64_t rows);

// Returns DLM_OK, or DLM_ERR_INVALID with a message in err (if err != NULL).
int dlm_delta_attention_f32(const dlm_attn_args* args, char* err, size_t err_len);

// Dense (exact) attention on the same tiles: every key exact, no ΔK state. The program's dense
// attention core (attention.kind=dense, attention.dense_kernel=deltallm):
//   q [S, H, D] f32, k/v [S, Hkv, D] f32; k_cache and v_cache [Hkv, T, row] (head-major) in k_format /
//   v_format (DLM_FMT_*), updated in place at [start_pos, start_pos + S) (this call's keys are stored
//   before the scores, so a rounded key is rounded alike whatever the chunking); with a
//   quantized K cache the queries are quantized too (ukernels/qblocks.h); out [S, H, D] f32.
typedef struct dlm_dense_args {
  const float* q;
  const float* k;
  const float* v;
  void* k_cache;
  void* v_cache;
  float* out;
  int64_t seq_len;
  int64_t n_heads;
  int64_t n_kv_heads;
  int64_t head_dim;
  int64_t max_len;
  int64_t v_format;     // DLM_FMT_*
  int64_t k_format;     // DLM_FMT_*
  int64_t start_pos;
  dlm_parallel_fn parallel;
  void* pool_ctx;
} dlm_dense_args;

int dlm_dense_attention_f32(const dlm_dense_args* args, char* err, size_t err_len);

// Keys per split: a call with at most 8 query rows per kv head (decode) and more than one split of
// keys runs one task per (kv head, split), then merges the splits' softmax partials, so a few kv
// heads still keep every thread busy. Slots of k_ckpt a program needs for max context T.
#define DLM_CKPT_STRIDE 256
int64_t dlm_ckpt_len(int64_t max_len);

// The state buffers not indexed by position: the reference key k̂ and the ring of raw keys. All
// else a call writes lives at the positions it was given, so a runner that moves back to an earlier
// position (a chat that rewinds) restores only these two, from a copy it took there; the k̂
// checkpoints alone cannot restore the ring (device/native/src/llm_session.cc).
#define DLM_RUNNING_STATE_NAMES {"k_hat", "k_ring"}

// Band width of a call with seq_len new tokens (see delegates/reference.py).
int64_t dlm_band_width(int64_t seq_len, float gamma, int64_t w_max, int64_t w_decode);
// The ring a program needs: the widest band of any call of at most max_seq_len tokens.
int64_t dlm_ring_len(int64_t max_seq_len, float gamma, int64_t w_max, int64_t w_decode);

// ---- sparsity counters, per layer and phase (0 = prefill, 1 = decode), process-wide.
#define DLM_PHASE_PREFILL 0
#define DLM_PHASE_DECODE 1
#define DLM_MAX_LAYERS 256
typedef struct dlm_counts {
  uint64_t dk_zeros;
  uint64_t dk_elements;
  uint64_t macs_performed;
  uint64_t macs_dense;
  uint64_t calls;
} dlm_counts;

int dlm_stats_read(int64_t layer, int phase, dlm_counts* out);  // DLM_OK or DLM_ERR_INVALID
int64_t dlm_stats_num_layers(void);                               // 1 + highest layer counted
void dlm_stats_reset(void);
// Threads of the core's own task pool (used when args->parallel is NULL): 1..256, default 1.
int dlm_set_num_threads(int n);                                   // DLM_OK or DLM_ERR_INVALID
int dlm_get_num_threads(void);
const char* dlm_kernel_arch(void);   // "avx2_fma", "neon+dot" (SDOT), "neon" or "scalar"
void dlm_force_scalar(int on);                                    // tests: pin the scalar variant

#ifdef __cplusplus
}
#endif
