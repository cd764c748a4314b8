// Token datasets (HDF5), the corpus split, and the loader: round trips, errors that name the file,
// layout independence of the batch order, and checkpointed positions.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <set>

#include "core/error.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "unit/data_testing.h"

using namespace strata;
using strata::testing::data_dir;
using strata::testing::error_of;
using strata::testing::read_bytes;
using strata::testing::ScratchDir;
using strata::testing::write_bytes;

namespace {

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "\"" << (text) << "\" lacks \"" << (part) << "\""

// The element type HDF5 recorded for /tokens: 2 or 4 bytes.
size_t stored_element_bytes(const std::filesystem::path& path) {
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t dset = H5Dopen2(file, "tokens", H5P_DEFAULT);
  hid_t type = H5Dget_type(dset);
  size_t bytes = H5Tget_size(type);
  H5Tclose(type);
  H5Dclose(dset);
  H5Fclose(file);
  return bytes;
}

std::vector<int32_t> iota_ids(int64_t n, int32_t modulo) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(i % modulo);
  return ids;
}

}  // namespace

// ---- the HDF5 file ----

TEST(TokenDataset, RoundTripsU16AndU32) {
  ScratchDir dir("dataset_roundtrip");
  struct Width {
    int64_t vocab_size;
    size_t bytes;
  };
  for (Width w : {Width{50257, 2}, Width{65536, 2}, Width{65537, 4}, Width{151936, 4}}) {
    std::vector<int32_t> ids = iota_ids(1000, static_cast<int32_t>(w.vocab_size));
    ids[7] = static_cast<int32_t>(w.vocab_size - 1);
    TokenDatasetInfo info{w.vocab_size, 3, static_cast<int64_t>(w.vocab_size - 1), "gpt2",
                          "unit test \xe2\x9c\x93"};
    std::string name = "v";
    name += std::to_string(w.vocab_size);
    auto path = dir / (name + ".h5");
    TokenDataset::write(path, ids, info);
    EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp"));
    EXPECT_EQ(stored_element_bytes(path), w.bytes) << "vocab_size " << w.vocab_size;

    TokenDataset back = TokenDataset::read(path);
    ASSERT_EQ(back.size(), 1000);
    for (int64_t i = 0; i < back.size(); ++i)
      ASSERT_EQ(back[i], static_cast<uint32_t>(ids[static_cast<size_t>(i)])) << i;
    EXPECT_EQ(back.info().vocab_size, w.vocab_size);
    EXPECT_EQ(back.info().n_documents, 3);
    EXPECT_EQ(back.info().eot_id, w.vocab_size - 1);
    EXPECT_EQ(back.info().tokenizer, "gpt2");
    EXPECT_EQ(back.info().source, "unit test \xe2\x9c\x93");
    EXPECT_EQ(back.element_bytes(), static_cast<int>(w.bytes));
    EXPECT_EQ(back.path(), path);
  }
  // An empty split is a valid file.
  TokenDataset::write(dir / "empty.h5", std::vector<int32_t>{},
                      TokenDatasetInfo{50257, 0, -1, "", ""});
  EXPECT_EQ(TokenDataset::read(dir / "empty.h5").size(), 0);
}

TEST(TokenDataset, WriteRefusesIdsOutsideTheVocabulary) {
  ScratchDir dir("dataset_write_bad");
  std::vector<int32_t> ids = {1, 2, 50257};
  std::string message = error_of([&] {
    TokenDataset::write(dir / "x.h5", ids, TokenDatasetInfo{50257, 1, -1, "gpt2", ""});
  });
  EXPECT_CONTAINS(message, "50257 at position 2");
  EXPECT_CONTAINS(message, (dir / "x.h5").string());
  EXPECT_FALSE(std::filesystem::exists(dir / "x.h5"));
}

