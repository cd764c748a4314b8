// safetensors files (the Hugging Face weight format), read and written by our own code: an 8-byte
// little-endian header length N, N bytes of JSON ({"name": {"dtype": "F32", "shape": [..],
// "data_offsets": [begin, end]}, ..., "__metadata__": {"key": "text"}}), then the tensors' bytes,
// offsets relative to the end of the header. Opening checks everything a reader relies on and
// refuses a bad file with a message that names it and the fault: a header longer than the file,
// JSON that does not parse, an unknown dtype, a shape whose bytes differ from its offsets, offsets
// past the end of the file, tensors that overlap.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace strata {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  int64_t begin = 0, end = 0;  // byte offsets in the data section
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);
  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  // The tensor's bytes as a CPU tensor of its dtype.
  Tensor read(const std::string& name) const;

 private:
  std::string path_;
  int64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (CPU or not; written in their dtypes) in the given order, into a temporary file
// renamed to `path` once complete.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The safetensors name of a dtype ("F32", "BF16", ...) and back (an Error for one we do not hold).
const char* safetensors_dtype(DType dtype);
DType parse_safetensors_dtype(const std::string& name, const std::string& where);

}  // namespace strata
