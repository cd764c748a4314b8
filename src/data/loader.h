// The distributed data loader: (input, target) sequences from a token dataset, in an order that
// depends on the seed and the global batch only, never on how many ranks read it.
//
// Samples. The dataset is cut into windows of seq_len + 1 tokens that start every seq_len tokens:
// window w is tokens[w*seq_len, w*seq_len + seq_len] (inclusive), its input the first seq_len and
// its target the last seq_len (the next token at every position). There are
// (n_tokens - 1) / seq_len windows; the tail that fills no window is not used.
//
// Order. Epoch e visits every window once, in the order of a Fisher-Yates shuffle whose random
// numbers are Philox(seed, stream "data.shuffle" + e, i): a pure function of (seed, e, n_windows).
// The sequences of all epochs form one stream; global batch b is sequences
// [b*global_batch, (b+1)*global_batch) of it, so a batch may span the end of an epoch.
//
// Ranks. Data-parallel rank r of dp_size takes sequences [r*L, (r+1)*L) of each global batch,
// L = global_batch / dp_size: the ranks' batches concatenated in rank order are exactly the
// one-process batch. Gradient accumulation splits a rank's batch into micro-batches with
// Batch::rows(): which sequences share a micro-batch depends on the layout, but the set of
// sequences in the step, and so the summed gradient the optimizer sees, does not.
//
// State. (epoch, position) says where the stream stands (position: sequences of the epoch already
// handed out, over all ranks). It is global, so a checkpoint written by one layout resumes in
// another.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"

namespace strata {

// A batch of sequences: input and target are i32 [rows, seq_len] on the CPU.
struct Batch {
  Tensor input;
  Tensor target;

  int64_t n_rows() const { return input.defined() ? input.size(0) : 0; }
  // Rows [start, start + count) as views (contiguous): a micro-batch.
  Batch rows(int64_t start, int64_t count) const;
};

struct LoaderState {
  int64_t epoch = 0;
  int64_t position = 0;  // in [0, windows per epoch)
  bool operator==(const LoaderState&) const = default;
};

class DataLoader {
 public:
  // Throws an Error naming the dataset's file when it holds no full window, or when global_batch
  // is not a positive multiple of dp_size, or dp_rank is outside [0, dp_size).
  DataLoader(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len, int64_t global_batch,
             int dp_rank, int dp_size, uint64_t seed);

  // This rank's share of the next global batch: [global_batch / dp_size, seq_len].
  Batch next_batch();

  LoaderState state() const { return state_; }
  // Continues from a state that state() returned (for this dataset and seq_len, any layout).
  void restore(const LoaderState& state);

  int64_t seq_len() const { return seq_len_; }
  int64_t global_batch() const { return global_batch_; }
  int64_t local_batch() const { return global_batch_ / dp_size_; }
  int64_t windows_per_epoch() const { return n_windows_; }
  // The window visited at `index` of epoch `epoch` (the shuffle); exposed for tests.
  int64_t window_at(int64_t epoch, int64_t index);

 private:
  const std::vector<int64_t>& permutation(int64_t epoch);

  std::shared_ptr<const TokenDataset> dataset_;
  int64_t seq_len_;
  int64_t global_batch_;
  int dp_rank_;
  int dp_size_;
  uint64_t seed_;
  int64_t n_windows_;
  LoaderState state_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_permutation_;
};

// Evaluation over a (val) dataset: every window once, in file order, no shuffle. Batch b holds
// windows [b*batch, min((b+1)*batch, n_windows)); rank r takes its share
// [floor(r*m/dp), floor((r+1)*m/dp)) of those m windows, so the last batch may be short and a
// rank's share may have 0 rows: weight each rank's mean loss by its rows when combining.
class EvalLoader {
 public:
  EvalLoader(std::shared_ptr<const TokenDataset> dataset, int64_t seq_len, int64_t batch,
             int dp_rank, int dp_size);

  int64_t n_batches() const;
  int64_t n_windows() const { return n_windows_; }
  // This rank's rows of batch b, b in [0, n_batches()).
  Batch batch(int64_t b) const;

 private:
  std::shared_ptr<const TokenDataset> dataset_;
  int64_t seq_len_;
  int64_t batch_;
  int dp_rank_;
  int dp_size_;
  int64_t n_windows_;
};

}  // namespace strata
