// tokenizer.json loading, BPE and decoding (see tokenizer.h).
#include "tokenizer.h"

#include <algorithm>
#include <climits>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace dlm {

namespace {

using json = nlohmann::json;

const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Splits a UTF-8 string into its characters (each as a UTF-8 string).
std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    n = std::min(n, s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// One pre_tokenizer JSON object -> steps; "" or the name of what is not supported.
std::string parse_pre_tokenizer(const json& pt, std::vector<PreTokenizerStep>* steps, bool* prefix_space) {
  using Kind = PreTokenizerStep::Kind;
  if (pt.is_null()) return "";
  const std::string type = pt.value("type", "");
  if (type == "Sequence") {
    for (const auto& p : pt.at("pretokenizers")) {
      std::string bad = parse_pre_tokenizer(p, steps, prefix_space);
      if (!bad.empty()) return bad;
    }
    return "";
  }
  if (type == "ByteLevel") {
    *prefix_space = pt.value("add_prefix_space", false);
    steps->push_back({pt.value("use_regex", true) ? Kind::kByteLevelSplit : Kind::kByteLevelNoSplit});
    return "";
  }
  if (type == "Digits") {
    steps->push_back({Kind::kDigits, pt.value("individual_digits", false)});
    return "";
  }
  if (type == "Split") {
    const json& pat = pt.at("pattern");
    const std::string regex = pat.contains("Regex") ? pat["Regex"].get<std::string>() : "";
    if (pt.value("behavior", "") != "Isolated" || pt.value("invert", false))
      return "Split with behavior " + pt.value("behavior", std::string("?")) + " (only Isolated)";
    if (regex == kLlama3Pattern) steps->push_back({Kind::kSplitLlama3});
    else if (regex == kGpt2Pattern) steps->push_back({Kind::kSplitGpt2});
    else return "Split pattern " + regex + " (only the GPT-2 and Llama-3 patterns)";
    return "";
  }
  return "pre_tokenizer " + type;
}

}  // namespace

Status Tokenizer::Load(const std::string& path, std::unique_ptr<Tokenizer>* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::BadInput(path + ": cannot open the tokenizer");
  json j;
  try {
    j = json::parse(f);
  } catch (const std::exception& e) {
    return Status::BadInput(path + ": not a tokenizer.json (" + e.what() + ")");
  }
  std::unique_ptr<Tokenizer> t(new Tokenizer);
  auto bad = [&](const std::string& what) { return Status::BadInput(path + ": unsupported " + what); };
  try {
    const json& model = j.at("model");
    if (model.value("type", "") != "BPE") return bad("model type " + model.value("type", std::string("?")));
    if (model.value("byte_fallback", false)) return bad("BPE byte_fallback");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (model.contains(k) && model[k].is_string() && !model[k].get<std::string>().empty())
        return bad(std::string("BPE ") + k);
    if (j.contains("normalizer") && !j["normalizer"].is_null())
      return bad("normalizer " + j["normalizer"].value("type", std::string("?")));
    std::string why = parse_pre_tokenizer(j.value("pre_tokenizer", json()), &t->steps_, &t->add_prefix_space_);
    if (!why.empty()) return bad(why);
    t->ignore_merges_ = model.value("ignore_merges", false);
    for (const auto& kv : model.at("vocab").items()) {
      const int32_t id = kv.value().get<int32_t>();
      t->vocab_[kv.key()] = id;
      if (id >= static_cast<int32_t>(t->id_to_token_.size())) t->id_to_token_.resize(id + 1);
      t->id_to_token_[id] = kv.key();
    }
    for (const auto& a : j.value("added_tokens", json::array())) {
      Added added{a.at("content").get<std::string>(), a.at("id").get<int32_t>(), a.value("special", false)};
      if (added.id >= static_cast<int32_t>(t->id_to_token_.size())) t->id_to_token_.resize(added.id + 1);
      t->id_to_token_[added.id] = added.content;
      t->added_.push_back(added);
    }
    std::stable_sort(t->added_.begin(), t->added_.end(),
                     [](const Added& a, const Added& b) { return a.content.size() > b.content.size(); });
    t->is_special_.assign(t->id_to_token_.size(), false);
    t->is_added_.assign(t->id_to_token_.size(), false);
    for (const auto& a : t->added_) {
      t->is_added_[a.id] = true;
      t->is_special_[a.id] = a.special;
    }
    int32_t rank = 0;
    for (const auto& m : model.at("merges")) {
      std::string left, right;
      if (m.is_array()) {
        left = m.at(0).get<std::string>();
        right = m.at(1).get<std::string>();
      } else {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) return bad("merge \"" + s + "\"");
        left = s.substr(0, sp);
        right = s.substr(sp + 1);
      }
      auto l = t->vocab_.find(left), r = t->vocab_.find(right), lr = t->vocab_.find(left + right);
      if (l != t->vocab_.end() && r != t->vocab_.end() && lr != t->vocab_.end()) {
        const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(l->second)) << 32) |
                             static_cast<uint32_t>(r->second);
        t->merges_.emplace(key, std::make_pair(rank, lr->second));
      }
      rank++;
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      auto u = t->vocab_.find(model["unk_token"].get<std::string>());
      t->unk_id_ = u == t->vocab_.end() ? -1 : u->second;
    }
  } catch (const std::exception& e) {
    return Status::BadInput(path + ": malformed tokenizer.json (" + e.what() + ")");
  }
  // ByteLevel's byte -> code point table: printable Latin-1 bytes map to themselves, the others to
  // 256, 257, ... in byte order.
  int next = 256;
  for (int b = 0; b < 256; b++) {
    const bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const uint32_t cp = keep ? static_cast<uint32_t>(b) : static_cast<uint32_t>(next++);
    append_utf8(cp, &t->byte_to_unicode_[b]);
    t->unicode_to_byte_[cp] = static_cast<uint8_t>(b);
  }
  *out = std::move(t);
  return Status::Ok();
}

