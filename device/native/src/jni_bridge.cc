// libdeltallm_jni: the Android app's native library (and the host JVM tests'), a thin JNI layer
// over the runner core (llm_session.h, bench.h) and our tokenizer (tokenizer.h). The Java side is
// android_demo/app/src/main/java/org/deltallm/demo/LlmEngine.java and Tokenizer.java.
#include <jni.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <deltaattn.h>

#include "bench.h"
#include "llm_session.h"
#include "tokenizer.h"

namespace {

struct Engine {
  std::unique_ptr<dlm::LlmSession> session;
  std::atomic<bool> stop{false};
  int threads = 0;
};

void throw_llm(JNIEnv* env, const std::string& msg) {
  jclass cls = env->FindClass("org/deltallm/demo/LlmException");
  if (cls != nullptr) env->ThrowNew(cls, msg.c_str());
}

std::string to_string(JNIEnv* env, jstring s) {
  if (s == nullptr) return {};
  const char* c = env->GetStringUTFChars(s, nullptr);
  std::string out(c ? c : "");
  if (c) env->ReleaseStringUTFChars(s, c);
  return out;
}

std::vector<int64_t> to_ids(JNIEnv* env, jintArray a) {
  std::vector<int64_t> out;
  if (a == nullptr) return out;
  const jsize n = env->GetArrayLength(a);
  std::vector<jint> buf(static_cast<size_t>(n));
  env->GetIntArrayRegion(a, 0, n, buf.data());
  out.assign(buf.begin(), buf.end());
  return out;
}

Engine* engine(JNIEnv* env, jlong handle) {
  auto* e = reinterpret_cast<Engine*>(handle);
  if (e == nullptr) throw_llm(env, "the engine is closed");
  return e;
}

// S_m / S_c totals of one phase from the kernel's counters; NaN when nothing was counted.
void phase_totals(int phase, double* s_m, double* s_c) {
  unsigned long long z = 0, el = 0, p = 0, d = 0;
  for (int64_t l = 0; l < dlm_stats_num_layers(); l++) {
    dlm_counts c{};
    if (dlm_stats_read(l, phase, &c) != DLM_OK) continue;
    z += c.dk_zeros;
    el += c.dk_elements;
    p += c.macs_performed;
    d += c.macs_dense;
  }
  *s_m = el ? static_cast<double>(z) / el : NAN;
  *s_c = d ? 1.0 - static_cast<double>(p) / d : NAN;
}

jlongArray long_array(JNIEnv* env, const std::vector<jlong>& v) {
  jlongArray a = env->NewLongArray(static_cast<jsize>(v.size()));
  env->SetLongArrayRegion(a, 0, static_cast<jsize>(v.size()), v.data());
  return a;
}

}  // namespace

