// cuBLASLt products for Strata's row-major tensors. cuBLASLt is column-major; a row-major [r, c]
// matrix is the column-major [c, r] one (its transpose) with the same bytes, so
//   C = op(a) @ op(b)   is computed as   C^T = op(b)^T @ op(a)^T
// with cuBLASLt's A = b's memory (transposed iff trans_b) and B = a's memory (transposed iff
// trans_a), D = C^T [n x m], leading dimension n. In those terms the row-major epilogues become
// cuBLASLt's: the bias over c's columns is a bias over D's rows (BIAS), the column sums of the new
// c are the row sums of D (DGELU_BGRAD), and the sums of op(a)'s rows over k are those of
// cuBLASLt's op(B) (BGRADB).
//
// Per device (CudaDevice::state): one cuBLASLt handle, one workspace, and a plan cache: the
// matmul descriptor, the four layouts and the heuristic's algorithm for each shape, dtype,
// transposes, epilogue and pointer alignment, made once and reused (only the epilogue's pointers
// are set again per call). Products cuBLASLt cannot fuse an epilogue into run it as separate
// kernels (kernels/cuda/gemm_epilogue.cu), said once per shape in a warning.
#include "kernels/cuda/gemm.h"

#include <cublasLt.h>

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <tuple>

#include "core/cuda/cuda_check.h"
#include "core/cuda/cuda_device.h"
#include "core/log.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm_epilogue.h"

namespace strata::cuda {
namespace {

// Enough for cuBLASLt's split-k and stream-k algorithms on Hopper (NVIDIA suggests 32 MiB there).
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

cudaDataType_t data_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      STRATA_FAIL("gemm: the CUDA backend takes f32, bf16 or f16, not ", dtype_name(dtype));
  }
}

// The largest power of two up to 256 that divides the address: what the heuristic may assume.
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 1;
  while (a < 256 && address % (2 * a) == 0) a *= 2;
  return address == 0 ? 256 : a;
}

struct PlanKey {
  bool trans_a, trans_b;
  int64_t batch, m, n, k;
  DType dtype;
  uint32_t epilogue;
  uint32_t align[7];  // a, b, c, bias, gelu aux, dgelu aux, bias grad
  auto tie() const {
    return std::tie(trans_a, trans_b, batch, m, n, k, dtype, epilogue, align[0], align[1], align[2],
                    align[3], align[4], align[5], align[6]);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // cuBLASLt's A, B and C (= D)
  cublasLtMatmulAlgo_t algo{};
  bool found = false;  // the heuristic offered an algorithm
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    for (cublasLtMatrixLayout_t l : {a, b, c})
      if (l) cublasLtMatrixLayoutDestroy(l);
  }
};

template <typename T>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  STRATA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof value));
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t batch) {
  cublasLtMatrixLayout_t l = nullptr;
  STRATA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(rows),
                                                 static_cast<uint64_t>(cols), rows));
  if (batch > 1) {
    const auto count = static_cast<int32_t>(batch);
    const int64_t stride = rows * cols;
    STRATA_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                         &count, sizeof count));
    STRATA_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  }
  return l;
}

}  // namespace

// The per-device state (CudaDevice::state<GemmState>()).
class GemmState {
 public:
  explicit GemmState(CudaDevice& device) : device_(device) {
    int previous = 0;
    STRATA_CUDA_CHECK(cudaGetDevice(&previous));
    STRATA_CUDA_CHECK(cudaSetDevice(device.index()));
    const cublasStatus_t rc = cublasLtCreate(&handle_);
    STRATA_CUDA_CHECK(cudaSetDevice(previous));
    STRATA_CUBLAS_CHECK(rc);
    workspace_ = device_.allocate(kWorkspaceBytes);
  }
  ~GemmState() {
    plans_.clear();
    if (handle_) cublasLtDestroy(handle_);
    if (workspace_) device_.deallocate(workspace_, kWorkspaceBytes);
  }
  GemmState(const GemmState&) = delete;
  GemmState& operator=(const GemmState&) = delete;