void Tokenizer::EncodeWord(const std::string& word, std::vector<int32_t>* out) const {
  std::string mapped;
  for (unsigned char b : word) mapped += byte_to_unicode_[b];
  if (ignore_merges_) {
    auto it = vocab_.find(mapped);
    if (it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(mapped);
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> sym;
  for (const std::string& ch : utf8_chars(mapped)) {
    auto it = vocab_.find(ch);
    if (it != vocab_.end()) sym.push_back(it->second);
    else if (unk_id_ >= 0) sym.push_back(unk_id_);
  }
  // Merge the lowest-ranked adjacent pair (leftmost among equals) until none applies.
  while (sym.size() > 1) {
    int32_t best_rank = INT32_MAX, best_id = -1;
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < sym.size(); i++) {
      const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(sym[i])) << 32) |
                           static_cast<uint32_t>(sym[i + 1]);
      auto it = merges_.find(key);
      if (it != merges_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        best_id = it->second.second;
        best_pos = i;
      }
    }
    if (best_id < 0) break;
    sym[best_pos] = best_id;
    sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
  }
  out->insert(out->end(), sym.begin(), sym.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() > 50000) cache_.clear();
  cache_.emplace(mapped, std::move(sym));
}

std::vector<int32_t> Tokenizer::Encode(const std::string& text) const {
  std::vector<int32_t> ids;
  size_t start = 0, i = 0;
  auto flush = [&](size_t end) {
    if (end <= start) return;
    std::string segment = text.substr(start, end - start);
    if (add_prefix_space_ && segment[0] != ' ') segment.insert(segment.begin(), ' ');
    for (const std::string& piece : PreTokenize(segment, steps_)) EncodeWord(piece, &ids);
  };
  while (i < text.size()) {
    const Added* hit = nullptr;
    for (const Added& a : added_)   // longest first
      if (!a.content.empty() && text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    if (hit == nullptr) {
      i++;
      continue;
    }
    flush(i);
    ids.push_back(hit->id);
    i += hit->content.size();
    start = i;
  }
  flush(text.size());
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size())) continue;
    if (is_added_[id]) {
      if (!(skip_special && is_special_[id])) out += id_to_token_[id];
      continue;
    }
    for (const std::string& ch : utf8_chars(id_to_token_[id])) {
      uint32_t cp = 0;
      const unsigned char c0 = static_cast<unsigned char>(ch[0]);
      cp = ch.size() == 1 ? c0 : ch.size() == 2 ? (c0 & 0x1F) : (c0 & 0x0F);
      for (size_t k = 1; k < ch.size(); k++) cp = (cp << 6) | (static_cast<unsigned char>(ch[k]) & 0x3F);
      auto it = unicode_to_byte_.find(cp);
      if (it != unicode_to_byte_.end()) out.push_back(static_cast<char>(it->second));
      else out += ch;
    }
  }
  return out;
}

int32_t Tokenizer::TokenId(const std::string& token) const {
  for (const Added& a : added_)
    if (a.content == token) return a.id;
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

}  // namespace dlm
