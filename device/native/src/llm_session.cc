// The runner core over ExecuTorch's Module API (see llm_session.h).
#include "llm_session.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/extension/threadpool/threadpool.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/platform/runtime.h>

#include "program_ops.h"

namespace dlm {

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::runtime::EValue;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string error_name(executorch::runtime::Error e) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "ExecuTorch error 0x%x", static_cast<unsigned>(e));
  return buf;
}

}  // namespace

struct LlmSession::Impl {
  std::unique_ptr<Module> module;
  std::vector<int64_t> token_buf;
  int64_t pos_buf[1] = {0};
};

LlmSession::LlmSession() : impl_(new Impl) {}
LlmSession::~LlmSession() = default;

Status LlmSession::Load(const std::string& pte_path, std::unique_ptr<LlmSession>* out) {
  executorch::runtime::runtime_init();
  {
    std::ifstream f(pte_path, std::ios::binary);
    if (!f) return Status::BadInput(pte_path + ": cannot open the program file");
  }
  // Operators first: a program that needs one this runner lacks is named before anything loads.
  std::vector<std::string> ops;
  Status st = ReadProgramOperators(pte_path, &ops);
  if (!st.ok()) return st;
  std::vector<std::string> missing;
  for (const auto& op : ops)
    if (!executorch::runtime::registry_has_op_function(op.c_str())) missing.push_back(op);
  if (!missing.empty()) {
    std::string names;
    for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
    return Status::BadInput(pte_path + ": the program needs operator(s) this runner does not have: " + names +
                            " (add them to device/native/selected_ops.txt and rebuild)");
  }
  std::unique_ptr<LlmSession> s(new LlmSession);
  const double t0 = now_ms();
  s->impl_->module = std::make_unique<Module>(pte_path, Module::LoadMode::Mmap);
  auto err = s->impl_->module->load_method("forward");
  if (err != executorch::runtime::Error::Ok)
    return Status::BadInput(pte_path + ": cannot load method 'forward' (" + error_name(err) + ")");
  s->load_ms_ = now_ms() - t0;

  ProgramInfo& info = s->info_;
  info.operators = ops;
  info.delta_attention = std::find(ops.begin(), ops.end(), "deltallm::delta_attention.out") != ops.end();
  auto meta = [&](const char* name, std::vector<int64_t>* vals) -> bool {
    auto names = s->impl_->module->method_names();
    if (!names.ok() || names->count(name) == 0) return false;
    auto r = s->impl_->module->execute(name);
    if (!r.ok()) return false;
    for (const auto& v : *r)
      if (v.isInt()) vals->push_back(v.toInt());
    return !vals->empty();
  };
  std::vector<int64_t> v;
  if (!meta("get_vocab_size", &v) || (v.clear(), !meta("get_max_seq_len", &v)))
    return Status::BadInput(pte_path + ": not a deltallm/ExecuTorch LLM program (no get_vocab_size/get_max_seq_len)");
  v.clear(); meta("get_vocab_size", &v); info.vocab_size = v[0];
  v.clear(); meta("get_max_seq_len", &v); info.max_seq_len = v[0];
  v.clear(); info.max_context_len = meta("get_max_context_len", &v) ? v[0] : info.max_seq_len;
  v.clear(); info.n_layers = meta("get_n_layers", &v) ? v[0] : 0;
  v.clear(); info.bos_id = meta("get_bos_id", &v) ? v[0] : -1;
  v.clear(); if (meta("get_eos_ids", &v)) info.eos_ids = v;
  *out = std::move(s);
  return Status::Ok();
}

Status LlmSession::CheckPrompt(const std::vector<int64_t>& ids, int64_t decode_tokens) const {
  if (ids.empty()) return Status::BadInput("the prompt is empty");
  for (size_t i = 0; i < ids.size(); i++) {
    if (ids[i] < 0 || ids[i] >= info_.vocab_size) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "prompt token %zu is %lld, outside the vocabulary [0, %lld)", i,
                    static_cast<long long>(ids[i]), static_cast<long long>(info_.vocab_size));
      return Status::BadInput(buf);
    }
  }
  if (static_cast<int64_t>(ids.size()) + decode_tokens > info_.max_context_len) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "prompt of %zu tokens + %lld decode tokens exceeds the program's context of %lld",
                  ids.size(), static_cast<long long>(decode_tokens), static_cast<long long>(info_.max_context_len));
    return Status::BadInput(buf);
  }
  return Status::Ok();
}

Status LlmSession::Forward(const int64_t* tokens, int64_t n, int64_t start_pos, std::vector<float>* logits) {
  impl_->token_buf.assign(tokens, tokens + n);
  impl_->pos_buf[0] = start_pos;
  auto tok = executorch::extension::from_blob(impl_->token_buf.data(), {1, static_cast<int>(n)}, ScalarType::Long);
  auto pos = executorch::extension::from_blob(impl_->pos_buf, {1}, ScalarType::Long);
  auto r = impl_->module->execute("forward", {EValue(*tok), EValue(*pos)});
  if (!r.ok()) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "forward(%lld tokens at position %lld) failed: ", static_cast<long long>(n),
                  static_cast<long long>(start_pos));
    return Status::Runtime(buf + error_name(r.error()));
  }
  if (r->empty() || !(*r)[0].isTensor()) return Status::Runtime("forward returned no logits tensor");
  const auto& t = (*r)[0].toTensor();
  if (t.scalar_type() != ScalarType::Float) return Status::Runtime("forward returned non-float32 logits");
  const int64_t vocab = t.size(t.dim() - 1);
  const float* data = t.const_data_ptr<float>() + (t.numel() - vocab);   // the last position
  logits->assign(data, data + vocab);
  return Status::Ok();
}