extern "C" {

// ---------------------------------------------------------------------------------------- engine
JNIEXPORT jlong JNICALL Java_org_deltallm_demo_LlmEngine_nativeLoad(JNIEnv* env, jclass, jstring pte,
                                                                    jint threads) {
  auto e = std::make_unique<Engine>();
  e->threads = dlm::SetThreads(threads);
  dlm::Status st = dlm::LlmSession::Load(to_string(env, pte), &e->session);
  if (!st.ok()) {
    throw_llm(env, st.message);
    return 0;
  }
  return reinterpret_cast<jlong>(e.release());
}

// [vocab, max_seq_len, max_context_len, n_layers, bos_id, delta_attention, threads, load_ms x1000, eos...]
JNIEXPORT jlongArray JNICALL Java_org_deltallm_demo_LlmEngine_nativeInfo(JNIEnv* env, jclass, jlong handle) {
  Engine* e = engine(env, handle);
  if (e == nullptr) return nullptr;
  const dlm::ProgramInfo& i = e->session->info();
  std::vector<jlong> v = {i.vocab_size, i.max_seq_len, i.max_context_len, i.n_layers, i.bos_id,
                          i.delta_attention ? 1 : 0, e->threads,
                          static_cast<jlong>(std::llround(e->session->load_ms() * 1000))};
  v.insert(v.end(), i.eos_ids.begin(), i.eos_ids.end());
  return long_array(env, v);
}

// Blocking: prefill + decode on the calling thread, each token to listener.onToken(int) (false stops).
// `prompt` is the whole chat so far: the session reuses what its cache holds (llm_session.h); when it
// would overflow the context, turns (turn_starts, after the first `keep` ids) are dropped oldest first.
// Returns [prompt_tokens, generated, ttft_ms, prefill_tps, decode_tps, peak_rss_mb,
//          s_m_prefill, s_c_prefill, s_m_decode, s_c_decode, stopped,
//          reused_tokens, prefilled_tokens, rewound_tokens, dropped_turns, dropped_tokens].
JNIEXPORT jdoubleArray JNICALL Java_org_deltallm_demo_LlmEngine_nativeGenerate(
    JNIEnv* env, jclass, jlong handle, jintArray prompt, jintArray turn_starts, jint keep, jint max_new,
    jfloat temperature, jlong seed, jboolean stop_at_eos, jobject listener) {
  Engine* e = engine(env, handle);
  if (e == nullptr) return nullptr;
  e->stop.store(false);
  jmethodID on_token = nullptr;
  if (listener != nullptr) {
    jclass cls = env->GetObjectClass(listener);
    on_token = env->GetMethodID(cls, "onToken", "(I)Z");
    if (on_token == nullptr) return nullptr;   // NoSuchMethodError pending
  }
  dlm::ContextFit fit;
  dlm::Status st = dlm::FitContext(to_ids(env, prompt), to_ids(env, turn_starts), keep,
                                   e->session->info().max_context_len, max_new, &fit);
  if (!st.ok()) {
    throw_llm(env, st.message);
    return nullptr;
  }
  dlm::GenerateRequest req;
  req.ids = std::move(fit.ids);
  req.max_new_tokens = fit.reserve;
  req.sample.temperature = temperature;
  req.sample.seed = static_cast<uint64_t>(seed);
  req.stop_at_eos = stop_at_eos == JNI_TRUE;
  req.keep = keep;
  dlm::ResetSparsity();
  dlm::Timings t;
  int64_t generated = 0;
  bool java_error = false;
  st = e->session->Generate(
      req,
      [&](int64_t tok) {
        generated++;
        if (on_token == nullptr) return !e->stop.load();
        const bool go = env->CallBooleanMethod(listener, on_token, static_cast<jint>(tok)) == JNI_TRUE;
        if (env->ExceptionCheck()) {
          java_error = true;
          return false;
        }
        return go && !e->stop.load();
      },
      nullptr, &t, &e->stop);
  if (java_error) return nullptr;            // the listener's exception propagates
  if (!st.ok()) {
    throw_llm(env, st.message);
    return nullptr;
  }
  constexpr int kN = 16;
  double v[kN] = {static_cast<double>(t.prompt_tokens), static_cast<double>(generated), t.prefill_ms,
                  t.prefill_tps(), t.decode_tps(), dlm::PeakRssMb(), 0, 0, 0, 0, e->stop.load() ? 1.0 : 0.0,
                  static_cast<double>(t.reused_tokens()), static_cast<double>(t.prefilled_tokens),
                  static_cast<double>(t.rewound_tokens), static_cast<double>(fit.dropped_turns),
                  static_cast<double>(fit.dropped_tokens)};
  phase_totals(DLM_PHASE_PREFILL, &v[6], &v[7]);
  phase_totals(DLM_PHASE_DECODE, &v[8], &v[9]);
  jdoubleArray out = env->NewDoubleArray(kN);
  env->SetDoubleArrayRegion(out, 0, kN, v);
  return out;
}

// Forgets what the cache holds (a new chat): the next request prefills from position 0.
JNIEXPORT void JNICALL Java_org_deltallm_demo_LlmEngine_nativeReset(JNIEnv* env, jclass, jlong handle) {
  if (Engine* e = engine(env, handle)) e->session->Reset();
}

JNIEXPORT void JNICALL Java_org_deltallm_demo_LlmEngine_nativeStop(JNIEnv* env, jclass, jlong handle) {
  if (Engine* e = engine(env, handle)) e->stop.store(true);
}

// The benchmark mode's result JSON (protocol deltallm-bench/2, runner "android").
JNIEXPORT jstring JNICALL Java_org_deltallm_demo_LlmEngine_nativeBench(JNIEnv* env, jclass, jlong handle,
                                                                      jintArray prompt, jintArray prompt_lengths,
                                                                      jintArray decode_lengths, jint warmup,
                                                                      jint reps, jdouble startup_ms) {
  Engine* e = engine(env, handle);
  if (e == nullptr) return nullptr;
  dlm::BenchOptions opt;
  opt.prompt_lengths = to_ids(env, prompt_lengths);
  opt.decode_lengths = to_ids(env, decode_lengths);
  opt.warmup = warmup;
  opt.reps = reps;
  opt.threads = e->threads;
  opt.runner = "android";
  opt.startup_ms = startup_ms;
  std::string json;
  dlm::Status st = dlm::RunBench(*e->session, to_ids(env, prompt), opt, &json);
  if (!st.ok()) {
    throw_llm(env, st.message);
    return nullptr;
  }
  return env->NewStringUTF(json.c_str());
}

JNIEXPORT void JNICALL Java_org_deltallm_demo_LlmEngine_nativeClose(JNIEnv*, jclass, jlong handle) {
  delete reinterpret_cast<Engine*>(handle);
}

// ------------------------------------------------------------------------------------- tokenizer
JNIEXPORT jlong JNICALL Java_org_deltallm_demo_Tokenizer_nativeLoad(JNIEnv* env, jclass, jstring path) {
  std::unique_ptr<dlm::Tokenizer> tok;
  dlm::Status st = dlm::Tokenizer::Load(to_string(env, path), &tok);
  if (!st.ok()) {
    throw_llm(env, st.message);
    return 0;
  }
  return reinterpret_cast<jlong>(tok.release());
}

JNIEXPORT jintArray JNICALL Java_org_deltallm_demo_Tokenizer_nativeEncode(JNIEnv* env, jclass, jlong handle,
                                                                         jbyteArray utf8) {
  auto* tok = reinterpret_cast<dlm::Tokenizer*>(handle);
  const jsize n = env->GetArrayLength(utf8);
  std::string text(static_cast<size_t>(n), '\0');
  env->GetByteArrayRegion(utf8, 0, n, reinterpret_cast<jbyte*>(&text[0]));
  const std::vector<int32_t> ids = tok->Encode(text);
  jintArray out = env->NewIntArray(static_cast<jsize>(ids.size()));
  env->SetIntArrayRegion(out, 0, static_cast<jsize>(ids.size()), reinterpret_cast<const jint*>(ids.data()));
  return out;
}

// UTF-8 bytes (a token may end inside a character; the Java side decodes whole sequences).
JNIEXPORT jbyteArray JNICALL Java_org_deltallm_demo_Tokenizer_nativeDecode(JNIEnv* env, jclass, jlong handle,
                                                                          jintArray ids, jboolean skip_special) {
  auto* tok = reinterpret_cast<dlm::Tokenizer*>(handle);
  std::vector<int64_t> v = to_ids(env, ids);
  const std::string bytes = tok->Decode(std::vector<int32_t>(v.begin(), v.end()), skip_special == JNI_TRUE);
  jbyteArray out = env->NewByteArray(static_cast<jsize>(bytes.size()));
  env->SetByteArrayRegion(out, 0, static_cast<jsize>(bytes.size()), reinterpret_cast<const jbyte*>(bytes.data()));
  return out;
}

JNIEXPORT jint JNICALL Java_org_deltallm_demo_Tokenizer_nativeTokenId(JNIEnv* env, jclass, jlong handle,
                                                                     jstring token) {
  return reinterpret_cast<dlm::Tokenizer*>(handle)->TokenId(to_string(env, token));
}

JNIEXPORT void JNICALL Java_org_deltallm_demo_Tokenizer_nativeClose(JNIEnv*, jclass, jlong handle) {
  delete reinterpret_cast<dlm::Tokenizer*>(handle);
}

}  // extern "C"
