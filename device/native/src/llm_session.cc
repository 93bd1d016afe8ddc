// The runner core over ExecuTorch's Module API (see llm_session.h).
#include "llm_session.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/extension/threadpool/threadpool.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/platform/runtime.h>

#include <deltaattn.h>

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

// Copies of the running state kept per program (a chat's restore points: the system prompt's end
// and the last prompts' ends). One copy is (ring + 1) x kv heads x head_dim x 4 B per layer:
// 0.3 MB for SmolLM2-135M's delta preset.
constexpr size_t kMaxRestorePoints = 8;

struct LlmSession::Impl {
  std::unique_ptr<Module> module;
  std::vector<int64_t> token_buf;
  int64_t pos_buf[1] = {0};
  // Delta programs: the running-state buffers (in the method's planned memory) and copies of them.
  bool delta = false;
  bool named = false;
  std::vector<std::pair<uint8_t*, size_t>> running;
  size_t running_bytes = 0;
  std::map<int64_t, std::vector<uint8_t>> copies;   // position -> running state right before it

  void Save(int64_t pos, int64_t keep) {
    if (!delta || !named) return;
    if (copies.count(pos) == 0 && copies.size() >= kMaxRestorePoints) {   // the oldest, but not keep's
      auto victim = copies.begin();
      if (victim->first == keep && copies.size() > 1) ++victim;
      copies.erase(victim);
    }
    std::vector<uint8_t>& c = copies[pos];
    c.resize(running_bytes);
    size_t off = 0;
    for (const auto& b : running) std::memcpy(c.data() + off, b.first, b.second), off += b.second;
  }
  void Restore(int64_t pos) {
    const std::vector<uint8_t>& c = copies.at(pos);
    size_t off = 0;
    for (const auto& b : running) std::memcpy(b.first, c.data() + off, b.second), off += b.second;
  }
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
  std::vector<std::string> ops, names;
  Status st = ReadProgramOperators(pte_path, &ops, &names);
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
  // The running state, by name: `<module path>.k_hat` and `.k_ring` of every delta layer.
  Impl& im = *s->impl_;
  im.delta = info.delta_attention;
  if (im.delta) {
    static const char* kRunning[] = DLM_RUNNING_STATE_NAMES;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    auto method = im.module->method("forward");
#pragma GCC diagnostic pop
    for (const auto& name : names) {
      const size_t dot = name.rfind('.');
      const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
      if (std::none_of(std::begin(kRunning), std::end(kRunning), [&](const char* r) { return leaf == r; })) continue;
      auto t = method.ok() ? (*method)->get_attribute(name) : executorch::runtime::Result<executorch::aten::Tensor>(
                                                                  executorch::runtime::Error::NotFound);
      if (!t.ok()) return Status::BadInput(pte_path + ": cannot reach the state buffer " + name);
      im.running.emplace_back(static_cast<uint8_t*>(t->mutable_data_ptr()), t->nbytes());
      im.running_bytes += t->nbytes();
    }
    im.named = !im.running.empty();
  }
  *out = std::move(s);
  return Status::Ok();
}

void LlmSession::Reset() {
  cached_.clear();
  impl_->copies.clear();
}

std::vector<int64_t> LlmSession::restore_points() const {
  std::vector<int64_t> out;
  for (const auto& c : impl_->copies) out.push_back(c.first);
  return out;
}

size_t LlmSession::running_state_bytes() const { return impl_->running_bytes; }
bool LlmSession::exact_rewind() const { return !impl_->delta || impl_->named; }

uint64_t Fnv1a64(uint64_t h, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

uint64_t LlmSession::RunningStateHash() const {
  uint64_t h = kFnvBasis;
  for (const auto& b : impl_->running) h = Fnv1a64(h, b.first, b.second);
  return h;
}

Status FitContext(const std::vector<int64_t>& ids, const std::vector<int64_t>& turn_starts, int64_t keep,
                  int64_t max_context, int64_t reserve, ContextFit* out) {
  const int64_t n = static_cast<int64_t>(ids.size());
  if (keep < 0 || keep > n) return Status::BadInput("keep " + std::to_string(keep) + " is outside the request's ids");
  for (size_t i = 0; i < turn_starts.size(); i++)
    if (turn_starts[i] < keep || turn_starts[i] >= n || (i > 0 && turn_starts[i] <= turn_starts[i - 1]))
      return Status::BadInput("turns must be ascending positions in [keep, number of ids)");
  *out = ContextFit{};
  size_t first = 0;   // turns [0, first) are dropped: ids [turn_starts[0], turn_starts[first])
  int64_t drop = 0;
  while (n - drop + reserve > max_context && first + 1 < turn_starts.size()) {
    first++;
    drop = turn_starts[first] - turn_starts[0];
  }
  const int64_t cut = turn_starts.empty() ? n : turn_starts[0];
  out->ids.assign(ids.begin(), ids.begin() + cut);
  out->ids.insert(out->ids.end(), ids.begin() + cut + drop, ids.end());
  out->dropped_turns = static_cast<int>(first);
  out->dropped_tokens = drop;
  const int64_t m = static_cast<int64_t>(out->ids.size());
  if (m > max_context) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "the system prompt and the last turn alone are %lld tokens, more than the "
                  "program's context of %lld", static_cast<long long>(m), static_cast<long long>(max_context));
    return Status::BadInput(buf);
  }
  out->reserve = std::min(reserve, max_context - m);
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

