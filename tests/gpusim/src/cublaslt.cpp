// cuBLASLt for the simulated GPU (cublasLt.h): the documented column-major semantics of
// cublasLtMatmul, executed on the host when the stream runs. Element (i, j) of a rows x cols
// layout with leading dimension ld sits at i + j * ld; batch b starts b * STRIDED_BATCH_OFFSET
// elements further. op(A) is m x k, op(B) k x n, C and D m x n. With beta = 0, C is not read.
// Epilogues: BIAS adds bias[i] (length m) before the activation; GELU (tanh form) writes its
// input to AUX when asked; DGELU multiplies by gelu'(AUX); BGRAD writes the row sums of D to
// the bias pointer; BGRADA/BGRADB the sums of op(A)'s rows / op(B)'s columns over k. The one
// algorithm needs A, B, C and D aligned to what the preference promised (up to 16 bytes), and the
// GELU epilogues an aux leading dimension and batch stride divisible by 8, as documented.
#include <cublasLt.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine.h"

struct cublasLtContext {
  int magic = 0x5c1b1a5;
};

struct cublasLtMatrixLayoutOpaque_t {
  cudaDataType type = CUDA_R_32F;
  int32_t order = CUBLASLT_ORDER_COL;
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
  int32_t batch_count = 1;
  int64_t batch_stride = 0;
};

struct cublasLtMatmulDescOpaque_t {
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  cudaDataType_t scale = CUDA_R_32F;
  int32_t pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  int32_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int64_t bias_batch_stride = 0;
  void* aux = nullptr;
  int64_t aux_ld = 0;
  int64_t aux_batch_stride = 0;
  int32_t bias_type = -1, aux_type = -1;  // -1: D's type
};

struct cublasLtMatmulPreferenceOpaque_t {
  uint64_t max_workspace = 0;
  uint32_t search_mode = 0;
  uint32_t min_alignment[4] = {256, 256, 256, 256};  // A, B, C, D
};

