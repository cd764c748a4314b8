#include "io/checkpoint.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "core/error.h"
#include "core/h5.h"
#include "kernels/ops.h"

namespace fs = std::filesystem;

namespace strata {

namespace {

std::string rank_file(int rank) {
  char name[32];
  std::snprintf(name, sizeof(name), "rank-%05d.h5", rank);
  return name;
}

// Dataset names are the global tensor names; '/' inside them (optimizer state "<param>/exp_avg")
// makes HDF5 groups, which are created on the way.
hid_t link_properties() {
  static hid_t props = [] {
    hid_t p = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(p, 1);
    return p;
  }();
  return props;
}

void write_entry(hid_t file, const CheckpointEntry& e) {
  const Tensor t = e.tensor->to_cpu();
  std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
  h5::Handle space(STRATA_HDF5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(),
                                                      nullptr)),
                   H5Sclose);
  h5::Handle dataset(STRATA_HDF5_CHECK(H5Dcreate2(file, e.name.c_str(), h5::file_type(t.dtype()),
                                                  space, link_properties(), H5P_DEFAULT, H5P_DEFAULT)),
                     H5Dclose);
  if (t.numel() > 0)
    STRATA_HDF5_CHECK(H5Dwrite(dataset, h5::memory_type(t.dtype()), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()));
  h5::write_attribute(dataset, "global_shape", e.global_shape);
  h5::write_attribute(dataset, "offset", e.offset);
  h5::write_attribute(dataset, "dtype", std::string(dtype_name(t.dtype())));
}

// The names of the tensors in a rank file, one a line, stored as a byte dataset (version-proof
// across HDF5 1.10 to 1.14, unlike the object-visiting API, and without the 64 KiB limit of
// attributes).
constexpr const char* kIndexName = "__tensors__";

void write_index(hid_t file, const std::string& listing) {
  hsize_t n = listing.size();
  h5::Handle space(STRATA_HDF5_CHECK(n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, nullptr)),
                   H5Sclose);
  h5::Handle dataset(STRATA_HDF5_CHECK(H5Dcreate2(file, kIndexName, H5T_STD_U8LE, space, H5P_DEFAULT,
                                                  H5P_DEFAULT, H5P_DEFAULT)),
                     H5Dclose);
  if (n > 0)
    STRATA_HDF5_CHECK(H5Dwrite(dataset, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, listing.data()));
}

std::string read_index(hid_t file, const std::string& file_path) {
  h5::Handle dataset = h5::open_dataset(file, kIndexName, file_path);
  h5::Handle space(STRATA_HDF5_CHECK(H5Dget_space(dataset)), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  std::string listing(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0)
    STRATA_HDF5_CHECK(H5Dread(dataset, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, listing.data()));
  return listing;
}

std::string manifest_text(const Manifest& m) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "format" << YAML::Value << m.format;
  out << YAML::Key << "step" << YAML::Value << m.step;
  out << YAML::Key << "layout" << YAML::Value << YAML::Flow << YAML::BeginMap;
  for (const auto& [k, v] : m.layout) out << YAML::Key << k << YAML::Value << v;
  out << YAML::EndMap;
  out << YAML::Key << "state" << YAML::Value << YAML::BeginMap;
  for (const auto& [k, v] : m.state) out << YAML::Key << k << YAML::Value << YAML::DoubleQuoted << v;
  out << YAML::EndMap;
  out << YAML::Key << "files" << YAML::Value << YAML::BeginSeq;
  for (const auto& f : m.files)
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << f.name << YAML::Key
        << "bytes" << YAML::Value << f.bytes << YAML::Key << "checksum" << YAML::Value << f.checksum
        << YAML::EndMap;
  out << YAML::EndSeq;
  out << YAML::Key << "config" << YAML::Value << YAML::Literal << m.config_yaml;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

void write_text_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  STRATA_CHECK(out.good(), "cannot write '", path.string(), "'");
}

