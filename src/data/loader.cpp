#include "data/loader.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "core/error.h"
#include "core/philox.h"

namespace strata {
namespace {

constexpr uint64_t kShuffleStream = philox::stream_key("data.shuffle");

std::string dataset_name(const TokenDataset& dataset) {
  return dataset.path().empty() ? std::string("(in-memory dataset)") : dataset.path().string();
}

int64_t count_windows(const TokenDataset& dataset, int64_t seq_len) {
  STRATA_CHECK(seq_len > 0, "data loader: seq_len ", seq_len, " must be positive");
  int64_t n = dataset.size() > 0 ? (dataset.size() - 1) / seq_len : 0;
  STRATA_CHECK(n > 0, "data loader: token dataset ", dataset_name(dataset), " has ", dataset.size(),
               " tokens, fewer than one sequence of seq_len + 1 = ", seq_len + 1);
  return n;
}

// Row `row` of (input, target) from window `window`: tokens [w*seq_len, w*seq_len + seq_len]
// shifted.
void fill_window(const TokenDataset& dataset, int64_t seq_len, int64_t window, Batch& batch,
                 int64_t row) {
  std::span<const uint32_t> tokens =
      dataset.tokens().subspan(static_cast<size_t>(window * seq_len));
  int32_t* input = batch.input.data<int32_t>() + row * seq_len;
  int32_t* target = batch.target.data<int32_t>() + row * seq_len;
  for (size_t t = 0; t < static_cast<size_t>(seq_len); ++t) {
    input[t] = static_cast<int32_t>(tokens[t]);
    target[t] = static_cast<int32_t>(tokens[t + 1]);
  }
}

Batch empty_batch(int64_t rows, int64_t seq_len) {
  return Batch{Tensor::empty({rows, seq_len}, DType::i32),
               Tensor::empty({rows, seq_len}, DType::i32)};
}

void check_rank(int dp_rank, int dp_size) {
  STRATA_CHECK(dp_size > 0 && dp_rank >= 0 && dp_rank < dp_size, "data loader: dp_rank ", dp_rank,
               " is not in [0, dp_size=", dp_size, ")");
}

}  // namespace

Batch Batch::rows(int64_t start, int64_t count) const {
  STRATA_CHECK(start >= 0 && count >= 0 && start + count <= n_rows(), "Batch::rows(", start, ", ",
               count, ") outside a batch of ", n_rows(), " rows");
  return Batch{input.slice(0, start, start + count), target.slice(0, start, start + count)};
}

DataLoader::DataLoader(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len,
                       int64_t global_batch, int dp_rank, int dp_size, uint64_t seed)
    : dataset_(std::move(dataset)),
      seq_len_(seq_len),
      global_batch_(global_batch),
      dp_rank_(dp_rank),
      dp_size_(dp_size),
      seed_(seed),
      n_windows_(count_windows(*dataset_, seq_len)) {
  check_rank(dp_rank, dp_size);
  STRATA_CHECK(global_batch > 0 && global_batch % dp_size == 0, "data loader: global_batch ",
               global_batch, " is not a positive multiple of dp_size ", dp_size);
  // Every id must fit an i32 row; ids are below vocab_size (checked when the file was read).
  STRATA_CHECK(dataset_->info().vocab_size <= (int64_t{1} << 31), "data loader: vocab_size ",
               dataset_->info().vocab_size, " of ", dataset_name(*dataset_),
               " does not fit i32 ids");
}

const std::vector<int64_t>& DataLoader::permutation(int64_t epoch) {
  if (epoch == cached_epoch_) return cached_permutation_;
  // Fisher-Yates from the back: position i swaps with j uniform in [0, i]. A 64-bit draw modulo
  // i+1 is biased by at most (i+1)/2^64, far below anything measurable.
  std::vector<int64_t>& perm = cached_permutation_;
  perm.resize(static_cast<size_t>(n_windows_));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  const uint64_t stream = kShuffleStream + static_cast<uint64_t>(epoch);
  for (int64_t i = n_windows_ - 1; i > 0; --i) {
    philox::Block w = philox::words(seed_, stream, static_cast<uint64_t>(i));
    uint64_t r = (static_cast<uint64_t>(w.v[0]) << 32) | w.v[1];
    auto j = static_cast<int64_t>(r % static_cast<uint64_t>(i + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  cached_epoch_ = epoch;
  return perm;
}

int64_t DataLoader::window_at(int64_t epoch, int64_t index) {
  STRATA_CHECK(epoch >= 0 && index >= 0 && index < n_windows_, "window_at(", epoch, ", ", index,
               ") outside ", n_windows_, " windows per epoch");
  return permutation(epoch)[static_cast<size_t>(index)];
}

Batch DataLoader::next_batch() {
  const int64_t rows = local_batch();
  Batch batch = empty_batch(rows, seq_len_);
  // This rank's rows start dp_rank * rows sequences into the global batch.
  int64_t epoch = state_.epoch;
  int64_t position = state_.position + dp_rank_ * rows;
  epoch += position / n_windows_;
  position %= n_windows_;
  for (int64_t row = 0; row < rows; ++row) {
    int64_t window = permutation(epoch)[static_cast<size_t>(position)];
    fill_window(*dataset_, seq_len_, window, batch, row);
    if (++position == n_windows_) {
      position = 0;
      ++epoch;
    }
  }
  // Every rank advances past the whole global batch.
  int64_t next = state_.position + global_batch_;
  state_.epoch += next / n_windows_;
  state_.position = next % n_windows_;
  return batch;
}

void DataLoader::restore(const LoaderState& state) {
  STRATA_CHECK(state.epoch >= 0 && state.position >= 0 && state.position < n_windows_,
               "data loader: cannot restore epoch ", state.epoch, " position ", state.position,
               " on ", dataset_name(*dataset_), ", which has ", n_windows_, " windows of seq_len ",
               seq_len_, " per epoch");
  state_ = state;
}

EvalLoader::EvalLoader(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len, int64_t batch,
                       int dp_rank, int dp_size)
    : dataset_(std::move(dataset)),
      seq_len_(seq_len),
      batch_(batch),
      dp_rank_(dp_rank),
      dp_size_(dp_size),
      n_windows_(count_windows(*dataset_, seq_len)) {
  check_rank(dp_rank, dp_size);
  STRATA_CHECK(batch > 0, "eval loader: batch ", batch, " must be positive");
}

int64_t EvalLoader::n_batches() const {
  return (n_windows_ + batch_ - 1) / batch_;
}

Batch EvalLoader::batch(int64_t b) const {
  STRATA_CHECK(b >= 0 && b < n_batches(), "eval loader: batch ", b, " outside [0, ", n_batches(),
               ")");
  const int64_t first = b * batch_;
  const int64_t m = std::min(batch_, n_windows_ - first);
  const int64_t lo = first + dp_rank_ * m / dp_size_;
  const int64_t hi = first + (dp_rank_ + 1) * m / dp_size_;
  Batch out = empty_batch(hi - lo, seq_len_);
  for (int64_t w = lo; w < hi; ++w) fill_window(*dataset_, seq_len_, w, out, w - lo);
  return out;
}

}  // namespace strata
