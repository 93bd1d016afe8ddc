// ExecuTorch kernels deltallm::delta_attention.out and deltallm::dense_attention.out, over the C core,
// on ExecuTorch's threadpool.
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/extension/threadpool/threadpool.h>
#include <executorch/runtime/kernel/kernel_includes.h>

#include "deltaattn.h"

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

void et_parallel(void*, size_t n, dlm_task_fn task, void* task_ctx) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr || n <= 1) {
    for (size_t i = 0; i < n; i++) task(task_ctx, i);
    return;
  }
  pool->run([&](size_t i) { task(task_ctx, i); }, n);
}

bool is_f32(const Tensor& t) { return t.scalar_type() == ScalarType::Float; }
bool is_i32(const Tensor& t) { return t.scalar_type() == ScalarType::Int; }
bool is_u8(const Tensor& t) { return t.scalar_type() == ScalarType::Byte; }
bool is_f16(const Tensor& t) { return t.scalar_type() == ScalarType::Half; }

// A cache tensor's format (DLM_FMT_*) from its dtype and last dimension for head_dim D: float32 or
// float16 [.., D], or uint8 rows of q8_0 / q4_0 blocks [.., dlm_cache_row_bytes]; -1 if none fits.
int64_t cache_format(const Tensor& t, int64_t D) {
  const int64_t last = t.size(t.dim() - 1);
  if (is_f32(t)) return last == D ? DLM_FMT_F32 : -1;
  if (is_f16(t)) return last == D ? DLM_FMT_F16 : -1;
  if (!is_u8(t)) return -1;
  for (int64_t f : {DLM_FMT_Q8_0, DLM_FMT_Q4_0})
    if (last == dlm_cache_row_bytes(f, D)) return f;
  return -1;
}

void* cache_data(Tensor& t) {
  if (is_f32(t)) return t.mutable_data_ptr<float>();
  if (is_f16(t)) return t.mutable_data_ptr<executorch::aten::Half>();
  return t.mutable_data_ptr<uint8_t>();
}


// Returns an error message or nullptr. Shapes (batch 1): q [1,S,H,D]; k, v [1,S,Hkv,D];
// k_ring [1,R,Hkv,D] f32; k_sink [1,Hkv,D] f32; v_cache [1,Hkv,T,row] (cache_format, head-major); dk_mask [1,T,Hkv,D/8] u8;
// dk_val [1,Hkv,P,D] f16 (a stream per kv head, P <= T rows: dlm_dk_rows); dk_end [1,T,Hkv] i32;
// k_hat [1,Hkv,D] f32; k_ckpt [1,dlm_ckpt_len(T),Hkv,D] f32.
const char* check_shapes(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kr, const Tensor& ks,
                         const Tensor& vc, const Tensor& dm, const Tensor& dv, const Tensor& dn, const Tensor& kh,
                         const Tensor& kc) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return "q, k and v must have rank 4 [1, S, heads, head_dim]";
  if (kr.dim() != 4 || vc.dim() != 4 || dm.dim() != 4 || dv.dim() != 4)
    return "k_ring, v_cache, dk_mask and dk_val must have rank 4 ([1, length, kv_heads, head_dim]; dk_val "
           "[1, kv_heads, length, head_dim])";
  if (ks.dim() != 3 || dn.dim() != 3 || kh.dim() != 3) return "k_sink, dk_end and k_hat must have rank 3";
  if (!is_f32(q) || !is_f32(k) || !is_f32(v) || !is_f32(kr) || !is_f32(ks) || !is_f32(kh))
    return "q, k, v, k_ring, k_sink and k_hat must be float32";
  if (!is_u8(dm) || !is_f16(dv) || !is_i32(dn)) return "dk_mask must be uint8, dk_val float16, dk_end int32";
  if (q.size(0) != 1 || k.size(0) != 1 || v.size(0) != 1) return "batch size must be 1";
  const auto S = q.size(1), D = q.size(3), Hkv = k.size(2), T = vc.size(2);
  if (k.size(1) != S || v.size(1) != S) return "q, k and v must have the same sequence length";
  if (D % 8 != 0) return "head_dim must be a multiple of 8";
  if (cache_format(vc, D) < 0) return "v_cache must be float32 or float16 [.., head_dim], or uint8 q8_0 / q4_0 blocks";
  if (k.size(3) != D || v.size(3) != D || kr.size(3) != D || ks.size(2) != D ||
      dm.size(3) != D / 8 || dv.size(3) != D || kh.size(2) != D)
    return "head_dim mismatch between q, k, v and the state";
  if (v.size(2) != Hkv || kr.size(2) != Hkv || ks.size(1) != Hkv || vc.size(1) != Hkv || dm.size(2) != Hkv ||
      dv.size(1) != Hkv || dn.size(2) != Hkv || kh.size(1) != Hkv)
    return "kv head count mismatch between k, v and the state";
  if (q.size(2) % Hkv != 0) return "query heads must be a multiple of kv heads";
  if (dm.size(1) != T || dn.size(1) != T) return "v_cache, dk_mask and dk_end must have the same max context length";
  if (dv.size(2) < 1 || dv.size(2) > T) return "dk_val must have 1 to max context rows per kv head (dlm_dk_rows)";
  if (kc.dim() != 4 || !is_f32(kc) || kc.size(0) != 1 || kc.size(1) != dlm_ckpt_len(T) || kc.size(2) != Hkv ||
      kc.size(3) != D)
    return "k_ckpt must be float32 [1, dlm_ckpt_len(max context), kv_heads, head_dim]";
  return nullptr;
}

