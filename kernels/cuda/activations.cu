// GELU and SwiGLU, forward and backward: elementwise, each thread taking 16-byte vectors of every
// operand in a grid-stride loop when all pointers are 16-byte aligned, then the tail one element
// at a time (kernels/cuda/chunks.cuh). Each element is computed in f32, as the CPU computes f32
// and the 16-bit formats, and rounded once on store.
#include "kernels/cuda/activations.h"
#include "kernels/cuda/chunks.cuh"

namespace strata::cuda {
namespace {

constexpr unsigned kThreads = 256;
// Enough blocks to fill an H100/H200 (132 SMs) several times over; grid-stride beyond that.
constexpr unsigned kMaxBlocks = 132 * 8;

constexpr float kSqrt2OverPi = 0.79788456080286535588f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

__device__ __forceinline__ float sigmoid(float g) {
  return 1.0f / (1.0f + expf(-g));  // expf overflows to inf for very negative g: s = 0
}

// 1 + tanh(u) = 2 sigmoid(2u), so gelu(x) = 0.5 x (1 + tanh u) = x s with s = sigmoid(2u); the
// CPU computes f32 the same way.
__device__ __forceinline__ float gelu_sigmoid(float x) {
  const float u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
  return sigmoid(2.0f * u);
}

struct GeluForward {
  __device__ void operator()(float x, float, float, float& y, float&) const { y = x * gelu_sigmoid(x); }
};
// gelu'(x) = s + 2 x s (1 - s) u', u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
struct GeluBackward {
  __device__ void operator()(float dy, float x, float, float& dx, float&) const {
    const float s = gelu_sigmoid(x);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * x * x);
    dx = dy * (s + 2.0f * x * s * (1.0f - s) * du);
  }
};
struct SwigluForward {
  __device__ void operator()(float gate, float up, float, float& y, float&) const {
    y = gate * sigmoid(gate) * up;
  }
};
struct SwigluBackward {
  __device__ void operator()(float dy, float gate, float up, float& dgate, float& dup) const {
    const float s = sigmoid(gate);
    dgate = dy * up * s * (1.0f + gate * (1.0f - s));
    dup = dy * gate * s;
  }
};

// (out0[i], out1[i]) = f(a[i], b[i], c[i]) over n elements; b, c and out1 may be null (then f
// sees 0 for the missing inputs and its second output is dropped).
template <typename T, typename F>
__global__ void activation_kernel(const T* a, const T* b, const T* c, int64_t n, bool vector, F f, T* out0,
                                  T* out1) {
  const int64_t first = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for_each_chunk<T>(n, vector, first, stride, [&](auto width, int64_t i) {
    constexpr int N = decltype(width)::value;
    float av[N], bv[N] = {}, cv[N] = {}, o0[N] = {}, o1[N] = {};
    load_n<N>(a + i, av);
    if (b) load_n<N>(b + i, bv);
    if (c) load_n<N>(c + i, cv);
    for (int k = 0; k < N; ++k) f(av[k], bv[k], cv[k], o0[k], o1[k]);
    store_n<N>(out0 + i, o0);
    if (out1) store_n<N>(out1 + i, o1);
  });
}

template <typename F>
void run(const char* op, F f, DType dtype, int64_t n, const void* a, const void* b, const void* c, void* out0,
         void* out1, cudaStream_t stream) {
  if (n == 0) return;
  with_floating(dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const bool vector = all_aligned16(a, b, c, out0, out1);
    const unsigned wanted = blocks_for(vector ? (n + kVec<T> - 1) / kVec<T> : n, kThreads);
    const unsigned blocks = wanted > kMaxBlocks ? kMaxBlocks : wanted;
    launch(op, &activation_kernel<T, F>, blocks, kThreads, 0, stream, static_cast<const T*>(a),
           static_cast<const T*>(b), static_cast<const T*>(c), n, vector, f, static_cast<T*>(out0),
           static_cast<T*>(out1));
  });
}

}  // namespace

void gelu_forward(const void* x, DType dtype, int64_t n, void* y, cudaStream_t stream) {
  run("gelu_forward", GeluForward{}, dtype, n, x, nullptr, nullptr, y, nullptr, stream);
}

void gelu_backward(const void* dy, const void* x, DType dtype, int64_t n, void* dx, cudaStream_t stream) {
  run("gelu_backward", GeluBackward{}, dtype, n, dy, x, nullptr, dx, nullptr, stream);
}

void swiglu_forward(const void* gate, const void* up, DType dtype, int64_t n, void* y, cudaStream_t stream) {
  run("swiglu_forward", SwigluForward{}, dtype, n, gate, up, nullptr, y, nullptr, stream);
}

void swiglu_backward(const void* dy, const void* gate, const void* up, DType dtype, int64_t n, void* dgate,
                     void* dup, cudaStream_t stream) {
  run("swiglu_backward", SwigluBackward{}, dtype, n, dy, gate, up, dgate, dup, stream);
}

}  // namespace strata::cuda
