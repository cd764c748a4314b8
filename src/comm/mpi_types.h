// MPI's view of Strata's dtypes: datatypes, element counts, and the reductions MPI lacks. bf16 and
// f16 travel as MPI_UINT16_T (their bits); they are reduced by user-defined MPI_Ops that widen each
// pair of elements to f32, combine, and round back to nearest even (core/half.h), at every step of
// MPI's reduction tree, as NCCL does for these types. MPI has no average: avg is the sum, then
// each element divided by the group size in f32 (f64 for f64) and rounded once.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <span>
#include <vector>

#include "comm/communicator.h"

namespace strata {

// The datatype that carries `dtype`'s elements.
MPI_Datatype mpi_datatype(DType dtype);
// `n` as an MPI count; throws an Error beyond MPI's int limit.
int mpi_count(int64_t n);
int mpi_comm_rank(MPI_Comm comm);
int mpi_comm_size(MPI_Comm comm);
// Blocking all-gather of a few int64 per rank (the same count on every rank), rank-ordered.
std::vector<int64_t> mpi_all_gather_i64(MPI_Comm comm, std::span<const int64_t> mine);
// x[i] = x[i] / divisor, in f32 (f64 for f64), for the floating dtypes.
void divide_elements(void* data, int64_t n, DType dtype, int divisor);

// The user-defined ops for bf16 and f16 (sum and max), created on construction and freed on
// destruction, so their lifetime is the owning communicator's, with no process-wide state.
class MpiReduceOps {
 public:
  MpiReduceOps();
  ~MpiReduceOps();
  MpiReduceOps(const MpiReduceOps&) = delete;
  MpiReduceOps& operator=(const MpiReduceOps&) = delete;

  // The MPI_Op that reduces `dtype` under `op` (avg: the sum op; the caller divides afterwards).
  MPI_Op get(ReduceOp op, DType dtype) const;

 private:
  MPI_Op bf16_sum_ = MPI_OP_NULL;
  MPI_Op bf16_max_ = MPI_OP_NULL;
  MPI_Op f16_sum_ = MPI_OP_NULL;
  MPI_Op f16_max_ = MPI_OP_NULL;
};

}  // namespace strata
