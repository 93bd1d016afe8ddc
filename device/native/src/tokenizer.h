// A Hugging Face tokenizer.json reader and byte-level BPE tokenizer for the models we ship
// (SmolLM2, Llama-3 / BitNet b1.58): added-token splitting, the ByteLevel / Split / Digits
// pre-tokenizers with the GPT-2 and Llama-3 split patterns, BPE merges (optionally
// ignore_merges), the ByteLevel decoder. Encode == `tokenizers`' encode(text,
// add_special_tokens=False). Anything else in a tokenizer.json is refused at load with its name.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "llm_session.h"   // Status

namespace dlm {

// One pre-tokenizer step; a tokenizer.json's pre_tokenizer is a sequence of them.
struct PreTokenizerStep {
  enum class Kind { kByteLevelSplit, kSplitLlama3, kSplitGpt2, kDigits, kByteLevelNoSplit } kind;
  bool individual_digits = false;   // kDigits
};

// Splits UTF-8 `text` into pieces per `steps` (pieces are byte ranges of `text`).
std::vector<std::string> PreTokenize(const std::string& text, const std::vector<PreTokenizerStep>& steps);

class Tokenizer {
 public:
  static Status Load(const std::string& path, std::unique_ptr<Tokenizer>* out);

  std::vector<int32_t> Encode(const std::string& utf8) const;
  // UTF-8 bytes of the tokens (a partial character at the end is possible mid-stream).
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const;
  int32_t TokenId(const std::string& token) const;   // -1 if absent
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct Added {
    std::string content;
    int32_t id;
    bool special;
  };
  void EncodeWord(const std::string& word, std::vector<int32_t>* out) const;

  std::unordered_map<std::string, int32_t> vocab_;       // byte-level token string -> id
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;   // (left id, right id) -> (rank, id)
  std::vector<Added> added_;                              // longest first
  std::vector<bool> is_special_;
  std::vector<bool> is_added_;
  std::vector<PreTokenizerStep> steps_;
  bool add_prefix_space_ = false;
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;
  std::string byte_to_unicode_[256];                     // ByteLevel's byte -> UTF-8 of its code point
  std::unordered_map<uint32_t, uint8_t> unicode_to_byte_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace dlm
