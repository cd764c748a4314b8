#include "comm/mpi_types.h"

#include <climits>
#include <cmath>

namespace strata {

namespace {

struct Add {
  float operator()(float a, float b) const { return a + b; }
};
// NaN wins, so an overflowed gradient anywhere is seen everywhere.
struct Max {
  float operator()(float a, float b) const {
    if (std::isnan(a) || std::isnan(b)) return NAN;
    return a > b ? a : b;
  }
};

// inout[i] = round(combine(f32(in[i]), f32(inout[i]))), the MPI_User_function contract.
template <typename Half, typename Combine>
void half_reduce(void* in, void* inout, int* len, MPI_Datatype* /*type*/) {
  const Half* a = static_cast<const Half*>(in);
  Half* b = static_cast<Half*>(inout);
  const Combine combine;
  for (int i = 0; i < *len; ++i) b[i] = Half::from_float(combine(a[i].to_float(), b[i].to_float()));
}

template <typename T>
void divide_as(T* p, int64_t n, T divisor) {
  for (int64_t i = 0; i < n; ++i) p[i] = p[i] / divisor;
}

template <typename Half>
void divide_half(Half* p, int64_t n, float divisor) {
  for (int64_t i = 0; i < n; ++i) p[i] = Half::from_float(p[i].to_float() / divisor);
}

void free_op(MPI_Op& op) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (op != MPI_OP_NULL && !finalized) MPI_Op_free(&op);
  op = MPI_OP_NULL;
}

}  // namespace

MPI_Datatype mpi_datatype(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::bf16:
    case DType::f16:
    case DType::u16:
      return MPI_UINT16_T;
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
  }
  STRATA_FAIL("unknown dtype code ", static_cast<int>(dtype));
}

int mpi_count(int64_t n) {
  STRATA_CHECK(n >= 0 && n <= INT_MAX, n, " elements exceed MPI's count limit (", INT_MAX,
               " per call); split the tensor");
  return static_cast<int>(n);
}

int mpi_comm_rank(MPI_Comm comm) {
  int rank = 0;
  STRATA_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  return rank;
}

int mpi_comm_size(MPI_Comm comm) {
  int size = 0;
  STRATA_MPI_CHECK(MPI_Comm_size(comm, &size));
  return size;
}

std::vector<int64_t> mpi_all_gather_i64(MPI_Comm comm, std::span<const int64_t> mine) {
  std::vector<int64_t> all(mine.size() * static_cast<size_t>(mpi_comm_size(comm)));
  const int count = mpi_count(static_cast<int64_t>(mine.size()));
  STRATA_MPI_CHECK(
      MPI_Allgather(mine.data(), count, MPI_INT64_T, all.data(), count, MPI_INT64_T, comm));
  return all;
}

void divide_elements(void* data, int64_t n, DType dtype, int divisor) {
  switch (dtype) {
    case DType::f32:
      return divide_as(static_cast<float*>(data), n, static_cast<float>(divisor));
    case DType::f64:
      return divide_as(static_cast<double*>(data), n, static_cast<double>(divisor));
    case DType::bf16:
      return divide_half(static_cast<bf16*>(data), n, static_cast<float>(divisor));
    case DType::f16:
      return divide_half(static_cast<f16*>(data), n, static_cast<float>(divisor));
    default:
      STRATA_FAIL("divide_elements: ", dtype_name(dtype), " is not a floating dtype");
  }
}

MpiReduceOps::MpiReduceOps() {
  constexpr int kCommutative = 1;
  STRATA_MPI_CHECK(MPI_Op_create(&half_reduce<bf16, Add>, kCommutative, &bf16_sum_));
  STRATA_MPI_CHECK(MPI_Op_create(&half_reduce<bf16, Max>, kCommutative, &bf16_max_));
  STRATA_MPI_CHECK(MPI_Op_create(&half_reduce<f16, Add>, kCommutative, &f16_sum_));
  STRATA_MPI_CHECK(MPI_Op_create(&half_reduce<f16, Max>, kCommutative, &f16_max_));
}

MpiReduceOps::~MpiReduceOps() {
  free_op(bf16_sum_);
  free_op(bf16_max_);
  free_op(f16_sum_);
  free_op(f16_max_);
}

MPI_Op MpiReduceOps::get(ReduceOp op, DType dtype) const {
  const bool sum = op == ReduceOp::sum || op == ReduceOp::avg;
  if (dtype == DType::bf16) return sum ? bf16_sum_ : bf16_max_;
  if (dtype == DType::f16) return sum ? f16_sum_ : f16_max_;
  return sum ? MPI_SUM : MPI_MAX;
}

}  // namespace strata
