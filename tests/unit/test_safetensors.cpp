// safetensors I/O (io/safetensors.h): a written file reads back bit for bit, and each kind of
// malformed file is refused with a message that names the file and the fault.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"

using namespace strata;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
  const fs::path dir = fs::temp_directory_path() / "strata_safetensors_test";
  fs::create_directories(dir);
  return dir;
}

// A file of an 8-byte length, `header`, then `data_bytes` zero bytes.
std::string raw_file(const std::string& name, const std::string& header, size_t data_bytes) {
  const std::string path = (temp_dir() / name).string();
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header << std::string(data_bytes, '\0');
  return path;
}

std::string refusal(const std::string& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, WritesAndReadsBackExactly) {
  Tensor a = Tensor::from_vector(std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.125f}, {2, 3});
  Tensor b = Tensor::from_vector(std::vector<int64_t>{5, -6, 7}, {3});
  Tensor c = Tensor::empty({4, 2}, DType::bf16);
  for (int64_t i = 0; i < c.numel(); ++i) static_cast<uint16_t*>(c.raw())[i] = static_cast<uint16_t>(0x3f80 + i);
  const std::string path = (temp_dir() / "roundtrip.safetensors").string();
  write_safetensors(path, {{"a", a}, {"b.weight", b}, {"c", c}}, {{"format", "pt"}});
  const SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.entries().size(), 3u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  for (const auto& [name, t] : std::vector<std::pair<std::string, Tensor>>{{"a", a}, {"b.weight", b}, {"c", c}}) {
    const Tensor r = f.read(name);
    EXPECT_EQ(r.shape(), t.shape()) << name;
    EXPECT_EQ(r.dtype(), t.dtype()) << name;
    EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0) << name;
  }
  // The data section starts 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST(Safetensors, RefusesMalformedFiles) {
  struct Case {
    std::string name, header;
    size_t data;
    std::string expected;
  };
  const Case cases[] = {
      {"past_end", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4, "past the end of the data"},
      {"size_mismatch", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "needs 12 bytes"},
      {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, "overlap"},
      {"bad_json", R"({"w":{"dtype":"F32",)", 0, "not valid JSON"},
      {"unknown_dtype", R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", 2, "dtype 'Q4'"},
      {"descending", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8, "not an ascending pair"},
      {"missing_field", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4, "malformed header entry"},
  };
  for (const Case& c : cases) {
    const std::string path = raw_file(c.name + ".safetensors", c.header, c.data);
    const std::string error = refusal(path);
    EXPECT_NE(error.find(c.expected), std::string::npos) << c.name << ": '" << error << "'";
    EXPECT_NE(error.find(path), std::string::npos) << c.name << ": the message names the file: " << error;
  }
  // A header length past the end of the file, and a file too short for the length itself.
  const std::string long_header = raw_file("long_header.safetensors", "{}", 0);
  {
    std::fstream f(long_header, std::ios::in | std::ios::out | std::ios::binary);
    f.put(static_cast<char>(200));
  }
  EXPECT_NE(refusal(long_header).find("runs past the end of the file"), std::string::npos) << refusal(long_header);
  const std::string tiny = (temp_dir() / "tiny.safetensors").string();
  std::ofstream(tiny) << "abc";
  EXPECT_NE(refusal(tiny).find("too short"), std::string::npos) << refusal(tiny);
  fs::remove_all(temp_dir());
}
