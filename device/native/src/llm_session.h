// The native runner core: one loaded causal-LM program (`forward(tokens[1,S], input_pos[1])`
// with its KV cache inside) and the steps every front end needs — chunked prefill from
// position 0, greedy or sampled decode, last-position logits, the delta kernel's counters,
// threads, CPU affinity and peak RSS. Used by the static runner (main.cc) and the Android JNI
// library; no allocation in the decode loop beyond the runtime's own.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace dlm {

// Exit codes shared by every front end.
constexpr int kExitOk = 0;
constexpr int kExitBadInput = 2;   // arguments, files, programs the runtime cannot run
constexpr int kExitRuntime = 3;    // a call failed at run time

// One error: a code and one line that names the problem.
struct Status {
  int code = kExitOk;
  std::string message;
  bool ok() const { return code == kExitOk; }
  static Status Ok() { return {}; }
  static Status BadInput(std::string m) { return {kExitBadInput, std::move(m)}; }
  static Status Runtime(std::string m) { return {kExitRuntime, std::move(m)}; }
};

// The program's constant methods (ExecuTorch's TextLLMRunner reads the same ones).
struct ProgramInfo {
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;       // longest prefill chunk
  int64_t max_context_len = 0;   // KV cache length
  int64_t n_layers = 0;
  int64_t bos_id = -1;
  std::vector<int64_t> eos_ids;
  bool delta_attention = false;  // uses deltallm::delta_attention
  std::vector<std::string> operators;
};

// Called with the logits of the last position after every forward call (prefill chunk or decode
// step); return false to stop.
using LogitsSink = std::function<void(const float* logits, int64_t vocab)>;
// Called with every generated token; return false to stop generating.
using TokenSink = std::function<bool(int64_t token)>;

struct Timings {
  double prefill_ms = 0;   // time to first token (prefill + first argmax)
  double decode_ms = 0;    // all decode steps
  int64_t prompt_tokens = 0;
  int64_t decode_tokens = 0;
  double prefill_tps() const { return prefill_ms > 0 ? prompt_tokens * 1e3 / prefill_ms : 0; }
  double decode_tps() const { return decode_ms > 0 ? decode_tokens * 1e3 / decode_ms : 0; }
};

struct SampleOptions {
  float temperature = 0.0f;   // 0: greedy
  uint64_t seed = 0;
};

class LlmSession {
 public:
  ~LlmSession();
  // Loads the program and its forward method; checks every operator is registered first, so a
  // missing one is named.
  static Status Load(const std::string& pte_path, std::unique_ptr<LlmSession>* out);

  const ProgramInfo& info() const { return info_; }
  double load_ms() const { return load_ms_; }

  // Checks prompt ids against the vocabulary and the context (prompt + decode tokens).
  Status CheckPrompt(const std::vector<int64_t>& ids, int64_t decode_tokens) const;

  // One forward call of tokens [start_pos, start_pos + n); `logits` gets the last position's.
  Status Forward(const int64_t* tokens, int64_t n, int64_t start_pos, std::vector<float>* logits);

  // A fresh sequence: prefill `ids` from position 0 in max_seq_len chunks, then up to
  // `max_new_tokens` decode steps feeding back the chosen token (stops at EOS when stop_at_eos).
  // `on_token` sees every chosen token (including the first, chosen from the prefill logits).
  // `forced` (parity checks across builds): decode step i is fed forced[i] instead of the choice.
  Status Generate(const std::vector<int64_t>& ids, int64_t max_new_tokens, const SampleOptions& sample,
                  bool stop_at_eos, const TokenSink& on_token, const LogitsSink& on_logits, Timings* t,
                  const std::atomic<bool>* stop = nullptr, const std::vector<int64_t>* forced = nullptr);

  int64_t Choose(const std::vector<float>& logits, const SampleOptions& sample);

 private:
  LlmSession();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ProgramInfo info_;
  double load_ms_ = 0;
  std::mt19937_64 rng_;
  uint64_t seeded_ = ~0ull;
};

// Threads of ExecuTorch's threadpool (XNNPACK, custom ops and our kernel share it); 0 keeps the
// runtime's default. Returns the count in use.
int SetThreads(int n);
// Pins this process (and threads created after) to a CPU list like "4-7" or "0,2,4".
Status SetAffinity(const std::string& cpu_list);
// Peak resident set (VmHWM) of this process in MB; < 0 if unknown.
double PeakRssMb();
// "arm64-v8a" or "x86_64": the ABI this binary was built for.
const char* BuildAbi();

}  // namespace dlm
