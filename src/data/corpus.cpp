#include "data/corpus.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/dataset.h"
#include "data/tokenizer.h"

namespace strata {
namespace {

std::string read_document(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in.good(), "tokenize: cannot open document ", path.string());
  std::ostringstream content;
  content << in.rdbuf();
  STRATA_CHECK(!in.bad(), "tokenize: error reading document ", path.string());
  return std::move(content).str();
}

// The fraction as an integer count of millionths, so the split is exact integer arithmetic.
constexpr int64_t kFractionScale = 1000000;

}  // namespace

bool is_val_document(int64_t index, int64_t n_documents, double val_fraction) {
  int64_t f = std::llround(val_fraction * kFractionScale);
  if (f <= 0) return false;
  if ((n_documents * f) / kFractionScale == 0) return n_documents >= 2 && index == n_documents - 1;
  return ((index + 1) * f) / kFractionScale > (index * f) / kFractionScale;
}

std::vector<std::filesystem::path> list_documents(
    const std::vector<std::filesystem::path>& inputs) {
  namespace fs = std::filesystem;
  std::vector<fs::path> documents;
  for (const fs::path& input : inputs) {
    STRATA_CHECK(fs::exists(input), "tokenize: input ", input.string(), " does not exist");
    if (!fs::is_directory(input)) {
      documents.push_back(input);
      continue;
    }
    size_t before = documents.size();
    for (auto it = fs::recursive_directory_iterator(input);
         it != fs::recursive_directory_iterator(); ++it) {
      if (it->path().filename().string().starts_with(".")) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) documents.push_back(it->path());
    }
    STRATA_CHECK(documents.size() > before, "tokenize: directory ", input.string(),
                 " holds no files");
  }
  STRATA_CHECK(!documents.empty(), "tokenize: no input files given");
  std::sort(documents.begin(), documents.end(),
            [](const fs::path& a, const fs::path& b) { return a.native() < b.native(); });
  return documents;
}

std::pair<std::filesystem::path, std::filesystem::path> split_output_paths(
    const std::filesystem::path& output) {
  if (!output.has_extension()) return {output / "train.h5", output / "val.h5"};
  std::filesystem::path stem = output;
  stem.replace_extension();
  return {std::filesystem::path(stem.string() + ".train.h5"),
          std::filesystem::path(stem.string() + ".val.h5")};
}

TokenizeSummary tokenize_corpus(const TokenizeOptions& options) {
  STRATA_CHECK(options.val_fraction >= 0.0 && options.val_fraction < 1.0, "tokenize: val_fraction ",
               options.val_fraction, " is not in [0, 1)");
  STRATA_CHECK(!options.train_path.empty() && !options.val_path.empty() &&
                   options.train_path != options.val_path,
               "tokenize: the train and val outputs must be two different paths (got ",
               options.train_path.string(), " and ", options.val_path.string(), ")");
  Tokenizer tokenizer = Tokenizer::from_directory(options.tokenizer_dir);
  std::vector<std::filesystem::path> documents = list_documents(options.inputs);

  TokenizeSummary summary;
  summary.n_documents = static_cast<int64_t>(documents.size());
  std::vector<int32_t> train, val;
  for (int64_t i = 0; i < summary.n_documents; ++i) {
    const std::filesystem::path& path = documents[static_cast<size_t>(i)];
    std::string text = read_document(path);
    summary.n_text_bytes += static_cast<int64_t>(text.size());
    bool to_val = is_val_document(i, summary.n_documents, options.val_fraction);
    std::vector<int32_t>& out = to_val ? val : train;
    tokenizer.encode_append(text, out);
    if (tokenizer.eot_id() >= 0) out.push_back(tokenizer.eot_id());
    if (to_val) {
      ++summary.n_val_documents;
      summary.val_documents.push_back(path);
    } else {
      ++summary.n_train_documents;
    }
  }
  summary.n_train_tokens = static_cast<int64_t>(train.size());
  summary.n_val_tokens = static_cast<int64_t>(val.size());

  // The source attribute says where the text came from and how it was split.
  std::ostringstream source;
  for (const std::filesystem::path& input : options.inputs) source << input.string() << " ";
  source << "(" << summary.n_documents << " documents, val_fraction " << options.val_fraction
         << ", split ";
  TokenDatasetInfo info;
  info.vocab_size = tokenizer.vocab_size();
  info.eot_id = tokenizer.eot_id();
  info.tokenizer = "gpt2";
  info.n_documents = summary.n_train_documents;
  info.source = source.str() + "train)";
  TokenDataset::write(options.train_path, train, info);
  info.n_documents = summary.n_val_documents;
  info.source = source.str() + "val)";
  TokenDataset::write(options.val_path, val, info);
  return summary;
}

}  // namespace strata
