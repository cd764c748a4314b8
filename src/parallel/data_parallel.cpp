#include "parallel/data_parallel.h"

#include <algorithm>

#include "core/allocator.h"
#include "core/error.h"

namespace strata {

namespace {
double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

GradientReducer::GradientReducer(std::span<Parameter* const> order, Communicator& group,
                                 double bucket_mb)
    : group_(group), params_(order.begin(), order.end()) {
  const auto limit = static_cast<int64_t>(bucket_mb * 1024 * 1024);
  // Cut the order into buckets of at most `limit` bytes (a larger parameter gets one of its own);
  // a bucket holds one dtype.
  std::vector<std::vector<Parameter*>> groups;
  int64_t bytes = 0;
  for (Parameter* p : params_) {
    const auto size = static_cast<int64_t>(p->accum().nbytes());
    const bool fits = !groups.empty() && bytes + size <= limit &&
                      groups.back().front()->accum().dtype() == p->accum().dtype();
    if (!fits) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(p);
    bytes += size;
  }
  bucket_of_.resize(params_.size());
  buckets_.resize(groups.size());
  for (size_t b = 0; b < groups.size(); ++b) {
    Bucket& bucket = buckets_[b];
    bucket.params = groups[b];
    int64_t n = 0;
    for (Parameter* p : bucket.params) n += p->accum().numel();
    const MemoryScope scope(MemoryKind::grads);
    // Where the gradients are (a CUDA device's memory for a run on a GPU).
    bucket.flat = Tensor::zeros({n}, bucket.params.front()->accum().dtype(), allocator_of(bucket.params.front()->accum()));
    int64_t offset = 0;
    for (Parameter* p : bucket.params) {
      // The gradient becomes a view of the bucket; its values (zeros at construction) come along.
      Tensor view = bucket.flat.slice(0, offset, offset + p->accum().numel()).view(p->accum().shape());
      view.copy_from(p->accum().contiguous());
      p->accum() = view;
      offset += p->accum().numel();
      const auto index = static_cast<size_t>(std::find(params_.begin(), params_.end(), p) - params_.begin());
      bucket_of_[index] = b;
    }
    stats_.bytes += static_cast<int64_t>(bucket.flat.nbytes());
  }
  stats_.buckets = static_cast<int64_t>(buckets_.size());
}

void GradientReducer::begin_backward(bool communicate) {
  communicate_ = communicate;
  step_communicates_ |= communicate;
}

void GradientReducer::begin_step() {
  communicate_ = step_communicates_ = false;
  for (Bucket& b : buckets_) {
    STRATA_CHECK(!b.started || b.handle.is_done(), "gradient reducer: a bucket is still in flight "
                 "at the start of a backward (finish() was not called)");
    b.pending = static_cast<int64_t>(b.params.size());
    b.started = false;
  }
  stats_.exposed_ms = stats_.reduce_ms = 0;
}

void GradientReducer::start(Bucket& bucket) {
  if (std::none_of(buckets_.begin(), buckets_.end(), [](const Bucket& b) { return b.started; }))
    first_start_ = std::chrono::steady_clock::now();
  bucket.started = true;
  bucket.handle = group_.all_reduce_async(bucket.flat, ReduceOp::avg);
}

void GradientReducer::ready(std::span<Parameter* const> params) {
  if (!communicate_) return;
  for (Parameter* p : params) {
    const auto index = static_cast<size_t>(std::find(params_.begin(), params_.end(), p) - params_.begin());
    STRATA_CHECK(index < params_.size(), "gradient reducer: parameter '", p->name, "' is not managed");
    Bucket& bucket = buckets_[bucket_of_[index]];
    if (--bucket.pending == 0) start(bucket);
  }
  // Nonblocking MPI collectives progress only inside MPI calls: poll the ones in flight.
  for (Bucket& b : buckets_)
    if (b.started) b.handle.is_done();
}

void GradientReducer::finish() {
  if (!step_communicates_) return;
  const auto begin = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_)
    if (!b.started) start(b);
  for (Bucket& b : buckets_) b.handle.wait();
  const auto end = std::chrono::steady_clock::now();
  stats_.exposed_ms = ms_between(begin, end);
  stats_.reduce_ms = ms_between(first_start_, end);
  communicate_ = step_communicates_ = false;
}

}  // namespace strata
