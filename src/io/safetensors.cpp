#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace fs = std::filesystem;

namespace strata {

namespace {

constexpr int64_t kMaxHeader = int64_t{100} << 20;  // the format's own limit is 100 MB

}  // namespace

const char* safetensors_dtype(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    default: STRATA_FAIL("safetensors: cannot write a tensor of dtype ", dtype_name(dtype));
  }
}

DType parse_safetensors_dtype(const std::string& name, const std::string& where) {
  if (name == "F32") return DType::f32;
  if (name == "F64") return DType::f64;
  if (name == "F16") return DType::f16;
  if (name == "BF16") return DType::bf16;
  if (name == "I32") return DType::i32;
  if (name == "I64") return DType::i64;
  STRATA_FAIL(where, ": dtype '", name, "' is not one Strata reads (F32, F64, F16, BF16, I32, I64)");
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in.good(), "cannot read safetensors file '", path, "'");
  const auto file_size = static_cast<int64_t>(fs::file_size(path));
  STRATA_CHECK(file_size >= 8, "safetensors file '", path, "' is ", file_size,
               " bytes: too short for its 8-byte header length");
  unsigned char length_bytes[8];
  in.read(reinterpret_cast<char*>(length_bytes), 8);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | length_bytes[i];
  STRATA_CHECK(length <= static_cast<uint64_t>(std::min(kMaxHeader, file_size - 8)), "safetensors file '", path,
               "': header length ", length, " runs past the end of the file (", file_size, " bytes)");
  std::string header(static_cast<size_t>(length), '\0');
  in.read(header.data(), static_cast<std::streamsize>(length));
  f.data_start_ = 8 + static_cast<int64_t>(length);
  const int64_t data_size = file_size - f.data_start_;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    STRATA_FAIL("safetensors file '", path, "': header is not valid JSON: ", e.what());
  }
  STRATA_CHECK(j.is_object(), "safetensors file '", path, "': header is not a JSON object");
  try {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "__metadata__") {
        for (auto m = it->begin(); m != it->end(); ++m) f.metadata_[m.key()] = m->get<std::string>();
        continue;
      }
      const std::string where = "safetensors file '" + path + "', tensor '" + it.key() + "'";
      SafetensorsEntry e;
      e.name = it.key();
      e.dtype = parse_safetensors_dtype(it->at("dtype").get<std::string>(), where);
      for (const auto& d : it->at("shape")) {
        const int64_t n = d.get<int64_t>();
        STRATA_CHECK(n >= 0, where, ": negative dimension ", n);
        e.shape.push_back(n);
      }
      const auto& offsets = it->at("data_offsets");
      STRATA_CHECK(offsets.is_array() && offsets.size() == 2, where, ": data_offsets is not [begin, end]");
      e.begin = offsets[0].get<int64_t>();
      e.end = offsets[1].get<int64_t>();
      STRATA_CHECK(0 <= e.begin && e.begin <= e.end, where, ": data_offsets [", e.begin, ", ", e.end,
                   "] are not an ascending pair");
      STRATA_CHECK(e.end <= data_size, where, ": data_offsets end ", e.end, " is past the end of the data (",
                   data_size, " bytes)");
      const int64_t bytes = shape_numel(e.shape) * static_cast<int64_t>(dtype_size(e.dtype));
      STRATA_CHECK(e.end - e.begin == bytes, where, ": shape ", shape_string(e.shape), " of ", it->at("dtype").get<std::string>(),
                   " needs ", bytes, " bytes but data_offsets span ", e.end - e.begin);
      f.entries_.push_back(std::move(e));
    }
  } catch (const nlohmann::json::exception& e) {
    STRATA_FAIL("safetensors file '", path, "': malformed header entry: ", e.what());
  }
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& e : f.entries_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SafetensorsEntry* a, const SafetensorsEntry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    STRATA_CHECK(by_offset[i]->begin >= by_offset[i - 1]->end, "safetensors file '", path, "': tensors '",
                 by_offset[i - 1]->name, "' and '", by_offset[i]->name, "' overlap");
  return f;
}

bool SafetensorsFile::contains(const std::string& name) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const SafetensorsEntry& e) { return e.name == name; });
}

Tensor SafetensorsFile::read(const std::string& name) const {
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const SafetensorsEntry& e) { return e.name == name; });
  STRATA_CHECK(it != entries_.end(), "safetensors file '", path_, "' has no tensor '", name, "'");
  Tensor t = Tensor::empty(it->shape, it->dtype);
  std::ifstream in(path_, std::ios::binary);
  in.seekg(data_start_ + it->begin);
  in.read(static_cast<char*>(t.raw()), it->end - it->begin);
  STRATA_CHECK(in.good() || it->end == it->begin, "safetensors file '", path_, "': could not read tensor '", name, "'");
  return t;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  int64_t at = 0;
  std::vector<Tensor> host;
  for (const auto& [name, tensor] : tensors) {
    host.push_back(tensor.to_cpu().contiguous());
    const auto bytes = static_cast<int64_t>(host.back().nbytes());
    header[name] = {{"dtype", safetensors_dtype(tensor.dtype())}, {"shape", tensor.shape()},
                    {"data_offsets", {at, at + bytes}}};
    at += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  const std::string temporary = path + ".partial";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    STRATA_CHECK(out.good(), "cannot write '", temporary, "'");
    uint64_t length = text.size();
    unsigned char length_bytes[8];
    for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<unsigned char>(length >> (8 * i));
    out.write(reinterpret_cast<const char*>(length_bytes), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Tensor& t : host) out.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
    out.close();
    STRATA_CHECK(out.good(), "cannot write '", temporary, "'");
  }
  fs::rename(temporary, path);
}

}  // namespace strata
