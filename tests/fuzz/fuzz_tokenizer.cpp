// libFuzzer: any bytes as text for the GPT-2 tokenizer (data/gpt2). Every id must lie in the
// vocabulary. Valid UTF-8 comes back exactly: decode(encode(x)) == x. Other bytes are read as UTF-8
// with U+FFFD for invalid sequences (as the npm tokenizer we match reads its input), so for them
// the decoded text must encode to the same ids again.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace {

// Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF.
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static strata::Tokenizer tokenizer = strata::Tokenizer::from_directory(std::string(STRATA_SOURCE_DIR) + "/data/gpt2");
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::vector<int32_t> ids = tokenizer.encode(text);
  for (int32_t id : ids)
    if (id < 0 || id >= tokenizer.vocab_size()) std::abort();
  const std::string back = tokenizer.decode(ids);
  if (valid_utf8(text) ? back != text : tokenizer.encode(back) != ids) {
    std::fprintf(stderr, "tokenizer round trip failed on %zu bytes (valid UTF-8: %d)\n", size, valid_utf8(text));
    std::abort();
  }
  return 0;
}