Tensor& delta_attention_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                            Tensor& k_ring, Tensor& k_sink, Tensor& v_cache, Tensor& dk_mask, Tensor& dk_val,
                            Tensor& dk_end, Tensor& k_hat, Tensor& k_ckpt, int64_t start_pos, double theta,
                            double gamma, int64_t w_max, int64_t w_decode, int64_t layer, Tensor& out) {
  const char* bad = check_shapes(q, k, v, k_ring, k_sink, v_cache, dk_mask, dk_val, dk_end, k_hat, k_ckpt);
  ET_KERNEL_CHECK_MSG(ctx, bad == nullptr, InvalidArgument, out, "deltallm::delta_attention: %s", bad ? bad : "");
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out,
                      "deltallm::delta_attention: cannot resize out");
  ET_KERNEL_CHECK_MSG(ctx, is_f32(out), InvalidArgument, out, "deltallm::delta_attention: out must be float32");
  dlm_attn_args a{};
  a.q = q.const_data_ptr<float>();
  a.k = k.const_data_ptr<float>();
  a.v = v.const_data_ptr<float>();
  a.k_ring = k_ring.mutable_data_ptr<float>();
  a.k_sink = k_sink.mutable_data_ptr<float>();
  a.v_format = cache_format(v_cache, q.size(3));
  a.v_cache = cache_data(v_cache);
  a.dk_mask = dk_mask.mutable_data_ptr<uint8_t>();
  a.dk_val = reinterpret_cast<uint16_t*>(dk_val.mutable_data_ptr<executorch::aten::Half>());
  a.dk_rows = dk_val.size(2);   // the core checks it against the max context
  a.dk_end = dk_end.mutable_data_ptr<int32_t>();
  a.k_hat = k_hat.mutable_data_ptr<float>();
  a.k_ckpt = k_ckpt.mutable_data_ptr<float>();
  a.out = out.mutable_data_ptr<float>();
  a.seq_len = q.size(1);
  a.n_heads = q.size(2);
  a.n_kv_heads = k.size(2);
  a.head_dim = q.size(3);
  a.max_len = v_cache.size(2);
  a.ring_len = k_ring.size(1);
  a.start_pos = start_pos;
  a.theta = static_cast<float>(theta);
  a.gamma = static_cast<float>(gamma);
  a.w_max = w_max;
  a.w_decode = w_decode;
  a.layer = layer;
  a.parallel = et_parallel;
  char err[256] = {0};
  const int rc = dlm_delta_attention_f32(&a, err, sizeof err);
  ET_KERNEL_CHECK_MSG(ctx, rc == DLM_OK, InvalidArgument, out, "%s", err);
  return out;
}

// Dense attention: q [1,S,H,D]; k, v [1,S,Hkv,D]; k_cache and v_cache [1,Hkv,T,row], each f32 or f16
// (row = D) or q8_0 / q4_0 blocks (uint8, row = dlm_cache_row_bytes).
Tensor& dense_attention_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                            Tensor& k_cache, Tensor& v_cache, int64_t start_pos, Tensor& out) {
  const char* bad = nullptr;
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || k_cache.dim() != 4 || v_cache.dim() != 4)
    bad = "q, k, v, k_cache and v_cache must have rank 4 [1, length, heads, head_dim]";
  else if (!is_f32(q) || !is_f32(k) || !is_f32(v))
    bad = "q, k and v must be float32";
  else if (cache_format(k_cache, q.size(3)) < 0 || cache_format(v_cache, q.size(3)) < 0)
    bad = "k_cache and v_cache must each be float32 or float16 [.., head_dim], or uint8 q8_0 / q4_0 blocks "
          "[.., head_dim/32 * 34 or 18]";
  else if (q.size(0) != 1 || k.size(0) != 1 || v.size(0) != 1)
    bad = "batch size must be 1";
  else if (k.size(1) != q.size(1) || v.size(1) != q.size(1))
    bad = "q, k and v must have the same sequence length";
  else if (k.size(3) != q.size(3) || v.size(3) != q.size(3))
    bad = "head_dim mismatch between q, k and v";
  else if (v.size(2) != k.size(2) || k_cache.size(1) != k.size(2) || v_cache.size(1) != k.size(2))
    bad = "kv head count mismatch between k, v and the caches [1, kv_heads, max context, row]";
  else if (k_cache.size(2) != v_cache.size(2))
    bad = "k_cache and v_cache must have the same max context length";
  ET_KERNEL_CHECK_MSG(ctx, bad == nullptr, InvalidArgument, out, "deltallm::dense_attention: %s", bad ? bad : "");
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out,
                      "deltallm::dense_attention: cannot resize out");
  ET_KERNEL_CHECK_MSG(ctx, is_f32(out), InvalidArgument, out, "deltallm::dense_attention: out must be float32");
  dlm_dense_args a{};
  a.q = q.const_data_ptr<float>();
  a.k = k.const_data_ptr<float>();
  a.v = v.const_data_ptr<float>();
  a.k_format = cache_format(k_cache, q.size(3));
  a.k_cache = cache_data(k_cache);
  a.v_format = cache_format(v_cache, q.size(3));
  a.v_cache = cache_data(v_cache);
  a.out = out.mutable_data_ptr<float>();
  a.seq_len = q.size(1);
  a.n_heads = q.size(2);
  a.n_kv_heads = k.size(2);
  a.head_dim = q.size(3);
  a.max_len = k_cache.size(2);
  a.start_pos = start_pos;
  a.parallel = et_parallel;
  char err[256] = {0};
  const int rc = dlm_dense_attention_f32(&a, err, sizeof err);
  ET_KERNEL_CHECK_MSG(ctx, rc == DLM_OK, InvalidArgument, out, "%s", err);
  return out;
}

}  // namespace

EXECUTORCH_LIBRARY(deltallm, "delta_attention.out", delta_attention_out);
EXECUTORCH_LIBRARY(deltallm, "dense_attention.out", dense_attention_out);