// The step number of a "step-NNNNNN" folder name, or -1.
int64_t step_of(const std::string& name) {
  if (name.size() < 6 || name.rfind("step-", 0) != 0) return -1;
  const std::string digits = name.substr(5);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  if (!fs::is_directory(dir)) return found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const int64_t step = step_of(entry.path().filename().string());
    if (step >= 0 && entry.is_directory() && fs::exists(entry.path() / "manifest.yaml"))
      found.emplace_back(step, entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

// One stored slice of a tensor: where it sits in the global tensor.
struct StoredSlice {
  std::string file;
  std::vector<int64_t> offset, shape;
  DType dtype;
};

}  // namespace

std::string checkpoint_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%06lld", static_cast<long long>(step));
  return name;
}

uint64_t fnv1a(uint64_t h, const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string hex64(uint64_t h) {
  std::ostringstream hex;
  hex << std::hex << std::setw(16) << std::setfill('0') << h;
  return hex.str();
}

std::string file_checksum(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in.good(), "cannot read '", path, "' to checksum it");
  uint64_t h = kFnvBasis;
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    h = fnv1a(h, buffer.data(), static_cast<size_t>(in.gcount()));
  }
  return hex64(h);
}

namespace {

fs::path partial_path(const std::string& dir, int64_t step) {
  char partial_name[48];  // formatted whole: GCC 12 warns -Wrestrict falsely on "." + string
  std::snprintf(partial_name, sizeof(partial_name), ".step-%06lld.partial", static_cast<long long>(step));
  return fs::path(dir) / partial_name;
}

}  // namespace

std::string begin_checkpoint(const std::string& dir, int64_t step) {
  const fs::path partial = partial_path(dir, step);
  fs::create_directories(dir);
  fs::remove_all(partial);  // leftovers of a crashed attempt at the same step
  fs::create_directories(partial);
  return partial.string();
}

std::string write_rank_file(const std::string& partial, int rank, const std::vector<CheckpointEntry>& entries) {
  const std::string file_name = rank_file(rank);
  const fs::path path = fs::path(partial) / file_name;
  {
    h5::Handle file = h5::create_file(path.string());
    std::string listing;
    for (const auto& e : entries) {
      if (!e.write) continue;
      write_entry(file, e);
      listing += e.name + "\n";
    }
    write_index(file, listing);
  }
  return file_name + " " + std::to_string(fs::file_size(path)) + " " + file_checksum(path.string());
}

std::string finish_checkpoint(const std::string& dir, const std::string& partial, const Manifest& manifest,
                              const std::vector<std::string>& file_lines) {
  const fs::path final_path = fs::path(dir) / checkpoint_name(manifest.step);
  Manifest m = manifest;
  m.format = kCheckpointFormat;
  m.files.clear();
  for (const auto& line : file_lines) {
    std::istringstream in(line);
    Manifest::File f;
    in >> f.name >> f.bytes >> f.checksum;
    m.files.push_back(f);
  }
  write_text_file(fs::path(partial) / "manifest.yaml", manifest_text(m));
  // The rename makes the checkpoint visible whole; an older one of the same step goes first.
  if (fs::exists(final_path)) fs::remove_all(final_path);
  fs::rename(partial, final_path);
  return final_path.string();
}

std::string save_checkpoint(const std::string& dir, const Manifest& manifest,
                            const std::vector<CheckpointEntry>& entries, const CheckpointGroup& group) {
  const fs::path partial = partial_path(dir, manifest.step);
  if (group.rank == 0) begin_checkpoint(dir, manifest.step);
  group.barrier();
  const std::vector<std::string> all = group.gather(write_rank_file(partial.string(), group.rank, entries));
  if (group.rank == 0) finish_checkpoint(dir, partial.string(), manifest, all);
  group.barrier();
  return (fs::path(dir) / checkpoint_name(manifest.step)).string();
}

