#include "core/error.h"

#include <hdf5.h>
#include <mpi.h>

#include <cstring>

namespace strata::detail {

void throw_error(const char* file, int line, const std::string& message) {
  const char* base = std::strrchr(file, '/');
  throw Error(concat(message, " [", base ? base + 1 : file, ":", line, "]"));
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return concat("MPI error ", code);
  return std::string(text, static_cast<size_t>(length));
}

namespace {
herr_t take_innermost(unsigned n, const H5E_error2_t* entry, void* out) {
  if (n == 0 && entry->desc) *static_cast<std::string*>(out) = entry->desc;
  return 0;
}
}  // namespace

std::string hdf5_error_string() {
  std::string message;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, take_innermost, &message);
  return message.empty() ? "no detail on the HDF5 error stack" : message;
}

}  // namespace strata::detail