// Prefills ids [start, n) (the cache holds [0, start)) and appends them to cached_.
Status LlmSession::Prefill(const std::vector<int64_t>& ids, int64_t start, const LogitsSink& on_logits,
                           std::vector<float>* logits) {
  const int64_t n = static_cast<int64_t>(ids.size());
  int64_t pos = start;
  while (pos < n) {
    // Calls end at keep_, so the running state can be copied there (a chat's overflow rewinds to it).
    const int64_t end = pos < keep_ && keep_ < n ? keep_ : n;
    const int64_t len = std::min<int64_t>(info_.max_seq_len, end - pos);
    Status st = Forward(ids.data() + pos, len, pos, logits);
    if (!st.ok()) return st;
    if (on_logits) on_logits(logits->data(), static_cast<int64_t>(logits->size()));
    cached_.insert(cached_.end(), ids.begin() + pos, ids.begin() + pos + len);
    pos += len;
    if (pos == keep_) impl_->Save(pos, keep_);
  }
  impl_->Save(n, keep_);
  return Status::Ok();
}

Status LlmSession::Generate(const GenerateRequest& r, const TokenSink& on_token, const LogitsSink& on_logits,
                            Timings* t, const std::atomic<bool>* stop) {
  const std::vector<int64_t>& ids = r.ids;
  Status st = CheckPrompt(ids, r.max_new_tokens);
  if (!st.ok()) return st;
  if (r.forced != nullptr) {
    if (static_cast<int64_t>(r.forced->size()) < r.max_new_tokens)
      return Status::BadInput("fewer forced tokens than decode steps");
    st = CheckPrompt(*r.forced, 0);
    if (!st.ok()) return Status::BadInput("forced tokens: " + st.message);
  }
  if (r.keep < 0 || r.keep > static_cast<int64_t>(ids.size()))
    return Status::BadInput("keep " + std::to_string(r.keep) + " is outside the request's ids");
  std::vector<float> logits;
  Timings local;
  Timings& tm = t ? *t : local;
  tm = Timings{};
  tm.prompt_tokens = static_cast<int64_t>(ids.size());
  const double t0 = now_ms();

  // Where this request starts: after the common prefix (dense), or at the nearest restore point.
  const int64_t n = static_cast<int64_t>(ids.size()), held = static_cast<int64_t>(cached_.size());
  int64_t start = 0;
  if (r.reuse) {
    int64_t lcp = 0;
    while (lcp < held && lcp < n && cached_[lcp] == ids[lcp]) lcp++;
    lcp = std::min(lcp, n - 1);
    start = lcp;
    if (impl_->delta && lcp < held) {   // moving back: restore k̂ and the ring
      start = 0;
      for (const auto& c : impl_->copies)
        if (c.first <= lcp) start = c.first;
      if (start > 0) {
        impl_->Restore(start);
        tm.restart_pos = start;
      }
    }
  }
  tm.rewound_tokens = std::max<int64_t>(0, held - start);
  tm.prefilled_tokens = n - start;
  cached_.resize(static_cast<size_t>(std::min(start, held)));
  for (auto it = impl_->copies.begin(); it != impl_->copies.end();)   // copies past start are of another branch
    it = it->first > start ? impl_->copies.erase(it) : std::next(it);
  if (start == 0) impl_->copies.clear();
  keep_ = r.keep;
  st = Prefill(ids, start, on_logits, &logits);
  if (!st.ok()) {
    Reset();   // what the cache holds is unknown now
    return st;
  }
  int64_t pos = n;
  int64_t tok = Choose(logits, r.sample);
  const double t1 = now_ms();
  tm.prefill_ms = t1 - t0;
  auto is_eos = [&](int64_t x) {
    return r.stop_at_eos && std::find(info_.eos_ids.begin(), info_.eos_ids.end(), x) != info_.eos_ids.end();
  };
  bool go = on_token ? on_token(tok) : true;
  for (int64_t i = 0; i < r.max_new_tokens && go && !is_eos(tok); i++) {
    if (stop && stop->load()) break;
    if (r.forced != nullptr) tok = (*r.forced)[static_cast<size_t>(i)];
    st = Forward(&tok, 1, pos, &logits);
    if (!st.ok()) {
      Reset();
      return st;
    }
    cached_.push_back(tok);
    if (on_logits) on_logits(logits.data(), static_cast<int64_t>(logits.size()));
    pos += 1;
    tm.decode_tokens += 1;
    tok = Choose(logits, r.sample);
    go = on_token ? on_token(tok) : true;
  }
  tm.decode_ms = now_ms() - t1;
  return Status::Ok();
}

int SetThreads(int n) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr) return 1;
  static const size_t runtime_default = pool->get_thread_count();   // before any count was set
  const size_t want = n > 0 ? static_cast<size_t>(n) : runtime_default;
  if (want != pool->get_thread_count()) pool->_unsafe_reset_threadpool(want);
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
