// The simulated cuBLASLt against what the library documents: column-major products with
// transposes and the bias epilogue, algorithms that hold callers to the pointer alignment their
// preference promised, and the GELU aux's leading-dimension rule.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <vector>

namespace {

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr
#define LT_OK(expr) ASSERT_EQ((expr), CUBLAS_STATUS_SUCCESS) << #expr

float* upload(const std::vector<float>& host) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, host.size() * sizeof(float)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  return static_cast<float*>(p);
}

std::vector<float> download(const float* device, size_t n) {
  std::vector<float> host(n);
  EXPECT_EQ(cudaMemcpy(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

// One f32 product D [m x n] = op(A) op(B) (+ epilogue): the descriptor, layouts and preference.
struct Product {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  Product(uint64_t a_rows, uint64_t a_cols, uint64_t b_rows, uint64_t b_cols, uint64_t m, uint64_t n,
          int32_t trans_a) {
    EXPECT_EQ(cublasLtCreate(&handle), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof trans_a),
              CUBLAS_STATUS_SUCCESS);
    cublasLtMatrixLayoutCreate(&a, CUDA_R_32F, a_rows, a_cols, static_cast<int64_t>(a_rows));
    cublasLtMatrixLayoutCreate(&b, CUDA_R_32F, b_rows, b_cols, static_cast<int64_t>(b_rows));
    cublasLtMatrixLayoutCreate(&d, CUDA_R_32F, m, n, static_cast<int64_t>(m));
    cublasLtMatmulPreferenceCreate(&pref);
  }
  ~Product() {
    cublasLtMatmulPreferenceDestroy(pref);
    for (auto* l : {a, b, d}) cublasLtMatrixLayoutDestroy(l);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(handle);
  }
  cublasStatus_t heuristic(cublasLtMatmulAlgo_t* algo) {
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    const cublasStatus_t rc = cublasLtMatmulAlgoGetHeuristic(handle, desc, a, b, d, d, pref, 1, &result, &returned);
    *algo = result.algo;
    return rc == CUBLAS_STATUS_SUCCESS && returned == 0 ? CUBLAS_STATUS_NOT_SUPPORTED : rc;
  }
  cublasStatus_t run(const float* pa, const float* pb, float* pd, const cublasLtMatmulAlgo_t* algo) {
    const float alpha = 1.0f, beta = 0.0f;
    return cublasLtMatmul(handle, desc, &alpha, pa, a, pb, b, &beta, pd, d, pd, d, algo, nullptr, 0, nullptr);
  }
};

TEST(GpuSimCublasLt, ColumnMajorProductWithTransposeAndBias) {
  // A stored 2 x 3 column-major, used transposed: op(A) = A^T is 3 x 2. B is 2 x 2. D = A^T B + bias.
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};  // columns (1,2), (3,4), (5,6)
  const std::vector<float> b = {1, 0, 1, 1};        // columns (1,0), (1,1)
  const std::vector<float> bias = {10, 20, 30};
  float *da = upload(a), *db = upload(b), *dbias = upload(bias), *dd = upload(std::vector<float>(6));
  Product p(2, 3, 2, 2, 3, 2, CUBLAS_OP_T);
  const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
  LT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  const void* bias_pointer = dbias;
  LT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_pointer,
                                       sizeof bias_pointer));
  cublasLtMatmulAlgo_t algo;
  LT_OK(p.heuristic(&algo));
  LT_OK(p.run(da, db, dd, &algo));
  // A^T = [[1,2],[3,4],[5,6]]; A^T B = [[1,3],[3,7],[5,11]]; column-major D plus the bias per row.
  EXPECT_EQ(download(dd, 6), (std::vector<float>{11, 23, 35, 13, 27, 41}));
  for (float* ptr : {da, db, dbias, dd}) CUDA_OK(cudaFree(ptr));
}

TEST(GpuSimCublasLt, AlgorithmHoldsPointersToThePromisedAlignment) {
  float *da = upload(std::vector<float>(5, 1.0f)), *db = upload(std::vector<float>(4, 1.0f));
  float* dd = upload(std::vector<float>(4));
  Product p(2, 2, 2, 2, 2, 2, CUBLAS_OP_N);
  cublasLtMatmulAlgo_t algo;
  LT_OK(p.heuristic(&algo));  // the default promise: 256-byte pointers
  EXPECT_EQ(p.run(da + 1, db, dd, &algo), CUBLAS_STATUS_INVALID_VALUE) << "A is only 4-byte aligned";
  const uint32_t four = 4;
  LT_OK(cublasLtMatmulPreferenceSetAttribute(p.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &four, sizeof four));
  LT_OK(p.heuristic(&algo));
  LT_OK(p.run(da + 1, db, dd, &algo));
  EXPECT_EQ(download(dd, 4), (std::vector<float>{2, 2, 2, 2}));
  for (float* ptr : {da, db, dd}) CUDA_OK(cudaFree(ptr));
}

TEST(GpuSimCublasLt, GeluAuxNeedsALeadingDimensionDivisibleBy8) {
  Product p(3, 2, 2, 3, 3, 3, CUBLAS_OP_N);
  float* aux = upload(std::vector<float>(16));
  const uint32_t epilogue = CUBLASLT_EPILOGUE_GELU_AUX;
  LT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  void* aux_pointer = aux;
  LT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux_pointer,
                                       sizeof aux_pointer));
  cublasLtMatmulAlgo_t algo;
  for (int64_t ld : {3, 8}) {
    LT_OK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
    EXPECT_EQ(p.heuristic(&algo), ld == 8 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED) << "AUX_LD " << ld;
  }
  CUDA_OK(cudaFree(aux));
}

}  // namespace
