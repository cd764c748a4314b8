#include "core/tensor.h"

#include <cstring>
#include <sstream>

#if STRATA_CUDA
#include <cuda_runtime.h>

#include "core/cuda/cuda_check.h"
#include "core/cuda/cuda_device.h"
#endif

namespace strata {

std::string shape_string(const Shape& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    STRATA_CHECK(d >= 0, "negative dimension in shape ", shape_string(shape));
    n *= d;
  }
  return n;
}

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

Allocator& allocator_of(const Tensor& t) {
  if (Allocator* a = t.allocator()) return *a;
  STRATA_CHECK(!t.defined() || t.device().is_cpu(), "tensor ", t.describe(),
               " wraps device memory it does not own: no allocator to make its neighbours with");
  return cpu_allocator();
}

Storage::Storage(Allocator& allocator, size_t bytes)
    : allocator_(&allocator), data_(allocator.allocate(bytes)), bytes_(bytes) {}

Storage::~Storage() { allocator_->deallocate(data_, bytes_); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Allocator& allocator) {
  Tensor t = wrap(nullptr, shape, dtype, allocator.device());
  t.storage_ = std::make_shared<Storage>(allocator, t.nbytes());
  t.data_ = t.storage_->data();
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Allocator& allocator) {
  Tensor t = empty(shape, dtype, allocator);
  t.set_zero();
  return t;
}

void Tensor::set_zero() {
  STRATA_CHECK(is_contiguous(), "set_zero of a strided tensor ", describe());
  if (nbytes() == 0) return;
  if (device_.is_cpu()) {
    std::memset(data_, 0, nbytes());
    return;
  }
#if STRATA_CUDA
  if (CudaDevice* device = cuda_device_of(*this))
    STRATA_CUDA_CHECK(cudaMemsetAsync(data_, 0, nbytes(), device->stream()));
  else
    STRATA_CUDA_CHECK(cudaMemset(data_, 0, nbytes()));
#endif
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.numel_ = shape_numel(shape);
  t.dtype_ = dtype;
  t.dtype_set_ = true;
  t.device_ = device;
  t.data_ = data;
  return t;
}

int64_t Tensor::size(int dim) const {
  int n = ndim();
  int d = dim < 0 ? dim + n : dim;
  STRATA_CHECK(d >= 0 && d < n, "dimension ", dim, " out of range for ", describe());
  return shape_[static_cast<size_t>(d)];
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

Tensor Tensor::view(const Shape& shape) const {
  STRATA_CHECK(is_contiguous(), "view of non-contiguous tensor ", describe());
  Shape resolved = shape;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1) {
      STRATA_CHECK(infer < 0, "view: more than one -1 in ", shape_string(shape));
      infer = static_cast<int>(i);
    } else {
      known *= resolved[i];
    }
  }
  if (infer >= 0) {
    STRATA_CHECK(known > 0 && numel_ % known == 0, "view: cannot infer -1 in ", shape_string(shape),
                 " for ", describe());
    resolved[static_cast<size_t>(infer)] = numel_ / known;
  }
  STRATA_CHECK(shape_numel(resolved) == numel_, "view: shape ", shape_string(resolved),
               " does not hold the ", numel_, " elements of ", describe());
  Tensor t = *this;
  t.shape_ = resolved;
  t.strides_ = contiguous_strides(resolved);
  return t;
}

Tensor Tensor::slice(int dim, int64_t start, int64_t end) const {
  int n = ndim();
  int d = dim < 0 ? dim + n : dim;
  STRATA_CHECK(d >= 0 && d < n, "slice: dimension ", dim, " out of range for ", describe());
  size_t du = static_cast<size_t>(d);
  STRATA_CHECK(0 <= start && start <= end && end <= shape_[du], "slice [", start, ", ", end,
               ") out of range for dimension ", d, " of ", describe());
  Tensor t = *this;
  t.shape_[du] = end - start;
  t.numel_ = shape_numel(t.shape_);
  t.data_ = static_cast<char*>(data_) + start * strides_[du] * static_cast<int64_t>(element_size());
  return t;
}

