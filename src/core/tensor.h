// Tensor: a shape, strides, a dtype and a device over reference-counted storage. Views (view,
// slice) share storage; factories allocate through an Allocator passed in (the CPU one by default).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/dtype.h"
#include "core/error.h"

namespace strata {

using Shape = std::vector<int64_t>;
std::string shape_string(const Shape& shape);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& shape);

// Owns one allocation and gives it back to its allocator when the last tensor lets go.
class Storage {
 public:
  Storage(Allocator& allocator, size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return allocator_->device(); }
  Allocator& allocator() const { return *allocator_; }

 private:
  Allocator* allocator_;
  void* data_;
  size_t bytes_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: holds nothing; defined() is false

  static Tensor empty(const Shape& shape, DType dtype, Allocator& allocator = cpu_allocator());
  static Tensor zeros(const Shape& shape, DType dtype, Allocator& allocator = cpu_allocator());
  // A CPU tensor holding `values` (converted to dtype_v<T>), shaped `shape`.
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  // Wraps memory that someone else owns (no ownership taken); contiguous.
  static Tensor wrap(void* data, const Shape& shape, DType dtype, Device device);

  bool defined() const { return dtype_set_; }
  const Shape& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  // Size of dimension `dim`; negative counts from the end (-1 is the last).
  int64_t size(int dim) const;
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  size_t element_size() const { return dtype_size(dtype_); }
  size_t nbytes() const { return static_cast<size_t>(numel_) * element_size(); }
  bool is_contiguous() const;

  void* raw() const { return data_; }
  // The allocator this tensor's memory came from (its views share it); nullptr for a wrapped
  // pointer. The CUDA backend finds a tensor's device and stream through it.
  Allocator* allocator() const { return storage_ ? &storage_->allocator() : nullptr; }
  // Typed pointer; throws if T does not match the dtype.
  template <typename T>
  T* data() const {
    STRATA_CHECK(dtype_ == dtype_v<T>, "tensor ", describe(), " accessed as ", dtype_name(dtype_v<T>));
    return static_cast<T*>(data_);
  }

  // Same storage, new shape (one entry may be -1); the tensor must be contiguous.
  Tensor view(const Shape& shape) const;
  // Elements [start, end) along `dim`, sharing storage (not contiguous unless dim is outermost).
  Tensor slice(int dim, int64_t start, int64_t end) const;
  // A contiguous copy on the same device (this tensor itself when already contiguous).
  Tensor contiguous() const;
  // Copies src's elements into this tensor: same shape and dtype, any devices, both contiguous.
  // A copy that involves a CUDA device runs on its compute stream, after the work queued there;
  // it has finished when copy_from returns unless both tensors are on the device (then it is
  // ordered on the stream like an op).
  void copy_from(const Tensor& src);
  // A contiguous copy on the CPU.
  Tensor to_cpu() const;
  // This tensor where `allocator`'s tensors live: itself when it is there already, else a copy
  // (to a CUDA device without waiting: staged through page-locked memory on its stream).
  Tensor placed(Allocator& allocator) const;
  // Sets every byte to zero (+0.0 in every floating dtype): memset on the CPU, a memset queued on
  // the CudaDevice's stream on CUDA. Contiguous only.
  void set_zero();

  // "f32[2, 3]@cpu"
  std::string describe() const;

 private:
  std::shared_ptr<Storage> storage_;
  void* data_ = nullptr;
  Shape shape_;
  std::vector<int64_t> strides_;  // in elements
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
  bool dtype_set_ = false;
  Device device_;
};

// Where tensors that live next to t come from: t's own allocator (so a CUDA tensor's neighbours are
// on its device, from its CudaDevice), or the CPU allocator for a CPU tensor wrapped around foreign
// memory. A wrapped CUDA tensor has none: an Error naming it.
Allocator& allocator_of(const Tensor& t);

// Row-major strides for a shape.
std::vector<int64_t> contiguous_strides(const Shape& shape);

// Contiguous CPU copies of several tensors. Those on one CUDA device are read with one wait for
// its stream (through page-locked memory), where a to_cpu() each would wait once each. An
// undefined tensor gives an undefined one.
std::vector<Tensor> to_cpu_together(std::initializer_list<const Tensor*> tensors);

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  STRATA_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ",
               values.size(), " values do not fill shape ", shape_string(shape));
  Tensor t = empty(shape, dtype_v<T>);
  T* out = t.data<T>();
  for (size_t i = 0; i < values.size(); ++i) out[i] = values[i];
  return t;
}

}  // namespace strata
