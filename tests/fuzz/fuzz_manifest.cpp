// libFuzzer: any bytes as a checkpoint's manifest.yaml. read_manifest must accept them or throw an
// Error naming the manifest; any other exception or a crash is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "io/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = "/tmp/strata_fuzz_manifest_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir + "/manifest.yaml", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    strata::read_manifest(dir, /*verify_files=*/true);
  } catch (const strata::Error&) {
  }
  return 0;
}
