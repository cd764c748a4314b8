// Data parallelism: gradients averaged over the dp x sp group in buckets, each bucket's
// all-reduce started as soon as backward has finished every gradient in it, so communication
// overlaps the rest of backward (Li et al., "PyTorch Distributed", VLDB 2020, in spirit).
//
// The reducer re-homes every parameter's gradient accumulator (Parameter::accum(): the f32
// main_grad of a 16-bit parameter, else its grad) into flat bucket buffers (each becomes a view of
// its bucket), so a bucket is reduced in one call with no copies. Buckets are filled in
// the order backward finishes parameters, up to bucket_mb each.
#pragma once

#include <chrono>
#include <span>
#include <vector>

#include "comm/communicator.h"
#include "model/parameter.h"

namespace strata {

struct ReducerStats {
  double exposed_ms = 0;   // time spent in finish() waiting for reductions backward did not hide
  double reduce_ms = 0;    // from the first bucket's start to the last bucket's completion
  int64_t buckets = 0;
  int64_t bytes = 0;
};

class GradientReducer {
 public:
  // `order`: every parameter, in the order backward finishes them.
  GradientReducer(std::span<Parameter* const> order, Communicator& group, double bucket_mb);
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Starts an optimizer step: no gradient is final yet.
  void begin_step();
  // Starts a micro-batch's backward: `communicate` on the last micro-batch of a step only (the
  // earlier ones just accumulate locally). Under pipeline parallelism with several model chunks a
  // backward covers one chunk: `communicate` when it is that chunk's last micro-batch; only the
  // parameters it reports count toward their buckets.
  void begin_backward(bool communicate);
  // Backward has finished these parameters' gradients: start every bucket now complete, and give
  // the ones in flight a chance to progress.
  void ready(std::span<Parameter* const> params);
  // Starts what is left and waits for every bucket: afterwards each gradient is the dp average.
  void finish();
  const ReducerStats& last_stats() const { return stats_; }
  int64_t n_buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    Tensor flat;                  // every gradient of the bucket, back to back
    std::vector<Parameter*> params;
    int64_t pending = 0;          // parameters not yet ready in this micro-batch
    bool started = false;
    CommHandle handle;
  };
  void start(Bucket& bucket);

  Communicator& group_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // by parameter index in params_
  std::vector<Parameter*> params_;
  bool communicate_ = false;
  bool step_communicates_ = false;  // some backward of this step communicated
  ReducerStats stats_;
  std::chrono::steady_clock::time_point first_start_;
};

}  // namespace strata
