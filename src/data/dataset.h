// Token datasets in HDF5: one file holds one split (train or val) of a tokenized corpus.
//
// File layout (docs/data.md):
//   /tokens   1-D dataset, uint16 when vocab_size <= 65536 else uint32, little-endian,
//             contiguous; every document's ids followed by the end-of-text id
//   attributes on /tokens:
//     format_version  int64   1
//     vocab_size      int64   every id is below it
//     n_tokens        int64   the length of /tokens (a consistency check)
//     n_documents     int64
//     eot_id          int64   the id that separates documents, -1 for none
//     tokenizer       string  e.g. "gpt2"
//     source          string  where the text came from
// Reading loads the whole array into memory (the Brown corpus is 1.3 M tokens, 2.6 MB as u16).
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace strata {

struct TokenDatasetInfo {
  int64_t vocab_size = 0;
  int64_t n_documents = 0;
  int64_t eot_id = -1;
  std::string tokenizer;
  std::string source;
};

class TokenDataset {
 public:
  // Loads `path`. A missing file, a file that is not HDF5 or is truncated, a missing /tokens, a
  // wrong element type, attributes that disagree with the data, or an id >= vocab_size: one Error
  // that names the file and what is wrong.
  static TokenDataset read(const std::filesystem::path& path);

  // Writes `tokens` with `info` to `path` (through a temporary file renamed into place, so a crash
  // never leaves a half-written dataset under the final name). Element type: uint16 when
  // info.vocab_size <= 65536, else uint32. Throws when an id is >= info.vocab_size.
  static void write(const std::filesystem::path& path, std::span<const int32_t> tokens,
                    const TokenDatasetInfo& info);

  // An in-memory dataset (tests, tools).
  TokenDataset(std::vector<uint32_t> tokens, TokenDatasetInfo info,
               std::filesystem::path path = {});

  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  uint32_t operator[](int64_t i) const { return tokens_[static_cast<size_t>(i)]; }
  std::span<const uint32_t> tokens() const { return tokens_; }
  const TokenDatasetInfo& info() const { return info_; }
  // The file it was read from (empty for an in-memory dataset); named in the loader's errors.
  const std::filesystem::path& path() const { return path_; }
  // Bytes per id in the file: 2 or 4.
  int element_bytes() const { return info_.vocab_size <= 65536 ? 2 : 4; }

 private:
  std::vector<uint32_t> tokens_;
  TokenDatasetInfo info_;
  std::filesystem::path path_;
};

}  // namespace strata
