// The collective-test harness (nccl-tests style): for each collective, how to fill the input, how
// each rank computes the exact expected output locally, and how to run it. Inputs come from
// Philox(seed, stream, index) with stream = the sending rank (or sender*size + receiver for
// all-to-all), scaled so every sum over the group is exact in the dtype: the expected output is
// exact and compared bit for bit, whatever order MPI or NCCL reduce in. The checks take the
// Communicator and the Allocator the tensors live on, so the MPI (CPU), MPI-staged (CUDA) and
// NCCL backends run the same table.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/allocator.h"

namespace strata::testing {

// The world communicator of the test process (made by the test main).
Communicator& world();
void set_world(Communicator* comm);

// Element `index` of stream `stream`: exactly representable in `dtype`, with magnitude small enough
// that a sum over `group_size` ranks is exact too.
double input_value(DType dtype, uint64_t seed, uint64_t stream, int64_t index, int group_size);

Tensor make_tensor(const std::vector<double>& values, DType dtype, Allocator& allocator);
std::vector<double> read_values(const Tensor& t);
// `want` rounded to dtype, as a kernel writing dtype would store it.
double round_to(DType dtype, double value);
// Compares element by element; one failure naming the count and the first few wrong elements.
void expect_values(const Tensor& got, const std::vector<double>& want, const std::string& what);

// The expected result of reducing `values[r]` (one per rank) with `op`, element i.
double reduce_expected(DType dtype, ReduceOp op, const std::vector<double>& per_rank);

struct CollectiveCase {
  DType dtype;
  ReduceOp op;    // reductions only
  int64_t n;      // elements per rank
  bool async;     // the *_async form, waited on
  bool in_place;  // reduce_scatter and all_gather
};
std::string case_name(const CollectiveCase& c);            // "bf16_avg_n1000_async_inplace"
void PrintTo(const CollectiveCase& c, std::ostream* out);  // gtest prints the case by its name

void check_all_reduce(Communicator& comm, Allocator& allocator, const CollectiveCase& c,
                      uint64_t seed);
void check_reduce_scatter(Communicator& comm, Allocator& allocator, const CollectiveCase& c,
                          uint64_t seed);
void check_all_gather(Communicator& comm, Allocator& allocator, const CollectiveCase& c,
                      uint64_t seed);
void check_broadcast(Communicator& comm, Allocator& allocator, const CollectiveCase& c, int root,
                     uint64_t seed);
// Every rank sends to rank+1 and receives from rank-1 (ring), as send_recv, or as send_async and
// recv_async handles waited on together.
void check_ring(Communicator& comm, Allocator& allocator, const CollectiveCase& c, bool use_handles,
                uint64_t seed);
// Uneven all-to-all: rank i sends count(i, j) = ((3i + 5j + seed) mod 7) * unit elements to rank j
// (some zero).
void check_all_to_all(Communicator& comm, Allocator& allocator, const CollectiveCase& c,
                      int64_t unit, uint64_t seed);

// The message of the Error `body` throws ("no error" when it throws none).
template <typename F>
std::string error_of(F&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Whether `message` contains `part` (a failure that prints both otherwise).
void expect_contains(const std::string& message, const std::string& part);

}  // namespace strata::testing
