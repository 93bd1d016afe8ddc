// Benchmark loop and result JSON (protocol deltallm-bench/2, the schema of device/runner.py):
// for each prompt length x decode length, warm-up then repetitions of a fresh sequence.
#pragma once

#include <string>
#include <vector>

#include "llm_session.h"

namespace dlm {

struct BenchOptions {
  std::vector<int64_t> prompt_lengths;
  std::vector<int64_t> decode_lengths;
  int warmup = 1;
  int reps = 3;
  int threads = 0;          // threads in use (reported)
  std::string cpus;         // affinity list (reported)
  std::string runner = "native";
  double startup_ms = 0;
};

inline constexpr const char* kBenchProtocol = "deltallm-bench/2";

// Runs the benchmark over `prompt` (the first p ids for prompt length p) and returns the JSON.
Status RunBench(LlmSession& session, const std::vector<int64_t>& prompt, const BenchOptions& opt,
                std::string* json);

// The delta kernel's counters as {prefill: {total, layers}, decode: {...}, all}, or "null" when
// nothing was counted (a dense program).
std::string SparsityJson();
void ResetSparsity();

}  // namespace dlm
