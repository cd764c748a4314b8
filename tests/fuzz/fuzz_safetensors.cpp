// libFuzzer: any bytes as a safetensors file. Opening must succeed or throw an Error; when it
// succeeds, every tensor must read back without touching memory outside the file's data.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/strata_fuzz_" + std::to_string(::getpid()) + ".safetensors";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const strata::SafetensorsFile f = strata::SafetensorsFile::open(path);
    for (const auto& e : f.entries()) f.read(e.name);
  } catch (const strata::Error&) {
  }
  return 0;
}
