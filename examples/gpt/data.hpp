// examples/gpt/data.hpp: data/shakespeare.txt.gz as characters (see
// data/README.md): the vocabulary, a fixed train/validation split, and
// batches drawn from a counter-based generator, so that batch k of a run
// with seed s is the same tokens whichever optimizer trains on it.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../gz_text.hpp"

#ifndef POLAR_DATA_DIR
#define POLAR_DATA_DIR "data"
#endif

namespace gpt {

/// The default path of the corpus: the source tree's data/ folder.
inline std::string default_text_path() { return std::string(POLAR_DATA_DIR) + "/shakespeare.txt.gz"; }

/// The corpus as token ids.
struct corpus {
  std::string chars;         ///< the vocabulary: token k is chars[k], in byte order
  std::vector<int> train;    ///< the first 90% of the text
  std::vector<int> valid;    ///< the last 10%
  int vocab() const { return int(chars.size()); }
  /// The text of tokens.
  std::string decode(const std::vector<int>& ids) const {
    std::string s;
    for (int k : ids) s += chars[std::size_t(k)];
    return s;
  }
  /// The ids of text; throws std::invalid_argument for a character outside the vocabulary.
  std::vector<int> encode(const std::string& text) const {
    std::vector<int> ids;
    for (char ch : text) {
      const auto at = chars.find(ch);
      if (at == std::string::npos)
        throw std::invalid_argument(std::string("gpt::corpus::encode: the character '") + ch +
                                    "' is not in the vocabulary");
      ids.push_back(int(at));
    }
    return ids;
  }
};

/// The corpus of `path`: the characters that occur, the first 90% for
/// training and the rest for validation.
inline corpus load_corpus(const std::string& path) {
  const std::string text = examples::read_gz(path);
  if (text.size() < 1000) throw std::runtime_error(path + " holds " + std::to_string(text.size()) + " bytes; too few");
  std::array<bool, 256> seen{};
  for (unsigned char ch : text) seen[ch] = true;
  corpus c;
  std::array<int, 256> id{};
  for (int ch = 0; ch < 256; ++ch)
    if (seen[std::size_t(ch)]) id[std::size_t(ch)] = int(c.chars.size()), c.chars += char(ch);
  const std::size_t split = text.size() / 10 * 9;
  c.train.reserve(split);
  c.valid.reserve(text.size() - split);
  for (std::size_t i = 0; i < text.size(); ++i)
    (i < split ? c.train : c.valid).push_back(id[static_cast<unsigned char>(text[i])]);
  return c;
}

/// SplitMix64's finalizer: a well-mixed 64-bit function of its argument.
inline std::uint64_t mix(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Batch `k` of a stream `seed`: B windows of T + 1 tokens of `text` at
/// positions that depend only on (seed, k, b); x holds each window's first
/// T tokens and y the T that follow them.
inline void batch(const std::vector<int>& text, std::uint64_t seed, std::uint64_t k, int B, int T,
                  std::vector<int>& x, std::vector<int>& y) {
  if (text.size() <= std::size_t(T) + 1) throw std::invalid_argument("gpt::batch: the text is shorter than a window");
  x.resize(std::size_t(B) * std::size_t(T));
  y.resize(x.size());
  const std::uint64_t room = text.size() - std::size_t(T) - 1;
  for (int b = 0; b < B; ++b) {
    const std::uint64_t at = mix(mix(seed * 0x100000001B3ull + k) + std::uint64_t(b)) % room;
    for (int t = 0; t < T; ++t) {
      x[std::size_t(b) * std::size_t(T) + std::size_t(t)] = text[at + std::size_t(t)];
      y[std::size_t(b) * std::size_t(T) + std::size_t(t)] = text[at + std::size_t(t) + 1];
    }
  }
}

}  // namespace gpt