Manifest read_manifest(const std::string& path, bool verify_files) {
  const fs::path manifest_path = fs::path(path) / "manifest.yaml";
  STRATA_CHECK(fs::exists(manifest_path), "checkpoint '", path,
               "' has no manifest.yaml (incomplete or not a checkpoint)");
  YAML::Node root;
  try {
    root = YAML::LoadFile(manifest_path.string());
  } catch (const YAML::Exception& e) {
    STRATA_FAIL("checkpoint manifest '", manifest_path.string(), "' is not valid YAML: ", e.msg);
  }
  Manifest m;
  try {
    m.format = root["format"] ? root["format"].as<int64_t>() : 1;
    m.step = root["step"].as<int64_t>();
    m.config_yaml = root["config"].as<std::string>();
    for (const auto& kv : root["layout"]) m.layout[kv.first.as<std::string>()] = kv.second.as<int64_t>();
    for (const auto& kv : root["state"]) m.state[kv.first.as<std::string>()] = kv.second.as<std::string>();
    for (const auto& f : root["files"])
      m.files.push_back({f["name"].as<std::string>(), f["bytes"].as<int64_t>(),
                         f["checksum"].as<std::string>()});
  } catch (const YAML::Exception& e) {
    STRATA_FAIL("checkpoint manifest '", manifest_path.string(), "' is missing a field: ", e.msg);
  }
  STRATA_CHECK(m.format <= kCheckpointFormat, "checkpoint '", path, "' has format version ", m.format,
               "; this build reads up to version ", kCheckpointFormat, " (written by a newer Strata?)");
  if (verify_files) {
    for (const auto& f : m.files) {
      const fs::path file = fs::path(path) / f.name;
      STRATA_CHECK(fs::exists(file), "checkpoint '", path, "': file ", f.name, " is missing");
      const auto bytes = static_cast<int64_t>(fs::file_size(file));
      STRATA_CHECK(bytes == f.bytes, "checkpoint '", path, "': file ", f.name, " has ", bytes,
                   " bytes, the manifest says ", f.bytes, " (truncated?)");
      STRATA_CHECK(file_checksum(file.string()) == f.checksum, "checkpoint '", path, "': file ",
                   f.name, " does not match its checksum (corrupted)");
    }
  }
  return m;
}

namespace {

// Every stored slice of a checkpoint by tensor name, and each tensor's global shape.
struct SliceIndex {
  std::map<std::string, std::vector<StoredSlice>> slices;
  std::map<std::string, Shape> global_shapes;
};

SliceIndex index_checkpoint(const std::string& path) {
  const Manifest manifest = read_manifest(path);
  SliceIndex index;
  for (const auto& f : manifest.files) {
    const std::string file_path = (fs::path(path) / f.name).string();
    h5::Handle file = h5::open_file(file_path);
    std::vector<std::string> names;
    std::istringstream listing(read_index(file, file_path));
    for (std::string name; std::getline(listing, name);) names.push_back(name);
    for (const auto& name : names) {
      h5::Handle dataset = h5::open_dataset(file, name, file_path);
      StoredSlice s{file_path, h5::read_int_attribute(dataset, "offset"), h5::dataset_shape(dataset),
                    parse_dtype(h5::read_string_attribute(dataset, "dtype"))};
      index.global_shapes[name] = h5::read_int_attribute(dataset, "global_shape");
      index.slices[name].push_back(std::move(s));
    }
  }
  return index;
}

}  // namespace

std::map<std::string, StoredTensor> checkpoint_tensors(const std::string& path) {
  const SliceIndex index = index_checkpoint(path);
  std::map<std::string, StoredTensor> out;
  for (const auto& [name, slices] : index.slices) {
    StoredTensor t{index.global_shapes.at(name), slices.front().dtype, 0};
    for (const StoredSlice& s : slices) t.stored_elements += shape_numel(s.shape);
    out[name] = t;
  }
  return out;
}