  // The plan for `key`, made on first use; the caller holds mutex().
  Plan& plan(const PlanKey& key, const GemmCall& call) {
    auto found = plans_.find(key);
    if (found != plans_.end()) {
      ++stats_.cache_hits;
      return *found->second;
    }
    auto plan = std::make_unique<Plan>();
    const cudaDataType_t type = data_type(key.dtype);
    STRATA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const int32_t op_a = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                  op_b = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, key.epilogue);
    const int64_t m = key.m, n = key.n, k = key.k;
    plan->a = make_layout(type, key.trans_b ? k : n, key.trans_b ? n : k, key.batch);
    plan->b = make_layout(type, key.trans_a ? m : k, key.trans_a ? k : m, key.batch);
    plan->c = make_layout(type, n, m, key.batch);
    if (key.epilogue & 128) {  // an aux matrix: the shape of D
      set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, n);
      if (key.batch > 1)
        set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, m * n);
    }
    // The heuristic reads the epilogue's pointers for their alignment: give it this call's.
    set_pointers(*plan, key.epilogue, call);

    cublasLtMatmulPreference_t pref = nullptr;
    STRATA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t workspace = kWorkspaceBytes;
    // cuBLASLt's A is b's memory, its B a's.
    const uint32_t promised[4] = {key.align[1], key.align[0], key.align[2], key.align[2]};
    cublasStatus_t rc = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace);
    const cublasLtMatmulPreferenceAttributes_t align_attrs[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4 && rc == CUBLAS_STATUS_SUCCESS; ++i)
      rc = cublasLtMatmulPreferenceSetAttribute(pref, align_attrs[i], &promised[i],
                                                sizeof promised[i]);
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    if (rc == CUBLAS_STATUS_SUCCESS)
      rc = cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->c, plan->c,
                                          pref, 1, &result, &returned);
    cublasLtMatmulPreferenceDestroy(pref);
    // No algorithm for a fused epilogue is not an error: the caller runs the epilogue apart.
    // Without an epilogue it is.
    if (key.epilogue == CUBLASLT_EPILOGUE_DEFAULT) {
      STRATA_CHECK(
          rc == CUBLAS_STATUS_SUCCESS && returned > 0, "gemm: cuBLASLt offers no algorithm for [",
          m, ", ", k, "] @ [", k, ", ", n, "] x", key.batch, " in ", dtype_name(key.dtype),
          (rc == CUBLAS_STATUS_SUCCESS ? std::string() : ": " + detail::cublas_error_string(rc)));
    }
    plan->found =
        rc == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (plan->found) plan->algo = result.algo;
    ++stats_.plans_created;
    return *plans_.emplace(key, std::move(plan)).first->second;
  }

  static void set_pointers(Plan& plan, uint32_t epilogue, const GemmCall& call) {
    if (epilogue & CUBLASLT_EPILOGUE_BIAS)
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, call.bias);
    if (epilogue & 16 || epilogue == CUBLASLT_EPILOGUE_BGRADB)
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
               static_cast<const void*>(call.bias_grad));
    if (epilogue & 32)
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, call.gelu_aux);
    if (epilogue & 64)
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, call.dgelu_aux);
  }

  void run(const Plan& plan, const GemmCall& call) {
    const float alpha = static_cast<float>(call.alpha), beta = static_cast<float>(call.beta);
    STRATA_CUBLAS_CHECK(cublasLtMatmul(handle_, plan.desc, &alpha, call.b, plan.a, call.a, plan.b,
                                       &beta, call.c, plan.c, call.c, plan.c, &plan.algo,
                                       workspace_, kWorkspaceBytes, device_.stream()));
  }

  // Says once per fused plan key that its epilogue runs as separate kernels (slower, same result).
  void note_unfused(const PlanKey& key, const char* why) {
    if (!unfused_.insert(key).second) return;
    log::warn("gemm: the epilogue of [", key.m, ", ", key.k, "] @ [", key.k, ", ", key.n, "] x",
              key.batch, " ", dtype_name(key.dtype), " runs as separate kernels: ", why);
  }

  std::mutex& mutex() { return mutex_; }
  GemmPlanStats stats() const { return stats_; }

 private:
  CudaDevice& device_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  std::mutex mutex_;
  std::map<PlanKey, std::unique_ptr<Plan>> plans_;
  std::set<PlanKey> unfused_;
  GemmPlanStats stats_;
};

