// libFuzzer: any bytes as a config file. parse_config must accept them or throw an Error (the
// one-line message naming the key or the file); any other exception or a crash is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    strata::parse_config(text, "fuzz");
  } catch (const strata::Error&) {
  }
  return 0;
}
