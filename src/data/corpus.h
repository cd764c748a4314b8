// From text files to the train and val token datasets: what `strata tokenize` does.
//
// Every input file is one document. Documents are taken in byte order of their paths, each encoded
// on its own with the GPT-2 tokenizer and followed by the end-of-text id (50256), so a model learns
// where documents end and windows may run across the boundary, as in GPT-2's training.
//
// The split is by whole documents (no text of a val document is trained on) and deterministic:
// document i of n goes to val when floor((i + 1) f) > floor(i f) for the val fraction f, which
// spreads floor(n f) val documents evenly over the sorted list (for the Brown corpus, sorted by
// genre, f = 0.01 picks one text in each of 5 genres). When f > 0 picks none and there are at least
// two documents, the last one goes to val, so a val set is never empty by accident.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace strata {

struct TokenizeOptions {
  std::vector<std::filesystem::path> inputs;  // files, and directories searched recursively
  std::filesystem::path tokenizer_dir;        // encoder.json + vocab.bpe (config data.tokenizer)
  std::filesystem::path train_path;           // e.g. data/brown/train.h5 (config data.train)
  std::filesystem::path val_path;             // e.g. data/brown/val.h5 (config data.val)
  double val_fraction = 0.01;                 // in [0, 1)
};

struct TokenizeSummary {
  int64_t n_documents = 0;
  int64_t n_train_documents = 0;
  int64_t n_val_documents = 0;
  int64_t n_train_tokens = 0;  // end-of-text ids included
  int64_t n_val_tokens = 0;
  int64_t n_text_bytes = 0;
  std::vector<std::filesystem::path> val_documents;
};

// Tokenizes the inputs and writes both datasets. Throws an Error naming the path for a missing
// input, an input with no files, an unreadable file, or a bad val_fraction.
TokenizeSummary tokenize_corpus(const TokenizeOptions& options);

// The documents the inputs name: files as given, directories expanded recursively to their
// regular files (names starting with '.' skipped), all sorted by path bytes. Throws when an input
// does not exist or nothing is found.
std::vector<std::filesystem::path> list_documents(const std::vector<std::filesystem::path>& inputs);

// Whether document `index` of `n_documents` goes to val under the rule above.
bool is_val_document(int64_t index, int64_t n_documents, double val_fraction);

// How `strata tokenize --output OUT` names the two files: OUT/train.h5 and OUT/val.h5 when OUT is
// a directory name (no extension), else X.train.h5 and X.val.h5 for OUT = X.h5.
std::pair<std::filesystem::path, std::filesystem::path> split_output_paths(
    const std::filesystem::path& output);

}  // namespace strata