namespace {

// cuBLASLt's epilogue for a call's row-major one (see the top of the file).
uint32_t epilogue_of(const GemmCall& call) {
  if (call.dgelu_aux)
    return call.bias_grad ? CUBLASLT_EPILOGUE_DGELU_BGRAD : CUBLASLT_EPILOGUE_DGELU;
  if (call.bias_grad) return CUBLASLT_EPILOGUE_BGRADB;
  if (call.gelu) {
    if (call.gelu_aux)
      return call.bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    return call.bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  }
  return call.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
}

PlanKey key_of(const GemmCall& call, uint32_t epilogue) {
  PlanKey key{call.trans_a, call.trans_b, call.batch, call.m, call.n,
              call.k,       call.dtype,   epilogue,   {}};
  const void* pointers[7] = {call.a,        call.b,         call.c,        call.bias,
                             call.gelu_aux, call.dgelu_aux, call.bias_grad};
  for (int i = 0; i < 7; ++i)
    key.align[i] = i < 3 || epilogue != CUBLASLT_EPILOGUE_DEFAULT ? alignment_of(pointers[i]) : 0;
  return key;
}

// The epilogue as kernels of their own, after c holds the product (plus beta * c).
void separate_epilogue(const GemmCall& call, cudaStream_t stream) {
  const int64_t rows = call.batch * call.m;
  if (call.dgelu_aux) {
    dgelu_multiply(call.c, call.dgelu_aux, call.dtype, rows * call.n, stream);
    if (call.bias_grad)
      strided_sums(call.c, call.dtype, call.n, rows, 1, call.n, call.bias_grad, stream);
    return;
  }
  if (call.bias_grad) {
    // op(a)[i, q] is a[i * k + q], or a[q * m + i] when trans_a.
    strided_sums(call.a, call.dtype, call.m, call.k, call.trans_a ? 1 : call.k,
                 call.trans_a ? call.m : 1, call.bias_grad, stream);
    return;
  }
  if (call.bias || call.gelu)
    bias_gelu(call.c, call.dtype, rows, call.n, call.bias, call.gelu, call.gelu_aux, stream);
}

}  // namespace

void gemm(CudaDevice& device, const GemmCall& call) {
  if (call.batch == 0 || call.m == 0 || call.n == 0) return;
  if (call.k == 0) {
    // cuBLASLt takes no empty inner dimension; the product is zero, so c = beta * c.
    const int64_t count = call.batch * call.m * call.n;
    if (call.beta == 0.0)
      fill(call.c, call.dtype, count, 0.0, device.stream());
    else if (call.beta != 1.0)
      scale(call.c, call.dtype, count, call.beta, device.stream());
    separate_epilogue(call, device.stream());
    return;
  }
  GemmState& state = device.state<GemmState>();
  std::lock_guard<std::mutex> lock(state.mutex());
  const uint32_t fused = epilogue_of(call);
  // cuBLASLt documents that a GELU aux needs a leading dimension (n here) divisible by 8.
  const bool aux_fits = !(fused & 128) || call.n % 8 == 0;
  const PlanKey fused_key = key_of(call, fused);
  if (!aux_fits) {
    state.note_unfused(fused_key, "cuBLASLt needs a GELU aux leading dimension (n) divisible by 8");
  } else {
    Plan& plan = state.plan(fused_key, call);
    if (plan.found) {
      GemmState::set_pointers(plan, fused, call);
      state.run(plan, call);
      return;
    }
    state.note_unfused(fused_key, "cuBLASLt offers no algorithm that fuses it");
  }
  // The plain product, then the epilogue as kernels of their own.
  Plan& plan = state.plan(key_of(call, CUBLASLT_EPILOGUE_DEFAULT), call);
  state.run(plan, call);
  separate_epilogue(call, device.stream());
}

GemmPlanStats gemm_plan_stats(CudaDevice& device) {
  GemmState& state = device.state<GemmState>();
  std::lock_guard<std::mutex> lock(state.mutex());
  return state.stats();
}

}  // namespace strata::cuda
