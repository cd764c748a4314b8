// Checkpoints: `<dir>/step-000100/` holds one HDF5 file per rank (`rank-00003.h5`) with the
// tensors that rank owns, each stored under its global name with its slice of the global tensor
// (attributes global_shape and offset), and `manifest.yaml` (step, config, layout, trainer state,
// per-file sizes and checksums). All ranks write into `<dir>/.step-000100.partial/`; once every
// rank has finished, rank 0 writes the manifest and renames the folder, so a crash never leaves a
// half checkpoint that looks whole. Reading assembles each requested slice from whichever files
// hold parts of it, so a run resumes under any layout.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace strata {

// One tensor to save or to fill: its global name and shape, and where the local tensor sits in
// it (offset per dim; all zeros for a replicated tensor).
struct CheckpointEntry {
  std::string name;
  Shape global_shape;
  std::vector<int64_t> offset;
  Tensor* tensor;
  // Replicated tensors are written by one rank only (the one with write == true).
  bool write = true;
};

// The manifest's format version: 1 (from this version on; a manifest without one is read as 1).
// A manifest of a newer version is refused with a message that names both.
inline constexpr int64_t kCheckpointFormat = 1;

struct Manifest {
  int64_t format = kCheckpointFormat;
  int64_t step = 0;
  std::string config_yaml;                   // the run's whole config (config_to_yaml)
  std::map<std::string, int64_t> layout;     // world, dp, tp, pp, sp, ep
  std::map<std::string, std::string> state;  // trainer state: data position, loss scale, ...
  struct File {
    std::string name;
    int64_t bytes = 0;
    std::string checksum;  // FNV-1a 64 of the file's bytes, hex
  };
  std::vector<File> files;
};

// How ranks coordinate while writing: the defaults serve one process.
struct CheckpointGroup {
  int rank = 0;
  int world = 1;
  std::function<void()> barrier = [] {};
  // Rank 0 receives every rank's string, in rank order (others get an empty vector).
  std::function<std::vector<std::string>(const std::string&)> gather =
      [](const std::string& s) { return std::vector<std::string>{s}; };
};

std::string checkpoint_name(int64_t step);  // "step-000100"

// Writes this rank's entries and (rank 0) the manifest; returns the final folder's path.
std::string save_checkpoint(const std::string& dir, const Manifest& manifest,
                            const std::vector<CheckpointEntry>& entries, const CheckpointGroup& group);

// The same in pieces, for a tool that writes every rank's file itself (strata convert):
// the partial folder (created empty), one rank's file in it (returns its manifest line), and the
// manifest with the rename that makes the checkpoint visible.
std::string begin_checkpoint(const std::string& dir, int64_t step);
std::string write_rank_file(const std::string& partial, int rank, const std::vector<CheckpointEntry>& entries);
std::string finish_checkpoint(const std::string& dir, const std::string& partial, const Manifest& manifest,
                              const std::vector<std::string>& file_lines);

// What a checkpoint stores of one tensor: its global shape, dtype, and how many elements its
// slices hold in all (the whole tensor once when complete; more when slices overlap).
struct StoredTensor {
  Shape global_shape;
  DType dtype = DType::f32;
  int64_t stored_elements = 0;
};
// Every tensor of a checkpoint (read_manifest checks the files first), by name.
std::map<std::string, StoredTensor> checkpoint_tensors(const std::string& path);

// Reads and checks `<path>/manifest.yaml` (every listed file present with its size and checksum).
Manifest read_manifest(const std::string& path, bool verify_files = true);

// Fills every entry's tensor from the checkpoint at `path`, from any layout it was written in.
// Errors name the checkpoint, the tensor and, for a shape mismatch, both shapes.
void load_checkpoint(const std::string& path, const std::vector<CheckpointEntry>& entries);

// The newest complete checkpoint under `dir` (a step-NNNNNN folder with a manifest), if any.
std::optional<std::string> latest_checkpoint(const std::string& dir);

// Deletes all but the newest `keep` complete checkpoints (keep = 0 keeps all).
void prune_checkpoints(const std::string& dir, int64_t keep);

// FNV-1a 64 of a file's bytes, as 16 hex digits.
std::string file_checksum(const std::string& path);

// FNV-1a 64: `h` (start from kFnvBasis) extended by `bytes` bytes; and a hash as 16 hex digits.
inline constexpr uint64_t kFnvBasis = 0xcbf29ce484222325ull;
uint64_t fnv1a(uint64_t h, const void* data, size_t bytes);
std::string hex64(uint64_t h);

}  // namespace strata
