// Pipeline schedules as data: for each pipeline rank, the list of actions it performs in one
// optimizer step (forward micro-batch i of model chunk c, backward it, and the transfers around
// them). One engine (parallel/pipeline.h) runs any such list; the schedules differ only here.
//
// Layout: `stages` pipeline ranks each hold `virtual_stages` model chunks; chunk c of rank r is
// virtual stage c * stages + r, so activations flow rank 0 -> 1 -> ... -> stages-1 -> (next chunk)
// rank 0 -> ... and gradients the opposite way. Virtual stage 0 holds the embedding, the last one
// the head and the loss.
//
// Transfers: a recv action *starts* a non-blocking receive (the engine waits for it only when the
// compute action that needs it comes up); a send action starts a non-blocking send. Receives are
// placed one compute action ahead of the compute that consumes them, so each transfer overlaps
// the compute before it. Between two ranks, activations and gradients travel on separate
// channels, and on each channel (source, destination, kind) the receiver posts its receives in the
// order the sender sends: every rank runs its forwards in the same (micro-batch, chunk) order, and
// its backwards in the same order, which is what makes in-order matching correct.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace strata {

enum class PipelineSchedule : uint8_t {
  gpipe,        // every forward, then every backward: holds all m micro-batches' activations
  one_f_one_b,  // "1f1b": stage s runs stages-s-1 warm-up forwards, then alternates: <= stages-s held
  interleaved,  // 1F1B over virtual_stages chunks per rank (Narayanan et al. 2021): smaller bubble
};
PipelineSchedule parse_pipeline_schedule(const std::string& name);  // "gpipe" | "1f1b" | "interleaved"
const char* pipeline_schedule_name(PipelineSchedule kind);

enum class PipeOp : uint8_t {
  recv_forward,   // start receiving the input activation of (microbatch, chunk) from the previous virtual stage
  forward,        // run forward of (microbatch, chunk)
  send_forward,   // start sending the output activation of (microbatch, chunk) to the next virtual stage
  recv_backward,  // start receiving the gradient of the output of (microbatch, chunk) from the next virtual stage
  backward,       // run backward of (microbatch, chunk)
  send_backward,  // start sending the gradient of the input of (microbatch, chunk) to the previous virtual stage
};
const char* pipe_op_name(PipeOp op);

struct PipeAction {
  PipeOp op;
  int microbatch;
  int chunk;  // this rank's model chunk, 0 <= chunk < virtual_stages
  bool operator==(const PipeAction&) const = default;
};

struct PipelineShape {
  int stages = 1;          // pipeline ranks (parallel.pp)
  int virtual_stages = 1;  // model chunks per rank (parallel.virtual_stages; 1 unless interleaved)
  int microbatches = 1;    // micro-batches per optimizer step
};

// Refuses, with an Error naming the values, a shape the schedule cannot run: stages < 1,
// microbatches < stages, virtual_stages != 1 for gpipe/1f1b, virtual_stages < 2 for interleaved, or
// (interleaved) microbatches not a multiple of stages.
void check_pipeline_shape(PipelineSchedule kind, const PipelineShape& shape);

// The actions of pipeline rank `rank` (0 <= rank < stages) for one optimizer step. Transfers to or
// from a virtual stage that does not exist (before 0, after the last) are left out. Calls
// check_pipeline_shape first.
std::vector<PipeAction> build_pipeline_schedule(PipelineSchedule kind, const PipelineShape& shape,
                                                int rank);

// A forward-only schedule (evaluation): every micro-batch's forward through every chunk, in the
// same order on every rank, with its transfers; no backward. Any microbatches >= 1.
std::vector<PipeAction> build_forward_only_schedule(const PipelineShape& shape, int rank);

}  // namespace strata
