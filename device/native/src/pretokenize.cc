// Pre-tokenizers of byte-level BPE tokenizers, as hand-written scanners of the two split patterns
// the models we ship use (leftmost-first alternation, as Oniguruma matches them in `tokenizers`):
//   GPT-2 (ByteLevel use_regex): 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama-3 (Split, Isolated):   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//                                 ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// and the Digits pre-tokenizer. Classes come from unicode_tables.h.
#include <algorithm>
#include <cstddef>

#include "tokenizer.h"
#include "unicode_tables.h"

namespace dlm {

namespace {

template <size_t N>
bool in(const CodepointRange (&table)[N], uint32_t cp) {
  const CodepointRange* end = table + N;
  const CodepointRange* it =
      std::upper_bound(table, end, cp, [](uint32_t c, const CodepointRange& r) { return c < r.first; });
  return it != table && cp <= (it - 1)->last;
}

bool is_letter(uint32_t cp) { return cp < 0x80 ? ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') : in(kLetterRanges, cp); }
bool is_number(uint32_t cp) { return cp < 0x80 ? (cp >= '0' && cp <= '9') : in(kNumberRanges, cp); }
bool is_space(uint32_t cp) { return in(kWhiteSpaceRanges, cp); }
bool is_newline(uint32_t cp) { return cp == '\r' || cp == '\n'; }
bool is_other(uint32_t cp) { return !is_space(cp) && !is_letter(cp) && !is_number(cp); }

// Code points of a UTF-8 string with their byte offsets (offsets has one extra entry: the end).
// Invalid bytes count as single code points U+FFFD.
void decode_utf8(const std::string& s, std::vector<uint32_t>* cps, std::vector<size_t>* offsets) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; k++) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc >> 6) == 2;
      cp = (cp << 6) | (cc & 0x3F);
    }
    offsets->push_back(i);
    cps->push_back(ok ? cp : 0xFFFD);
    i += ok ? n : 1;
  }
  offsets->push_back(s.size());
}

size_t contraction(const std::vector<uint32_t>& c, size_t i, bool ignore_case) {
  if (c[i] != '\'' || i + 1 >= c.size()) return 0;
  auto lower = [&](size_t k) -> uint32_t {
    if (k >= c.size()) return 0;
    return ignore_case && c[k] >= 'A' && c[k] <= 'Z' ? c[k] + 32 : c[k];
  };
  const uint32_t a = lower(i + 1), b = lower(i + 2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

size_t run(const std::vector<uint32_t>& c, size_t i, bool (*pred)(uint32_t), size_t max = SIZE_MAX) {
  size_t j = i;
  while (j < c.size() && j - i < max && pred(c[j])) j++;
  return j - i;
}

// \s+(?!\S) then \s+ : a whitespace run, leaving its last character when a non-space follows.
size_t spaces(const std::vector<uint32_t>& c, size_t i) {
  const size_t n = run(c, i, is_space);
  if (n == 0) return 0;
  if (i + n == c.size() || n == 1) return n;
  return n - 1;
}

size_t match_gpt2(const std::vector<uint32_t>& c, size_t i) {
  if (size_t n = contraction(c, i, false)) return n;
  const size_t sp = c[i] == ' ' && i + 1 < c.size() ? 1 : 0;
  for (auto pred : {is_letter, is_number, is_other}) {
    if (size_t n = run(c, i + sp, pred)) return sp + n;
  }
  return spaces(c, i);
}

size_t match_llama3(const std::vector<uint32_t>& c, size_t i) {
  if (size_t n = contraction(c, i, true)) return n;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (!is_newline(c[i]) && !is_letter(c[i]) && !is_number(c[i]) && i + 1 < c.size() && is_letter(c[i + 1]))
    return 1 + run(c, i + 1, is_letter);
  if (size_t n = run(c, i, is_letter)) return n;
  if (size_t n = run(c, i, is_number, 3)) return n;                      // \p{N}{1,3}
  const size_t sp = c[i] == ' ' ? 1 : 0;                                  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  if (size_t n = i + sp < c.size() ? run(c, i + sp, is_other) : 0) return sp + n + run(c, i + sp + n, is_newline);
  // \s*[\r\n]+ : up to the last newline of the whitespace run (then any newlines right after it)
  const size_t w = run(c, i, is_space);
  size_t last_nl = SIZE_MAX;
  for (size_t k = i; k < i + w; k++)
    if (is_newline(c[k])) last_nl = k;
  if (last_nl != SIZE_MAX) return last_nl + 1 - i;
  return spaces(c, i);
}

// Pieces of one input piece under one step.
void split(const std::string& text, const PreTokenizerStep& step, std::vector<std::string>* out) {
  using Kind = PreTokenizerStep::Kind;
  if (step.kind == Kind::kByteLevelNoSplit) {
    out->push_back(text);
    return;
  }
  std::vector<uint32_t> c;
  std::vector<size_t> off;
  decode_utf8(text, &c, &off);
  size_t i = 0;
  while (i < c.size()) {
    size_t n = 0;
    switch (step.kind) {
      case Kind::kByteLevelSplit:
      case Kind::kSplitGpt2: n = match_gpt2(c, i); break;
      case Kind::kSplitLlama3: n = match_llama3(c, i); break;
      case Kind::kDigits:
        n = is_number(c[i]) ? (step.individual_digits ? 1 : run(c, i, is_number))
                            : run(c, i, [](uint32_t cp) { return !is_number(cp); });
        break;
      case Kind::kByteLevelNoSplit: break;
    }
    n = std::max<size_t>(n, 1);
    out->push_back(text.substr(off[i], off[i + n] - off[i]));
    i += n;
  }
}

}  // namespace

std::vector<std::string> PreTokenize(const std::string& text, const std::vector<PreTokenizerStep>& steps) {
  std::vector<std::string> pieces{text};
  for (const auto& step : steps) {
    std::vector<std::string> next;
    for (const auto& p : pieces) split(p, step, &next);
    pieces.swap(next);
  }
  return pieces;
}

}  // namespace dlm
