#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <optional>

#include "core/error.h"

namespace strata {

namespace {

// Where the micro-batch count a user sees comes from, appended to every message about it.
constexpr const char* kMicrobatchesAre =
    " (micro-batches = train.global_batch / (train.micro_batch x parallel.dp))";

void check_rank(const PipelineShape& shape, int rank) {
  STRATA_CHECK(rank >= 0 && rank < shape.stages, "pipeline rank ", rank,
               " is out of range for parallel.pp = ", shape.stages, " (valid: 0..",
               shape.stages - 1, ")");
}

// All three training schedules are one shape: `warmup` forwards, then one forward and one backward
// at a time, then the backwards left over. gpipe is warmup = n (every forward first); 1f1b and
// interleaved run just enough warm-up forwards to cover the wait for the first gradient, so a rank
// holds at most warmup + 1 micro-batches' activations instead of all of them.
std::vector<PipeAction> warmup_steady_cooldown(const std::vector<PipeAction>& forwards,
                                               const std::vector<PipeAction>& backwards,
                                               int warmup) {
  const int n = static_cast<int>(forwards.size());
  warmup = std::min(warmup, n);
  std::vector<PipeAction> order(forwards.begin(), forwards.begin() + warmup);
  for (int j = 0; j < n - warmup; ++j) {
    order.push_back(forwards[static_cast<size_t>(warmup + j)]);
    order.push_back(backwards[static_cast<size_t>(j)]);
  }
  order.insert(order.end(), backwards.begin() + (n - warmup), backwards.end());
  return order;
}

// Micro-batches 0..m-1 of the single chunk, ascending: the order of both forwards and backwards on
// every rank for gpipe and 1f1b.
std::vector<PipeAction> ascending(PipeOp op, int microbatches) {
  std::vector<PipeAction> order;
  for (int i = 0; i < microbatches; ++i) order.push_back({op, i, 0});
  return order;
}

// Megatron-LM's interleaved order (Narayanan et al. 2021, sec. 2.2.2): micro-batches go through the
// chunks in groups of `stages`, so the k-th forward is micro-batch (k / (p v)) p + k % p of chunk
// (k / p) % v, and the k-th backward the same micro-batch of the mirrored chunk v-1-(k / p) % v.
// The order is the same on every rank, which is what in-order channels need.
std::vector<PipeAction> interleaved_order(PipeOp op, const PipelineShape& shape) {
  const int p = shape.stages, v = shape.virtual_stages;
  std::vector<PipeAction> order;
  for (int k = 0; k < shape.microbatches * v; ++k) {
    const int in_order = (k / p) % v;
    const int chunk = op == PipeOp::forward ? in_order : v - 1 - in_order;
    order.push_back({op, (k / (p * v)) * p + k % p, chunk});
  }
  return order;
}

// Warm-up forwards of rank s before its first backward (Megatron-LM's count). That backward is
// micro-batch 0 of chunk v-1, so rank s first runs the (v-1) p forwards of the earlier chunks'
// first group, then 2 (p-s-1) more while micro-batch 0 travels through the p-s-1 later ranks and
// its gradient comes back. With m == p there is no steady phase to win: every forward goes first.
int interleaved_warmup(const PipelineShape& shape, int rank) {
  const int p = shape.stages, v = shape.virtual_stages, total = shape.microbatches * v;
  if (shape.microbatches == p) return total;
  return std::min((p - rank - 1) * 2 + (v - 1) * p, total);
}

// The transfer a compute action needs posted before it, and the one it starts after itself. Chunk c
// of rank s is virtual stage c p + s; the neighbour virtual stages sit on rank s +- 1, wrapping
// from rank p-1 to rank 0 one chunk later (and back).
struct Transfers {
  std::optional<PipeAction> receive;
  std::optional<PipeAction> send;
};

Transfers transfers_of(const PipeAction& compute, const PipelineShape& shape, int rank) {
  const int stage = compute.chunk * shape.stages + rank;
  const int last = shape.stages * shape.virtual_stages - 1;
  const int i = compute.microbatch, c = compute.chunk;
  Transfers t;
  if (compute.op == PipeOp::forward) {
    if (stage > 0) t.receive = PipeAction{PipeOp::recv_forward, i, c};
    if (stage < last) t.send = PipeAction{PipeOp::send_forward, i, c};
  } else {
    if (stage < last) t.receive = PipeAction{PipeOp::recv_backward, i, c};
    if (stage > 0) t.send = PipeAction{PipeOp::send_backward, i, c};
  }
  return t;
}

// Adds the transfers around a list of compute actions. Each receive is posted one compute action
// ahead of its consumer, so it overlaps that compute while at most two receives are outstanding per
// rank (buffers stay bounded). Receives are posted in compute order; since every rank runs its
// forwards (and its backwards) in one common order, and the wrap from rank p-1 to rank 0 only
// shifts the chunk by one (which keeps that order), each channel's receives are posted in the
// order its sender sends, and untagged in-order matching pairs them correctly.
std::vector<PipeAction> with_transfers(const std::vector<PipeAction>& computes,
                                       const PipelineShape& shape, int rank) {
  std::vector<PipeAction> actions;
  const auto post_receive_for = [&](size_t j) {
    if (j >= computes.size()) return;
    if (auto receive = transfers_of(computes[j], shape, rank).receive) actions.push_back(*receive);
  };
  post_receive_for(0);
  for (size_t j = 0; j < computes.size(); ++j) {
    post_receive_for(j + 1);
    actions.push_back(computes[j]);
    if (auto send = transfers_of(computes[j], shape, rank).send) actions.push_back(*send);
  }
  return actions;
}

}  // namespace

PipelineSchedule parse_pipeline_schedule(const std::string& name) {
  if (name == "gpipe") return PipelineSchedule::gpipe;
  if (name == "1f1b") return PipelineSchedule::one_f_one_b;
  if (name == "interleaved") return PipelineSchedule::interleaved;
  STRATA_FAIL("unknown parallel.pp_schedule '", name, "' (valid: gpipe, 1f1b, interleaved)");
}

const char* pipeline_schedule_name(PipelineSchedule kind) {
  switch (kind) {
    case PipelineSchedule::gpipe:
      return "gpipe";
    case PipelineSchedule::one_f_one_b:
      return "1f1b";
    case PipelineSchedule::interleaved:
      return "interleaved";
  }
  return "unknown";
}

const char* pipe_op_name(PipeOp op) {
  switch (op) {
    case PipeOp::recv_forward:
      return "recv_forward";
    case PipeOp::forward:
      return "forward";
    case PipeOp::send_forward:
      return "send_forward";
    case PipeOp::recv_backward:
      return "recv_backward";
    case PipeOp::backward:
      return "backward";
    case PipeOp::send_backward:
      return "send_backward";
  }
  return "unknown";
}

void check_pipeline_shape(PipelineSchedule kind, const PipelineShape& shape) {
  const char* name = pipeline_schedule_name(kind);
  const int p = shape.stages, v = shape.virtual_stages, m = shape.microbatches;
  STRATA_CHECK(p >= 1, "parallel.pp must be at least 1, got ", p);
  if (kind == PipelineSchedule::interleaved) {
    STRATA_CHECK(v >= 2, "parallel.pp_schedule interleaved needs parallel.virtual_stages >= 2 ",
                 "model chunks per rank, got ", v,
                 " (with one chunk per rank use parallel.pp_schedule 1f1b)");
  } else {
    STRATA_CHECK(v == 1, "parallel.pp_schedule ", name,
                 " runs one model chunk per rank: parallel.virtual_stages must be 1, got ", v,
                 " (virtual stages need parallel.pp_schedule interleaved)");
  }
  STRATA_CHECK(m >= p, "parallel.pp_schedule ", name, " needs at least parallel.pp = ", p,
               " micro-batches per step, got ", m, kMicrobatchesAre);
  if (kind == PipelineSchedule::interleaved) {
    STRATA_CHECK(m % p == 0, "parallel.pp_schedule interleaved needs the micro-batches per step (",
                 m, ") to be a multiple of parallel.pp = ", p, kMicrobatchesAre);
  }
}

std::vector<PipeAction> build_pipeline_schedule(PipelineSchedule kind, const PipelineShape& shape,
                                                int rank) {
  check_pipeline_shape(kind, shape);
  check_rank(shape, rank);
  const int p = shape.stages, m = shape.microbatches;
  std::vector<PipeAction> computes;
  switch (kind) {
    case PipelineSchedule::gpipe:
      computes =
          warmup_steady_cooldown(ascending(PipeOp::forward, m), ascending(PipeOp::backward, m), m);
      break;
    case PipelineSchedule::one_f_one_b:
      // Rank s's first backward can start once micro-batch 0 has gone through the p-s-1 ranks
      // after it, so p-s-1 forwards fill the wait and at most p-s activations are alive.
      computes = warmup_steady_cooldown(ascending(PipeOp::forward, m),
                                        ascending(PipeOp::backward, m), p - rank - 1);
      break;
    case PipelineSchedule::interleaved:
      computes = warmup_steady_cooldown(interleaved_order(PipeOp::forward, shape),
                                        interleaved_order(PipeOp::backward, shape),
                                        interleaved_warmup(shape, rank));
      break;
  }
  return with_transfers(computes, shape, rank);
}

std::vector<PipeAction> build_forward_only_schedule(const PipelineShape& shape, int rank) {
  STRATA_CHECK(shape.stages >= 1, "parallel.pp must be at least 1, got ", shape.stages);
  STRATA_CHECK(shape.virtual_stages >= 1, "parallel.virtual_stages must be at least 1, got ",
               shape.virtual_stages);
  STRATA_CHECK(shape.microbatches >= 1,
               "a forward-only pipeline step needs at least 1 micro-batch, got ",
               shape.microbatches);
  check_rank(shape, rank);
  // Micro-batch-major (each rank takes micro-batch i through all its chunks before i+1): the same
  // order on every rank, so the channels stay in order; with no backward there is no warm-up.
  std::vector<PipeAction> computes;
  for (int i = 0; i < shape.microbatches; ++i)
    for (int c = 0; c < shape.virtual_stages; ++c) computes.push_back({PipeOp::forward, i, c});
  return with_transfers(computes, shape, rank);
}

}  // namespace strata
