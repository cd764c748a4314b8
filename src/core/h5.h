// Small RAII layer over the HDF5 C API, shared by checkpoints and token datasets: handles that
// close themselves, files opened with errors that name the path, typed attributes. HDF5's own
// error-stack printing is switched off; every failure becomes one Error with the innermost HDF5
// message (STRATA_HDF5_CHECK).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"

namespace strata::h5 {

// Owns one HDF5 identifier and closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  void reset() {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Turns off HDF5's automatic error printing for this process (idempotent).
void silence_library_errors();

// Opens an existing file read-only; an Error names the path when it is missing or not HDF5 (a
// truncated file included).
Handle open_file(const std::string& path);
// Creates (truncating) a file for writing.
Handle create_file(const std::string& path);

// The HDF5 file type used to store a dtype (bf16 and f16 are stored as 16-bit unsigned words,
// with a "dtype" attribute saying which).
hid_t file_type(DType dtype);
hid_t memory_type(DType dtype);

bool exists(hid_t location, const std::string& name);
Handle open_dataset(hid_t location, const std::string& name, const std::string& file_for_errors);

void write_attribute(hid_t object, const std::string& name, const std::string& value);
void write_attribute(hid_t object, const std::string& name, const std::vector<int64_t>& values);
void write_attribute(hid_t object, const std::string& name, int64_t value);
std::string read_string_attribute(hid_t object, const std::string& name);
std::vector<int64_t> read_int_attribute(hid_t object, const std::string& name);

// The dataset's shape.
std::vector<int64_t> dataset_shape(hid_t dataset);

}  // namespace strata::h5
