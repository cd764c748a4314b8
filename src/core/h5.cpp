#include "core/h5.h"

#include <filesystem>

#include "core/error.h"

namespace strata::h5 {

void silence_library_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

Handle open_file(const std::string& path) {
  silence_library_errors();
  STRATA_CHECK(std::filesystem::exists(path), "file '", path, "' does not exist");
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  STRATA_CHECK(id >= 0, "file '", path, "' cannot be opened as HDF5 (truncated or not HDF5?): ",
               detail::hdf5_error_string());
  return Handle(id, H5Fclose);
}

Handle create_file(const std::string& path) {
  silence_library_errors();
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  STRATA_CHECK(id >= 0, "file '", path, "' cannot be created: ", detail::hdf5_error_string());
  return Handle(id, H5Fclose);
}

hid_t file_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return H5T_IEEE_F32LE;
    case DType::f64: return H5T_IEEE_F64LE;
    case DType::bf16:
    case DType::f16:
    case DType::u16: return H5T_STD_U16LE;
    case DType::i32: return H5T_STD_I32LE;
    case DType::i64: return H5T_STD_I64LE;
  }
  STRATA_FAIL("no HDF5 type for dtype ", dtype_name(dtype));
}

hid_t memory_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return H5T_NATIVE_FLOAT;
    case DType::f64: return H5T_NATIVE_DOUBLE;
    case DType::bf16:
    case DType::f16:
    case DType::u16: return H5T_NATIVE_UINT16;
    case DType::i32: return H5T_NATIVE_INT32;
    case DType::i64: return H5T_NATIVE_INT64;
  }
  STRATA_FAIL("no HDF5 type for dtype ", dtype_name(dtype));
}

bool exists(hid_t location, const std::string& name) {
  return H5Lexists(location, name.c_str(), H5P_DEFAULT) > 0;
}

Handle open_dataset(hid_t location, const std::string& name, const std::string& file_for_errors) {
  STRATA_CHECK(exists(location, name), "file '", file_for_errors, "' has no dataset '", name, "'");
  hid_t id = H5Dopen2(location, name.c_str(), H5P_DEFAULT);
  STRATA_CHECK(id >= 0, "file '", file_for_errors, "': dataset '", name, "' cannot be opened: ",
               detail::hdf5_error_string());
  return Handle(id, H5Dclose);
}

void write_attribute(hid_t object, const std::string& name, const std::string& value) {
  Handle type(STRATA_HDF5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  STRATA_HDF5_CHECK(H5Tset_size(type, value.empty() ? 1 : value.size()));
  Handle space(STRATA_HDF5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
  Handle attr(STRATA_HDF5_CHECK(H5Acreate2(object, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT)),
              H5Aclose);
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  STRATA_HDF5_CHECK(H5Awrite(attr, type, padded.data()));
}

void write_attribute(hid_t object, const std::string& name, const std::vector<int64_t>& values) {
  hsize_t n = values.size();
  Handle space(STRATA_HDF5_CHECK(n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, nullptr)),
               H5Sclose);
  Handle attr(STRATA_HDF5_CHECK(H5Acreate2(object, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT,
                                           H5P_DEFAULT)),
              H5Aclose);
  if (n > 0) STRATA_HDF5_CHECK(H5Awrite(attr, H5T_NATIVE_INT64, values.data()));
}

void write_attribute(hid_t object, const std::string& name, int64_t value) {
  write_attribute(object, name, std::vector<int64_t>{value});
}

std::string read_string_attribute(hid_t object, const std::string& name) {
  STRATA_CHECK(H5Aexists(object, name.c_str()) > 0, "HDF5 attribute '", name, "' is missing");
  Handle attr(STRATA_HDF5_CHECK(H5Aopen(object, name.c_str(), H5P_DEFAULT)), H5Aclose);
  Handle type(STRATA_HDF5_CHECK(H5Aget_type(attr)), H5Tclose);
  STRATA_CHECK(H5Tget_class(type) == H5T_STRING, "HDF5 attribute '", name, "' is not a string");
  size_t size = H5Tget_size(type);
  std::string value(size, '\0');
  Handle memtype(STRATA_HDF5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  STRATA_HDF5_CHECK(H5Tset_size(memtype, size));
  STRATA_HDF5_CHECK(H5Aread(attr, memtype, value.data()));
  while (!value.empty() && value.back() == '\0') value.pop_back();
  return value;
}

std::vector<int64_t> read_int_attribute(hid_t object, const std::string& name) {
  STRATA_CHECK(H5Aexists(object, name.c_str()) > 0, "HDF5 attribute '", name, "' is missing");
  Handle attr(STRATA_HDF5_CHECK(H5Aopen(object, name.c_str(), H5P_DEFAULT)), H5Aclose);
  Handle space(STRATA_HDF5_CHECK(H5Aget_space(attr)), H5Sclose);
  hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<int64_t> values(n > 0 ? static_cast<size_t>(n) : 0);
  if (!values.empty()) STRATA_HDF5_CHECK(H5Aread(attr, H5T_NATIVE_INT64, values.data()));
  return values;
}

std::vector<int64_t> dataset_shape(hid_t dataset) {
  Handle space(STRATA_HDF5_CHECK(H5Dget_space(dataset)), H5Sclose);
  int rank = STRATA_HDF5_CHECK(H5Sget_simple_extent_ndims(space));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  STRATA_HDF5_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr));
  return std::vector<int64_t>(dims.begin(), dims.end());
}

}  // namespace strata::h5
