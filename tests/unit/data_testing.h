// Helpers for the data tests: where the fetched data lives, scratch directories, small files.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace strata::testing {

// The data directory scripts/fetch_data.sh fills: $STRATA_DATA_DIR, else <repo>/data (found from
// this header's own path, so the tests run from any build directory).
inline std::filesystem::path data_dir() {
  if (const char* env = std::getenv("STRATA_DATA_DIR"); env && *env) return env;
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "data";
}

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("strata_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// The message of the Error that `f` throws ("no error" when it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return std::move(content).str();
}

inline void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

// The reference ids of the Brown corpus (scripts/data/gpt2_reference_ids.mjs): every text file's
// ids from the JavaScript encoder, one after another, and where each file's ids are.
struct Reference {
  std::vector<uint16_t> ids;
  struct Entry {
    std::string name;
    size_t offset = 0, count = 0;
  };
  std::vector<Entry> entries;
  std::string problem;  // non-empty when the files disagree with their MANIFEST
};

inline uint64_t fnv1a64(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : bytes) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

// Reads <dir>/{MANIFEST, gpt2_ids.tsv, gpt2_ids.u16}.
inline Reference read_reference(const std::filesystem::path& dir) {
  std::map<std::string, std::string> manifest;
  std::istringstream lines(read_bytes(dir / "MANIFEST"));
  for (std::string line; std::getline(lines, line);) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) manifest[line.substr(0, eq)] = line.substr(eq + 1);
  }
  Reference ref;
  std::string raw = read_bytes(dir / "gpt2_ids.u16");
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(fnv1a64(raw)));
  if (manifest["fnv1a64"] != hash || manifest["tokens"] != std::to_string(raw.size() / 2))
    ref.problem = "the reference ids in " + dir.string() + " do not match its MANIFEST: delete " +
                  "that directory and rerun scripts/fetch_data.sh";
  ref.ids.resize(raw.size() / 2);
  for (size_t i = 0; i < ref.ids.size(); ++i)  // little-endian
    ref.ids[i] = static_cast<uint16_t>(static_cast<uint8_t>(raw[2 * i]) |
                                       (static_cast<uint8_t>(raw[2 * i + 1]) << 8));
  std::istringstream index(read_bytes(dir / "gpt2_ids.tsv"));
  for (std::string line; std::getline(index, line);) {
    Reference::Entry e;
    std::istringstream fields(line);
    std::getline(fields, e.name, '\t');
    fields >> e.offset >> e.count;
    ref.entries.push_back(e);
  }
  return ref;
}

}  // namespace strata::testing