TEST(TokenDataset, BadFilesGiveOneErrorNamingTheFile) {
  ScratchDir dir("dataset_bad_files");
  auto good = dir / "good.h5";
  TokenDataset::write(good, iota_ids(20000, 50257), TokenDatasetInfo{50257, 1, 50256, "gpt2", "t"});

  // Missing.
  std::string missing = error_of([&] { TokenDataset::read(dir / "missing.h5"); });
  EXPECT_CONTAINS(missing, (dir / "missing.h5").string());
  EXPECT_CONTAINS(missing, "does not exist");

  // Truncated: the first half of a real file.
  std::string bytes = read_bytes(good);
  write_bytes(dir / "truncated.h5", bytes.substr(0, bytes.size() / 2));
  std::string truncated = error_of([&] { TokenDataset::read(dir / "truncated.h5"); });
  EXPECT_CONTAINS(truncated, (dir / "truncated.h5").string());
  EXPECT_CONTAINS(truncated, "cannot read token dataset");

  // Not HDF5 at all.
  write_bytes(dir / "text.h5", "this is not an HDF5 file\n");
  std::string garbage = error_of([&] { TokenDataset::read(dir / "text.h5"); });
  EXPECT_CONTAINS(garbage, (dir / "text.h5").string());

  // HDF5, but the ids are under another name.
  {
    hid_t file = H5Fcreate((dir / "renamed.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[1] = {4};
    hid_t space = H5Screate_simple(1, dims, nullptr);
    hid_t dset =
        H5Dcreate2(file, "ids", H5T_STD_U16LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(dset);
    H5Sclose(space);
    H5Fclose(file);
  }
  std::string renamed = error_of([&] { TokenDataset::read(dir / "renamed.h5"); });
  EXPECT_CONTAINS(renamed, (dir / "renamed.h5").string());
  EXPECT_CONTAINS(renamed, "has no dataset 'tokens'");

  // /tokens without its attributes, and with a signed type.
  {
    hid_t file = H5Fcreate((dir / "bare.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[1] = {4};
    hid_t space = H5Screate_simple(1, dims, nullptr);
    H5Dclose(
        H5Dcreate2(file, "tokens", H5T_STD_U16LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(space);
    H5Fclose(file);
    file = H5Fcreate((dir / "signed.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    space = H5Screate_simple(1, dims, nullptr);
    H5Dclose(
        H5Dcreate2(file, "tokens", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(space);
    H5Fclose(file);
  }
  std::string bare = error_of([&] { TokenDataset::read(dir / "bare.h5"); });
  EXPECT_CONTAINS(bare, (dir / "bare.h5").string());
  EXPECT_CONTAINS(bare, "format_version");
  std::string signed_ids = error_of([&] { TokenDataset::read(dir / "signed.h5"); });
  EXPECT_CONTAINS(signed_ids, "not uint16 or uint32");

  // The intact file still reads.
  EXPECT_EQ(TokenDataset::read(good).size(), 20000);
}

// ---- the corpus split and tokenize_corpus ----

TEST(Corpus, ValDocumentsAreEvenlySpacedAndDeterministic) {
  std::vector<int64_t> val;
  for (int64_t i = 0; i < 500; ++i)
    if (is_val_document(i, 500, 0.01)) val.push_back(i);
  EXPECT_EQ(val, (std::vector<int64_t>{99, 199, 299, 399, 499}));
  for (int64_t n : {2, 7, 10, 100, 1000}) {
    for (double f : {0.05, 0.1, 0.25, 0.5}) {
      int64_t count = 0;
      for (int64_t i = 0; i < n; ++i) count += is_val_document(i, n, f);
      int64_t expected = std::max<int64_t>(static_cast<int64_t>(std::floor(n * f + 1e-9)), 1);
      EXPECT_EQ(count, expected) << "n=" << n << " f=" << f;
    }
  }
  // No val document without a val fraction; the last one when the fraction rounds to none.
  for (int64_t i = 0; i < 10; ++i) EXPECT_FALSE(is_val_document(i, 10, 0.0));
  EXPECT_TRUE(is_val_document(2, 3, 0.01));
  EXPECT_FALSE(is_val_document(0, 1, 0.01));
}

TEST(Corpus, OutputPaths) {
  EXPECT_EQ(split_output_paths("data/brown").first, std::filesystem::path("data/brown/train.h5"));
  EXPECT_EQ(split_output_paths("data/brown").second, std::filesystem::path("data/brown/val.h5"));
  EXPECT_EQ(split_output_paths("data/brown.h5").first,
            std::filesystem::path("data/brown.train.h5"));
  EXPECT_EQ(split_output_paths("data/brown.h5").second, std::filesystem::path("data/brown.val.h5"));
}

namespace {

// A byte-level vocabulary: piece k is byte k's GPT-2 stand-in, so the ids of a text are its
// bytes; "<|endoftext|>" is 256. Written as encoder.json + vocab.bpe (no merges).
void write_byte_vocabulary(const std::filesystem::path& dir) {
  std::string json = "{";
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int cp = printable ? b : next++;
    std::string piece;
    if (cp < 0x80) {
      piece = (cp == '"' || cp == '\\') ? std::string("\\") + static_cast<char>(cp)
                                        : std::string(1, static_cast<char>(cp));
    } else {
      piece += static_cast<char>(0xC0 | (cp >> 6));
      piece += static_cast<char>(0x80 | (cp & 0x3F));
    }
    json += "\"" + piece + "\": " + std::to_string(b) + ", ";
  }
  json += "\"<|endoftext|>\": 256}";
  write_bytes(dir / "encoder.json", json);
  write_bytes(dir / "vocab.bpe", "#version: 0.2\n");
}

}  // namespace

TEST(Corpus, TokenizeSplitsByDocumentAndSeparatesThemWithEndOfText) {
  ScratchDir dir("corpus_small");
  write_byte_vocabulary(dir / "vocab");
  // Ten documents in two folders; a hidden file is skipped.
  std::vector<std::string> texts;
  for (int d = 0; d < 10; ++d) {
    texts.push_back("document " + std::to_string(d) + "\nline two");
    write_bytes(dir / "corpus" / (d < 5 ? "a" : "b") / ("doc" + std::to_string(d) + ".txt"),
                texts.back());
  }
  write_bytes(dir / "corpus" / ".hidden", "ignored");

  TokenizeOptions options;
  options.inputs = {dir / "corpus"};
  options.tokenizer_dir = dir / "vocab";
  std::tie(options.train_path, options.val_path) = split_output_paths(dir / "out");
  options.val_fraction = 0.2;
  TokenizeSummary summary = tokenize_corpus(options);
  EXPECT_EQ(summary.n_documents, 10);
  EXPECT_EQ(summary.n_val_documents, 2);  // documents 4 and 9
  EXPECT_EQ(summary.n_train_documents, 8);
  ASSERT_EQ(summary.val_documents.size(), 2u);
  EXPECT_EQ(summary.val_documents[0].filename(), "doc4.txt");
  EXPECT_EQ(summary.val_documents[1].filename(), "doc9.txt");

  std::vector<uint32_t> want_train, want_val;
  for (int d = 0; d < 10; ++d) {
    auto& out = (d == 4 || d == 9) ? want_val : want_train;
    for (char c : texts[static_cast<size_t>(d)]) out.push_back(static_cast<uint8_t>(c));
    out.push_back(256);
  }
  TokenDataset train = TokenDataset::read(dir / "out" / "train.h5");
  TokenDataset val = TokenDataset::read(dir / "out" / "val.h5");
  EXPECT_EQ(std::vector<uint32_t>(train.tokens().begin(), train.tokens().end()), want_train);
  EXPECT_EQ(std::vector<uint32_t>(val.tokens().begin(), val.tokens().end()), want_val);
  EXPECT_EQ(train.info().vocab_size, 257);
  EXPECT_EQ(train.info().eot_id, 256);
  EXPECT_EQ(train.info().n_documents, 8);
  EXPECT_EQ(val.info().n_documents, 2);
  EXPECT_EQ(summary.n_train_tokens, train.size());

  // Errors name the input.
  options.inputs = {dir / "nowhere"};
  EXPECT_CONTAINS(error_of([&] { tokenize_corpus(options); }), (dir / "nowhere").string());
}

TEST(Corpus, BrownTokenizesToTheReferenceIdsPlusEndOfText) {
  const auto brown = data_dir() / "brown";
  if (!std::filesystem::exists(brown / "reference" / "MANIFEST") ||
      !std::filesystem::exists(data_dir() / "gpt2" / "vocab.bpe"))
    GTEST_SKIP() << "Brown corpus not fetched into " << data_dir() << ": run scripts/fetch_data.sh";
  ScratchDir dir("corpus_brown");
  TokenizeOptions options;
  options.inputs = {brown / "text"};
  options.tokenizer_dir = data_dir() / "gpt2";
  options.train_path = dir / "train.h5";
  options.val_path = dir / "val.h5";
  options.val_fraction = 0.01;
  TokenizeSummary s = tokenize_corpus(options);
  EXPECT_EQ(s.n_documents, 500);
  EXPECT_EQ(s.n_val_documents, 5);
  std::vector<std::string> val_names;
  for (const auto& p : s.val_documents) val_names.push_back(p.filename().string());
  EXPECT_EQ(val_names,
            (std::vector<std::string>{"cd12.txt", "cg11.txt", "cj06.txt", "ck26.txt", "cr09.txt"}));

  // The splits hold the JS encoder's ids, document by document, each followed by 50256.
  strata::testing::Reference ref = strata::testing::read_reference(brown / "reference");
  ASSERT_TRUE(ref.problem.empty()) << ref.problem;
  ASSERT_EQ(ref.entries.size(), 500u);
  std::vector<uint32_t> want_train, want_val;
  for (size_t d = 0; d < ref.entries.size(); ++d) {
    auto& out = is_val_document(static_cast<int64_t>(d), 500, 0.01) ? want_val : want_train;
    const auto& e = ref.entries[d];
    out.insert(out.end(), ref.ids.begin() + static_cast<std::ptrdiff_t>(e.offset),
               ref.ids.begin() + static_cast<std::ptrdiff_t>(e.offset + e.count));
    out.push_back(50256);
  }
  TokenDataset train = TokenDataset::read(options.train_path);
  TokenDataset val = TokenDataset::read(options.val_path);
  EXPECT_EQ(train.element_bytes(), 2);
  EXPECT_TRUE(std::equal(train.tokens().begin(), train.tokens().end(), want_train.begin(),
                         want_train.end()));
  EXPECT_TRUE(
      std::equal(val.tokens().begin(), val.tokens().end(), want_val.begin(), want_val.end()));
  EXPECT_EQ(s.n_train_tokens, static_cast<int64_t>(want_train.size()));
  EXPECT_EQ(s.n_val_tokens, static_cast<int64_t>(want_val.size()));
  std::printf(
      "Brown corpus: %lld documents (%lld train, %lld val), %lld bytes of text, "
      "%lld train tokens, %lld val tokens\n",
      static_cast<long long>(s.n_documents), static_cast<long long>(s.n_train_documents),
      static_cast<long long>(s.n_val_documents), static_cast<long long>(s.n_text_bytes),
      static_cast<long long>(s.n_train_tokens), static_cast<long long>(s.n_val_tokens));
}

// ---- the loader ----

namespace {

// A dataset whose token at position i is i (mod 65536 by way of a large vocabulary), so a row's
// first token tells which window it is.
std::shared_ptr<const TokenDataset> counting_dataset(int64_t n_tokens) {
  std::vector<uint32_t> tokens(static_cast<size_t>(n_tokens));
  std::iota(tokens.begin(), tokens.end(), 0u);
  return std::make_shared<TokenDataset>(std::move(tokens),
                                        TokenDatasetInfo{n_tokens, 1, -1, "test", "counting"});
}

// The windows (first input token / seq_len) of a batch's rows.
std::vector<int64_t> windows_of(const Batch& b, int64_t seq_len) {
  std::vector<int64_t> out;
  const int32_t* in = b.input.data<int32_t>();
  for (int64_t r = 0; r < b.n_rows(); ++r) out.push_back(in[r * seq_len] / seq_len);
  return out;
}

}  // namespace

TEST(DataLoader, RowsAreWindowsWithTargetsShiftedByOne) {
  const int64_t seq_len = 8;
  auto data = counting_dataset(8 * 25 + 3);  // 25 windows; the last uses token 200 as a target
  DataLoader loader(data, seq_len, 5, 0, 1, 42);
  EXPECT_EQ(loader.windows_per_epoch(), 25);
  Batch b = loader.next_batch();
  ASSERT_EQ(b.input.shape(), (Shape{5, 8}));
  EXPECT_EQ(b.input.dtype(), DType::i32);
  for (int64_t r = 0; r < 5; ++r) {
    const int32_t* in = b.input.data<int32_t>() + r * seq_len;
    const int32_t* tg = b.target.data<int32_t>() + r * seq_len;
    EXPECT_EQ(in[0] % seq_len, 0);
    for (int64_t t = 0; t < seq_len; ++t) {
      EXPECT_EQ(in[t], in[0] + t);
      EXPECT_EQ(tg[t], in[t] + 1);
    }
  }
}

TEST(DataLoader, EachEpochVisitsEveryWindowOnceInASeededOrder) {
  auto data = counting_dataset(4 * 37 + 1);  // 37 windows of seq_len 4
  DataLoader a(data, 4, 37, 0, 1, 7), b(data, 4, 37, 0, 1, 7), c(data, 4, 37, 0, 1, 8);
  std::vector<int64_t> a0 = windows_of(a.next_batch(), 4), a1 = windows_of(a.next_batch(), 4);
  std::vector<int64_t> b0 = windows_of(b.next_batch(), 4);
  std::vector<int64_t> c0 = windows_of(c.next_batch(), 4);
  EXPECT_EQ(std::set<int64_t>(a0.begin(), a0.end()).size(), 37u);
  EXPECT_EQ(std::set<int64_t>(a1.begin(), a1.end()).size(), 37u);
  EXPECT_EQ(a0, b0);  // same seed, same order
  EXPECT_NE(a0, c0);  // another seed, another order
  EXPECT_NE(a0, a1);  // another epoch, another order
  std::vector<int64_t> identity(37);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(a0, identity);
  EXPECT_EQ((a.state()), (LoaderState{2, 0}));
}

TEST(DataLoader, RanksTogetherReadTheOneProcessBatchAtEveryLayout) {
  // 23 windows and a global batch of 8: batches run across epoch ends at different offsets.
  const int64_t seq_len = 6, global = 8;
  auto data = counting_dataset(seq_len * 23 + 1);
  DataLoader single(data, seq_len, global, 0, 1, 1234);
  std::vector<std::vector<int64_t>> reference;
  for (int step = 0; step < 12; ++step)
    reference.push_back(windows_of(single.next_batch(), seq_len));

  for (int dp : {2, 4, 8}) {
    std::vector<DataLoader> ranks;
    for (int r = 0; r < dp; ++r) ranks.emplace_back(data, seq_len, global, r, dp, 1234);
    for (int step = 0; step < 12; ++step) {
      std::vector<int64_t> joined;
      for (DataLoader& rank : ranks) {
        Batch b = rank.next_batch();
        EXPECT_EQ(b.n_rows(), global / dp);
        for (int64_t w : windows_of(b, seq_len)) joined.push_back(w);
      }
      EXPECT_EQ(joined, reference[static_cast<size_t>(step)]) << "dp=" << dp << " step " << step;
    }
    for (const DataLoader& rank : ranks) EXPECT_EQ(rank.state(), single.state());
  }
}

TEST(DataLoader, StateRestoresThePositionInAnyLayout) {
  const int64_t seq_len = 5, global = 6;
  auto data = counting_dataset(seq_len * 17 + 1);
  DataLoader first(data, seq_len, global, 0, 1, 99);
  for (int step = 0; step < 4; ++step) first.next_batch();  // 24 sequences: into epoch 1
  LoaderState saved = first.state();
  EXPECT_EQ(saved, (LoaderState{1, 7}));
  std::vector<std::vector<int64_t>> after;
  for (int step = 0; step < 5; ++step) after.push_back(windows_of(first.next_batch(), seq_len));

  // A fresh one-process loader, and a three-rank layout, resumed from the saved state.
  DataLoader resumed(data, seq_len, global, 0, 1, 99);
  resumed.restore(saved);
  std::vector<DataLoader> ranks;
  for (int r = 0; r < 3; ++r) {
    ranks.emplace_back(data, seq_len, global, r, 3, 99);
    ranks.back().restore(saved);
  }
  for (int step = 0; step < 5; ++step) {
    EXPECT_EQ(windows_of(resumed.next_batch(), seq_len), after[static_cast<size_t>(step)]);
    std::vector<int64_t> joined;
    for (DataLoader& rank : ranks)
      for (int64_t w : windows_of(rank.next_batch(), seq_len)) joined.push_back(w);
    EXPECT_EQ(joined, after[static_cast<size_t>(step)]) << "step " << step;
  }
  EXPECT_CONTAINS(error_of([&] { resumed.restore(LoaderState{0, 17}); }), "17 windows");
}

TEST(DataLoader, BatchesWrapAcrossEpochEnds) {
  const int64_t seq_len = 3;
  auto data = counting_dataset(seq_len * 10 + 1);
  DataLoader loader(data, seq_len, 4, 0, 1, 5);
  std::vector<int64_t> seen;
  for (int step = 0; step < 5; ++step)  // 20 sequences: two whole epochs
    for (int64_t w : windows_of(loader.next_batch(), seq_len)) seen.push_back(w);
  EXPECT_EQ(loader.state(), (LoaderState{2, 0}));
  for (int64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(seen[static_cast<size_t>(i)], loader.window_at(0, i));
    EXPECT_EQ(seen[static_cast<size_t>(10 + i)], loader.window_at(1, i));
  }
  // Step 3 held the last two windows of epoch 0 and the first two of epoch 1.
}

TEST(DataLoader, MicroBatchesAreRowViewsOfTheLocalBatch) {
  auto data = counting_dataset(4 * 40 + 1);
  DataLoader loader(data, 4, 8, 1, 2, 3);  // local batch 4
  Batch b = loader.next_batch();
  Batch m = b.rows(2, 2);
  ASSERT_EQ(m.input.shape(), (Shape{2, 4}));
  EXPECT_TRUE(m.input.is_contiguous());
  EXPECT_EQ(m.input.data<int32_t>(), b.input.data<int32_t>() + 8);
  EXPECT_EQ(m.target.data<int32_t>(), b.target.data<int32_t>() + 8);
  EXPECT_CONTAINS(error_of([&] { b.rows(3, 2); }), "outside a batch of 4 rows");
}

TEST(DataLoader, MisuseNamesTheProblem) {
  std::vector<uint32_t> few(8, 1);
  auto tiny =
      std::make_shared<TokenDataset>(few, TokenDatasetInfo{10, 1, -1, "t", ""}, "/data/tiny.h5");
  EXPECT_CONTAINS(error_of([&] { DataLoader(tiny, 8, 4, 0, 1, 0); }), "/data/tiny.h5");
  auto data = counting_dataset(100);
  EXPECT_CONTAINS(error_of([&] { DataLoader(data, 4, 6, 0, 4, 0); }), "not a positive multiple");
  EXPECT_CONTAINS(error_of([&] { DataLoader(data, 4, 8, 4, 4, 0); }), "dp_rank 4");
}

TEST(EvalLoader, VisitsEveryWindowInOrderSplitOverRanks) {
  const int64_t seq_len = 4;
  auto data = counting_dataset(seq_len * 11 + 1);  // 11 windows
  EvalLoader one(data, seq_len, 4, 0, 1);
  ASSERT_EQ(one.n_batches(), 3);  // 4 + 4 + 3
  std::vector<int64_t> all;
  for (int64_t b = 0; b < one.n_batches(); ++b)
    for (int64_t w : windows_of(one.batch(b), seq_len)) all.push_back(w);
  std::vector<int64_t> in_order(11);
  std::iota(in_order.begin(), in_order.end(), 0);
  EXPECT_EQ(all, in_order);

  for (int dp : {2, 3, 4}) {
    std::vector<int64_t> joined;
    for (int64_t b = 0; b < one.n_batches(); ++b)
      for (int r = 0; r < dp; ++r)
        for (int64_t w : windows_of(EvalLoader(data, seq_len, 4, r, dp).batch(b), seq_len))
          joined.push_back(w);
    EXPECT_EQ(joined, in_order) << "dp=" << dp;
  }
  // With more ranks than windows in the last batch, some ranks get no rows.
  EXPECT_EQ(EvalLoader(data, seq_len, 4, 0, 4).batch(2).n_rows(), 0);
}