void load_checkpoint(const std::string& path, const std::vector<CheckpointEntry>& entries) {
  const SliceIndex loaded = index_checkpoint(path);
  const auto& index = loaded.slices;
  auto global_shapes = loaded.global_shapes;

  for (const auto& e : entries) {
    auto it = index.find(e.name);
    STRATA_CHECK(it != index.end(), "checkpoint '", path, "' has no tensor '", e.name, "'");
    const Shape& stored_global = global_shapes[e.name];
    STRATA_CHECK(stored_global == e.global_shape, "checkpoint '", path, "': tensor '", e.name,
                 "' has global shape ", shape_string(stored_global), " but the model expects ",
                 shape_string(e.global_shape), " (a checkpoint of another model?)");
    Tensor& target = *e.tensor;
    const size_t nd = target.shape().size();
    const DType stored = it->second.front().dtype;
    // Slices are read straight into the target when it is a CPU tensor of the stored dtype;
    // otherwise into one buffer of the stored dtype, cast and copied once at the end.
    const bool direct = stored == target.dtype() && target.device().is_cpu() && target.is_contiguous();
    Tensor buffer = direct ? target : Tensor::empty(target.shape(), stored);
    int64_t covered = 0;
    for (const StoredSlice& s : it->second) {
      STRATA_CHECK(s.dtype == stored, "checkpoint '", path, "': tensor '", e.name,
                   "' is stored in more than one dtype");
      // The intersection of the stored slice and the wanted slice, per dim.
      std::vector<hsize_t> file_start(nd), mem_start(nd), count(nd);
      bool empty = false;
      for (size_t d = 0; d < nd; ++d) {
        const int64_t lo = std::max(s.offset[d], e.offset[d]);
        const int64_t hi = std::min(s.offset[d] + s.shape[d], e.offset[d] + target.shape()[d]);
        if (hi <= lo) empty = true;
        file_start[d] = static_cast<hsize_t>(lo - s.offset[d]);
        mem_start[d] = static_cast<hsize_t>(lo - e.offset[d]);
        count[d] = static_cast<hsize_t>(std::max<int64_t>(0, hi - lo));
      }
      if (empty) continue;
      h5::Handle file = h5::open_file(s.file);
      h5::Handle dataset = h5::open_dataset(file, e.name, s.file);
      h5::Handle file_space(STRATA_HDF5_CHECK(H5Dget_space(dataset)), H5Sclose);
      STRATA_HDF5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, file_start.data(), nullptr,
                                            count.data(), nullptr));
      std::vector<hsize_t> mem_dims(target.shape().begin(), target.shape().end());
      h5::Handle mem_space(
          STRATA_HDF5_CHECK(H5Screate_simple(static_cast<int>(nd), mem_dims.data(), nullptr)), H5Sclose);
      STRATA_HDF5_CHECK(H5Sselect_hyperslab(mem_space, H5S_SELECT_SET, mem_start.data(), nullptr,
                                            count.data(), nullptr));
      STRATA_HDF5_CHECK(H5Dread(dataset, h5::memory_type(stored), mem_space, file_space, H5P_DEFAULT,
                                buffer.raw()));
      int64_t n = 1;
      for (size_t d = 0; d < nd; ++d) n *= static_cast<int64_t>(count[d]);
      covered += n;
    }
    if (!direct) {
      if (stored == target.dtype()) {
        target.copy_from(buffer);
      } else {
        Tensor converted = Tensor::empty(target.shape(), target.dtype());
        ops::cast(buffer, converted);
        target.copy_from(converted);
      }
    }
    STRATA_CHECK(covered >= target.numel(), "checkpoint '", path, "': tensor '", e.name,
                 "' is only partly stored (", covered, " of ", target.numel(), " elements found)");
  }
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  auto found = complete_checkpoints(dir);
  if (found.empty()) return std::nullopt;
  return found.back().second.string();
}

void prune_checkpoints(const std::string& dir, int64_t keep) {
  if (keep <= 0) return;
  auto found = complete_checkpoints(dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < found.size(); ++i) fs::remove_all(found[i].second);
}

}  // namespace strata