namespace {
// Copies a strided CPU tensor element by element into contiguous memory at `out`.
void gather_strided(const Tensor& t, char* out) {
  const size_t elem = t.element_size();
  const int n = t.ndim();
  std::vector<int64_t> index(static_cast<size_t>(n), 0);
  const char* base = static_cast<const char*>(t.raw());
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t offset = 0;
    for (int d = 0; d < n; ++d) offset += index[static_cast<size_t>(d)] * t.strides()[static_cast<size_t>(d)];
    std::memcpy(out + static_cast<size_t>(i) * elem, base + offset * static_cast<int64_t>(elem), elem);
    for (int d = n - 1; d >= 0; --d) {
      size_t du = static_cast<size_t>(d);
      if (++index[du] < t.shape()[du]) break;
      index[du] = 0;
    }
  }
}
}  // namespace

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  STRATA_CHECK(device_.is_cpu(), "contiguous() of a strided ", device_.name(),
               " tensor is not supported: ", describe());
  Tensor out = empty(shape_, dtype_);
  gather_strided(*this, static_cast<char*>(out.raw()));
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  STRATA_CHECK(shape_ == src.shape_ && dtype_ == src.dtype_, "copy_from: destination ", describe(),
               " and source ", src.describe(), " differ in shape or dtype");
  STRATA_CHECK(is_contiguous() && src.is_contiguous(), "copy_from: both tensors must be contiguous (",
               describe(), " <- ", src.describe(), ")");
  if (nbytes() == 0) return;
  if (device_.is_cpu() && src.device_.is_cpu()) {
    std::memmove(data_, src.data_, nbytes());
    return;
  }
#if STRATA_CUDA
  CudaDevice* dst_device = cuda_device_of(*this);
  CudaDevice* src_device = cuda_device_of(src);
  CudaDevice* device = dst_device ? dst_device : src_device;
  if (!device) {  // memory from a bare allocator: the legacy stream's blocking copy
    STRATA_CUDA_CHECK(cudaMemcpy(data_, src.data_, nbytes(), cudaMemcpyDefault));
    return;
  }
  if (src_device && src_device != device) src_device->synchronize();  // another device's stream
  STRATA_CUDA_CHECK(cudaMemcpyAsync(data_, src.data_, nbytes(), cudaMemcpyDefault, device->stream()));
  // The host side must be done with when this returns: its buffer may be read or freed next.
  if (device_.is_cpu() || src.device_.is_cpu()) device->synchronize();
#else
  STRATA_FAIL("copy_from between ", src.device_.name(), " and ", device_.name(),
              " needs the CUDA backend, which this build does not have");
#endif
}

Tensor Tensor::to_cpu() const {
  if (device_.is_cpu()) return contiguous();
  Tensor out = empty(shape_, dtype_);
  out.copy_from(*this);
  return out;
}

std::vector<Tensor> to_cpu_together(std::initializer_list<const Tensor*> tensors) {
  std::vector<Tensor> out;
  out.reserve(tensors.size());
#if STRATA_CUDA
  // The tensors of the first CudaDevice among them, in one download.
  CudaDevice* device = nullptr;
  std::vector<const Tensor*> on_device;
  for (const Tensor* t : tensors)
    if (CudaDevice* d = cuda_device_of(*t); d && (!device || d == device)) {
      device = d;
      on_device.push_back(t);
    }
  std::vector<Tensor> read = device ? device->download(on_device) : std::vector<Tensor>{};
  size_t next = 0;
  for (const Tensor* t : tensors)
    out.push_back(next < on_device.size() && on_device[next] == t ? std::move(read[next++])
                  : t->defined()                                   ? t->to_cpu()
                                                                   : Tensor());
#else
  for (const Tensor* t : tensors) out.push_back(t->defined() ? t->to_cpu() : Tensor());
#endif
  return out;
}

Tensor Tensor::placed(Allocator& allocator) const {
  if (!defined() || allocator.device() == device_) return *this;
#if STRATA_CUDA
  if (auto* device = dynamic_cast<CudaDevice*>(&allocator); device && device_.is_cpu())
    return device->upload(contiguous());
#endif
  Tensor out = empty(shape_, dtype_, allocator);
  out.copy_from(*this);
  return out;
}

std::string Tensor::describe() const {
  if (!defined()) return "<undefined tensor>";
  return std::string(dtype_name(dtype_)) + shape_string(shape_) + "@" + device_.name();
}

}  // namespace strata