int64_t LlmSession::Choose(const std::vector<float>& logits, const SampleOptions& sample) {
  if (sample.temperature <= 0.0f) return std::max_element(logits.begin(), logits.end()) - logits.begin();
  if (seeded_ != sample.seed) {
    rng_.seed(sample.seed);
    seeded_ = sample.seed;
  }
  const float mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); i++) sum += (p[i] = std::exp((logits[i] - mx) / sample.temperature));
  double u = std::uniform_real_distribution<double>(0.0, sum)(rng_);
  for (size_t i = 0; i < p.size(); i++)
    if ((u -= p[i]) <= 0) return static_cast<int64_t>(i);
  return static_cast<int64_t>(p.size() - 1);
}

Status LlmSession::Generate(const std::vector<int64_t>& ids, int64_t max_new_tokens, const SampleOptions& sample,
                            bool stop_at_eos, const TokenSink& on_token, const LogitsSink& on_logits, Timings* t,
                            const std::atomic<bool>* stop, const std::vector<int64_t>* forced) {
  Status st = CheckPrompt(ids, max_new_tokens);
  if (!st.ok()) return st;
  if (forced != nullptr) {
    if (static_cast<int64_t>(forced->size()) < max_new_tokens)
      return Status::BadInput("fewer forced tokens than decode steps");
    st = CheckPrompt(*forced, 0);
    if (!st.ok()) return Status::BadInput("forced tokens: " + st.message);
  }
  std::vector<float> logits;
  Timings local;
  Timings& tm = t ? *t : local;
  tm = Timings{};
  tm.prompt_tokens = static_cast<int64_t>(ids.size());
  const double t0 = now_ms();
  int64_t pos = 0;
  while (pos < static_cast<int64_t>(ids.size())) {
    const int64_t n = std::min<int64_t>(info_.max_seq_len, static_cast<int64_t>(ids.size()) - pos);
    st = Forward(ids.data() + pos, n, pos, &logits);
    if (!st.ok()) return st;
    if (on_logits) on_logits(logits.data(), static_cast<int64_t>(logits.size()));
    pos += n;
  }
  int64_t tok = Choose(logits, sample);
  const double t1 = now_ms();
  tm.prefill_ms = t1 - t0;
  auto is_eos = [&](int64_t x) {
    return stop_at_eos && std::find(info_.eos_ids.begin(), info_.eos_ids.end(), x) != info_.eos_ids.end();
  };
  bool go = on_token ? on_token(tok) : true;
  for (int64_t i = 0; i < max_new_tokens && go && !is_eos(tok); i++) {
    if (stop && stop->load()) break;
    if (forced != nullptr) tok = (*forced)[static_cast<size_t>(i)];
    st = Forward(&tok, 1, pos, &logits);
    if (!st.ok()) return st;
    if (on_logits) on_logits(logits.data(), static_cast<int64_t>(logits.size()));
    pos += 1;
    tm.decode_tokens += 1;
    tok = Choose(logits, sample);
    go = on_token ? on_token(tok) : true;
  }
  tm.decode_ms = now_ms() - t1;
  return Status::Ok();
}

int SetThreads(int n) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr) return 1;
  if (n > 0 && static_cast<size_t>(n) != pool->get_thread_count()) pool->_unsafe_reset_threadpool(n);
  return static_cast<int>(pool->get_thread_count());
}

Status SetAffinity(const std::string& cpu_list) {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::stringstream ss(cpu_list);
  std::string part;
  int count = 0;
  while (std::getline(ss, part, ',')) {
    int a = -1, b = -1;
    char extra = 0;
    if (std::sscanf(part.c_str(), "%d-%d%c", &a, &b, &extra) == 2 && a >= 0 && b >= a && b < CPU_SETSIZE) {
    } else if (std::sscanf(part.c_str(), "%d%c", &a, &extra) == 1 && a >= 0 && a < CPU_SETSIZE) {
      b = a;
    } else {
      return Status::BadInput("--cpus " + cpu_list + ": expected a CPU list like 4-7 or 0,2,4");
    }
    for (int c = a; c <= b; c++, count++) CPU_SET(c, &set);
  }
  if (count == 0) return Status::BadInput("--cpus " + cpu_list + ": no CPU named");
  if (sched_setaffinity(0, sizeof set, &set) != 0)
    return Status::BadInput("--cpus " + cpu_list + ": " + std::strerror(errno) + " (are those CPUs online?)");
  return Status::Ok();
}

double PeakRssMb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return -1.0;
}

const char* BuildAbi() {
#if defined(__aarch64__)
  return "arm64-v8a";
#elif defined(__x86_64__)
  return "x86_64";
#else
  return "unknown";
#endif
}

}  // namespace dlm