namespace {

using gpusim::Engine;

void complain(const std::string& why) { std::fprintf(stderr, "gpusim: cublasLtMatmul: %s\n", why.c_str()); }

size_t type_size(int type) {
  switch (type) {
    case CUDA_R_32F: return 4;
    case CUDA_R_64F: return 8;
    case CUDA_R_16F:
    case CUDA_R_16BF: return 2;
    default: return 0;
  }
}

float bf16_to_float(uint16_t b) {
  const uint32_t u = uint32_t{b} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
  if (e == 0x1f) {
    u = sign | 0x7f800000u | (m << 13);
  } else if (e == 0) {
    if (m == 0) {
      u = sign;
    } else {
      e = 113;
      while (!(m & 0x400u)) {
        m <<= 1;
        --e;
      }
      u = sign | (e << 23) | ((m & 0x3ffu) << 13);
    }
  } else {
    u = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u, abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (abs < 0x38800000u) {
    float af;
    std::memcpy(&af, &abs, 4);
    float r = af * 16777216.0f + 8388608.0f;
    uint32_t ru;
    std::memcpy(&ru, &r, 4);
    return static_cast<uint16_t>(sign | (ru - 0x4b000000u));
  }
  return static_cast<uint16_t>(sign | ((abs + 0xfffu + ((abs >> 13) & 1u) - 0x38000000u) >> 13));
}

double load(const void* base, int type, int64_t index) {
  switch (type) {
    case CUDA_R_32F: return static_cast<const float*>(base)[index];
    case CUDA_R_64F: return static_cast<const double*>(base)[index];
    case CUDA_R_16BF: return bf16_to_float(static_cast<const uint16_t*>(base)[index]);
    default: return f16_to_float(static_cast<const uint16_t*>(base)[index]);
  }
}

void store(void* base, int type, int64_t index, double v) {
  switch (type) {
    case CUDA_R_32F: static_cast<float*>(base)[index] = static_cast<float>(v); break;
    case CUDA_R_64F: static_cast<double*>(base)[index] = v; break;
    case CUDA_R_16BF: static_cast<uint16_t*>(base)[index] = float_to_bf16(static_cast<float>(v)); break;
    default: static_cast<uint16_t*>(base)[index] = float_to_f16(static_cast<float>(v)); break;
  }
}

// GPT-2's tanh form of GELU and its derivative.
double gelu(double x) {
  const double c = std::sqrt(2.0 / M_PI), u = c * (x + 0.044715 * x * x * x);
  return 0.5 * x * (1.0 + std::tanh(u));
}
double gelu_grad(double x) {
  const double c = std::sqrt(2.0 / M_PI), u = c * (x + 0.044715 * x * x * x), t = std::tanh(u);
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x);
}

// The elements a layout spans, batches included.
uint64_t extent(const cublasLtMatrixLayoutOpaque_t& l) {
  if (l.rows == 0 || l.cols == 0) return 0;
  const uint64_t one = static_cast<uint64_t>(l.ld) * (l.cols - 1) + l.rows;
  return one + static_cast<uint64_t>(l.batch_stride) * static_cast<uint64_t>(l.batch_count - 1);
}

bool device_range(Engine& e, const void* p, uint64_t bytes, const char* what) {
  if (bytes == 0) return true;
  if (e.memory.find(p, bytes)) return true;
  complain(std::string(what) + " (" + std::to_string(bytes) + " bytes at " +
           std::to_string(reinterpret_cast<uintptr_t>(p)) + ") is not inside one live device allocation: " +
           (e.memory.in_arena(p) ? e.memory.describe(p) : "a host pointer"));
  return false;
}

struct Problem {
  uint64_t m = 0, n = 0, k = 0;
  int batches = 1;
};

// Checks the descriptors against each other as the library does; fills the problem's sizes.
cublasStatus_t validate(const cublasLtMatmulDescOpaque_t& d, const cublasLtMatrixLayoutOpaque_t& a,
                        const cublasLtMatrixLayoutOpaque_t& b, const cublasLtMatrixLayoutOpaque_t& c,
                        const cublasLtMatrixLayoutOpaque_t& dl, Problem* p) {
  for (const auto* l : {&a, &b, &c, &dl}) {
    if (l->order != CUBLASLT_ORDER_COL) {
      complain("only column-major layouts are emulated");
      return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (l->ld < static_cast<int64_t>(l->rows) || type_size(l->type) == 0) {
      complain("a layout's leading dimension is below its rows, or its type is not f32/f64/bf16/f16");
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  }
  const uint64_t m = d.trans_a == CUBLAS_OP_N ? a.rows : a.cols, k = d.trans_a == CUBLAS_OP_N ? a.cols : a.rows;
  const uint64_t kb = d.trans_b == CUBLAS_OP_N ? b.rows : b.cols, n = d.trans_b == CUBLAS_OP_N ? b.cols : b.rows;
  if (kb != k || c.rows != m || c.cols != n || dl.rows != m || dl.cols != n) {
    complain("sizes disagree: op(A) is " + std::to_string(m) + "x" + std::to_string(k) + ", op(B) " +
             std::to_string(kb) + "x" + std::to_string(n) + ", C " + std::to_string(c.rows) + "x" +
             std::to_string(c.cols) + ", D " + std::to_string(dl.rows) + "x" + std::to_string(dl.cols));
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (a.batch_count != dl.batch_count || b.batch_count != dl.batch_count || c.batch_count != dl.batch_count) {
    complain("batch counts differ between the layouts");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (a.type != b.type || c.type != dl.type) {
    complain("A and B, and C and D, must share a type");
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (d.compute != CUBLAS_COMPUTE_32F && d.compute != CUBLAS_COMPUTE_64F) {
    complain("only CUBLAS_COMPUTE_32F (and 64F) is emulated");
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (d.pointer_mode != CUBLASLT_POINTER_MODE_HOST) {
    complain("only host pointers for alpha and beta are emulated");
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  const uint32_t e = d.epilogue;
  const bool needs_bias = (e & CUBLASLT_EPILOGUE_BIAS) || (e & 16) || e == CUBLASLT_EPILOGUE_BGRADA ||
                          e == CUBLASLT_EPILOGUE_BGRADB;
  if (needs_bias && !d.bias) {
    complain("the epilogue needs CUBLASLT_MATMUL_DESC_BIAS_POINTER");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if ((e & 128) && (!d.aux || d.aux_ld < static_cast<int64_t>(m))) {
    complain("the epilogue needs CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER and an AUX_LD of at least m");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if ((e & 128) && (e & (32 | 64)) && (d.aux_ld % 8 != 0 || d.aux_batch_stride % 8 != 0)) {
    complain("the GELU epilogues need an EPILOGUE_AUX_LD and EPILOGUE_AUX_BATCH_STRIDE divisible by 8");
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  p->m = m;
  p->n = n;
  p->k = k;
  p->batches = dl.batch_count;
  return CUBLAS_STATUS_SUCCESS;
}

template <typename T>
cublasStatus_t set(T& field, const void* buf, size_t size) {
  if (!buf || size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(&field, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the requested feature is not supported";
    default: return cublasGetStatusName(status);
  }
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  auto* l = new cublasLtMatrixLayoutOpaque_t;
  l->type = type;
  l->rows = rows;
  l->cols = cols;
  l->ld = ld;
  *layout = l;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE: {
      uint32_t t = 0;
      const cublasStatus_t rc = set(t, buf, size);
      l->type = static_cast<cudaDataType>(t);
      return rc;
    }
    case CUBLASLT_MATRIX_LAYOUT_ORDER: return set(l->order, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_ROWS: return set(l->rows, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_COLS: return set(l->cols, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_LD: return set(l->ld, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return set(l->batch_count, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return set(l->batch_stride, buf, size);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute_type,
                                        cudaDataType_t scale_type) {
  auto* d = new cublasLtMatmulDescOpaque_t;
  d->compute = compute_type;
  d->scale = scale_type;
  *desc = d;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: return set(d->compute, buf, size);
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return set(d->scale, buf, size);
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: return set(d->pointer_mode, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSA: return set(d->trans_a, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return set(d->trans_b, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return set(d->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return set(d->bias, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: return set(d->bias_batch_stride, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return set(d->aux, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return set(d->aux_ld, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE: return set(d->aux_batch_stride, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return set(d->bias_type, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: return set(d->aux_type, buf, size);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = new cublasLtMatmulPreferenceOpaque_t;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE: return set(pref->search_mode, buf, size);
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return set(pref->max_workspace, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return set(pref->min_alignment[0], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return set(pref->min_alignment[1], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return set(pref->min_alignment[2], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return set(pref->min_alignment[3], buf, size);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested, 
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!desc || !a || !b || !c || !d || !pref || requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  Problem p;
  *returned = 0;
  if (const cublasStatus_t rc = validate(*desc, *a, *b, *c, *d, &p); rc != CUBLAS_STATUS_SUCCESS) return rc;
  std::memset(&results[0], 0, sizeof results[0]);
  results[0].algo.data[0] = 0x5a;  // the one emulated algorithm
  // The alignment it needs of A, B, C and D: what was promised, up to 16 bytes (its vector width).
  for (int i = 0; i < 4; ++i) results[0].algo.data[1 + i] = pref->min_alignment[i] < 16 ? pref->min_alignment[i] : 16;
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha_ptr,
                              const void* A, cublasLtMatrixLayout_t a_desc, const void* B,
                              cublasLtMatrixLayout_t b_desc, const void* beta_ptr, const void* C,
                              cublasLtMatrixLayout_t c_desc, void* D, cublasLtMatrixLayout_t d_desc,
                              const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!desc || !a_desc || !b_desc || !c_desc || !d_desc || !alpha_ptr || !beta_ptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (algo && algo->data[0] != 0x5a) {
    complain("the algorithm was not returned by cublasLtMatmulAlgoGetHeuristic");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  Problem p;
  if (const cublasStatus_t rc = validate(*desc, *a_desc, *b_desc, *c_desc, *d_desc, &p); rc != CUBLAS_STATUS_SUCCESS)
    return rc;
  if (algo) {
    const void* pointers[4] = {A, B, C, D};
    const char* names = "ABCD";
    for (int i = 0; i < 4; ++i) {
      const uint64_t need = algo->data[1 + i];
      if (need > 1 && reinterpret_cast<uintptr_t>(pointers[i]) % need != 0) {
        complain(std::string("matrix ") + names[i] + " is not " + std::to_string(need) +
                 "-byte aligned, which its algorithm needs (the heuristic chose it for the alignment that "
                 "CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_" + names[i] + "_BYTES promised, 256 by default)");
        return CUBLAS_STATUS_INVALID_VALUE;
      }
    }
  }
  // What the call captures now, as the library does: the descriptors and scalars may change after.
  const cublasLtMatmulDescOpaque_t d = *desc;
  const cublasLtMatrixLayoutOpaque_t la = *a_desc, lb = *b_desc, lc = *c_desc, ld = *d_desc;
  double alpha, beta;
  if (d.scale == CUDA_R_64F) {
    alpha = *static_cast<const double*>(alpha_ptr);
    beta = *static_cast<const double*>(beta_ptr);
  } else {
    alpha = *static_cast<const float*>(alpha_ptr);
    beta = *static_cast<const float*>(beta_ptr);
  }
  const int d_type = ld.type;
  const int bias_type = d.bias_type >= 0 ? d.bias_type : d_type;
  const int aux_type = d.aux_type >= 0 ? d.aux_type : d_type;
  const uint32_t e = d.epilogue;

  Engine& engine = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(engine.mutex);
  if (engine.faulted()) return CUBLAS_STATUS_EXECUTION_FAILED;
  auto s = engine.stream(stream);
  if (!s) return CUBLAS_STATUS_INVALID_VALUE;
  bool ok = device_range(engine, A, extent(la) * type_size(la.type), "A") &&
            device_range(engine, B, extent(lb) * type_size(lb.type), "B") &&
            device_range(engine, D, extent(ld) * type_size(d_type), "D") &&
            (beta == 0.0 || device_range(engine, C, extent(lc) * type_size(lc.type), "C"));
  const uint64_t bias_len = e == CUBLASLT_EPILOGUE_BGRADB ? p.n : p.m;
  if (d.bias) ok = ok && device_range(engine, d.bias, (bias_len + uint64_t(d.bias_batch_stride) * uint64_t(p.batches - 1)) *
                                                          type_size(bias_type), "the bias");
  if (e & 128)
    ok = ok && device_range(engine, d.aux, (uint64_t(d.aux_ld) * (p.n - 1) + p.m + uint64_t(d.aux_batch_stride) *
                                           uint64_t(p.batches - 1)) * type_size(aux_type), "the epilogue's aux");
  if (workspace_bytes && workspace) ok = ok && device_range(engine, workspace, workspace_bytes, "the workspace");
  if (!ok) return CUBLAS_STATUS_INVALID_VALUE;

  gpusim::Op op;
  op.kind = gpusim::Op::Kind::device;
  gpusim::Counters* counters = &engine.counters;
  op.run = [=] {
    const uint64_t m = p.m, n = p.n, k = p.k;
    std::vector<double> opa(m * k), opb(k * n), out(m * n);
    for (int batch = 0; batch < p.batches; ++batch) {
      const int64_t ao = batch * la.batch_stride, bo = batch * lb.batch_stride, co = batch * lc.batch_stride,
                    dof = batch * ld.batch_stride;
      // op(A)[i][q] row-major, op(B)[q][j] row-major.
      for (uint64_t i = 0; i < m; ++i)
        for (uint64_t q = 0; q < k; ++q)
          opa[i * k + q] = d.trans_a == CUBLAS_OP_N ? load(A, la.type, ao + int64_t(i + q * la.ld))
                                                    : load(A, la.type, ao + int64_t(q + i * la.ld));
      for (uint64_t q = 0; q < k; ++q)
        for (uint64_t j = 0; j < n; ++j)
          opb[q * n + j] = d.trans_b == CUBLAS_OP_N ? load(B, lb.type, bo + int64_t(q + j * lb.ld))
                                                    : load(B, lb.type, bo + int64_t(j + q * lb.ld));
      for (uint64_t i = 0; i < m; ++i)
        for (uint64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (uint64_t q = 0; q < k; ++q) acc += opa[i * k + q] * opb[q * n + j];
          double v = alpha * acc;
          if (beta != 0.0) v += beta * load(C, lc.type, co + int64_t(i + j * lc.ld));
          out[i * n + j] = v;
        }
      const char* bias = static_cast<const char*>(d.bias) + batch * d.bias_batch_stride * int64_t(type_size(bias_type));
      char* aux = static_cast<char*>(d.aux) + batch * d.aux_batch_stride * int64_t(type_size(aux_type));
      for (uint64_t i = 0; i < m; ++i)
        for (uint64_t j = 0; j < n; ++j) {
          double& v = out[i * n + j];
          if (e & CUBLASLT_EPILOGUE_BIAS) v += load(bias, bias_type, int64_t(i));
          const int64_t aux_index = int64_t(i + j * uint64_t(d.aux_ld));
          if (e & 32) {  // GELU, its input kept in aux with AUX
            if (e & 128) store(aux, aux_type, aux_index, v);
            v = gelu(v);
          } else if (e & 64) {  // DGELU: the gradient through the GELU whose input aux holds
            v *= gelu_grad(load(aux, aux_type, aux_index));
          }
        }
      if ((e & 16) || e == CUBLASLT_EPILOGUE_BGRADA || e == CUBLASLT_EPILOGUE_BGRADB) {
        char* bias_out = const_cast<char*>(bias);
        if (e == CUBLASLT_EPILOGUE_BGRADB) {
          for (uint64_t j = 0; j < n; ++j) {
            double total = 0;
            for (uint64_t q = 0; q < k; ++q) total += opb[q * n + j];
            store(bias_out, bias_type, int64_t(j), total);
          }
        } else {
          for (uint64_t i = 0; i < m; ++i) {
            double total = 0;
            if (e == CUBLASLT_EPILOGUE_BGRADA)
              for (uint64_t q = 0; q < k; ++q) total += opa[i * k + q];
            else
              for (uint64_t j = 0; j < n; ++j) total += out[i * n + j];
            store(bias_out, bias_type, int64_t(i), total);
          }
        }
      }
      for (uint64_t i = 0; i < m; ++i)
        for (uint64_t j = 0; j < n; ++j) store(D, d_type, dof + int64_t(i + j * ld.ld), out[i * n + j]);
    }
    ++counters->kernels;
  };
  engine.enqueue(s, std::move(op));
  return CUBLAS_STATUS_SUCCESS;
}
