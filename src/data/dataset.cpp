#include "data/dataset.h"

#include <system_error>
#include <utility>

#include "core/error.h"
#include "core/h5.h"

namespace strata {
namespace {

constexpr int64_t kFormatVersion = 1;
constexpr const char* kTokens = "tokens";

int64_t read_int(hid_t object, const char* name) {
  std::vector<int64_t> values = h5::read_int_attribute(object, name);
  STRATA_CHECK(values.size() == 1, "attribute ", name, " of /", kTokens, " holds ", values.size(),
               " values, not one");
  return values[0];
}

template <typename T>
void write_tokens(hid_t file, std::span<const int32_t> tokens, hid_t file_type, hid_t mem_type,
                  const TokenDatasetInfo& info) {
  std::vector<T> narrow(tokens.begin(), tokens.end());
  hsize_t dims[1] = {static_cast<hsize_t>(tokens.size())};
  h5::Handle space(STRATA_HDF5_CHECK(H5Screate_simple(1, dims, nullptr)), H5Sclose);
  h5::Handle dset(STRATA_HDF5_CHECK(H5Dcreate2(file, kTokens, file_type, space, H5P_DEFAULT,
                                               H5P_DEFAULT, H5P_DEFAULT)),
                  H5Dclose);
  if (!narrow.empty())
    STRATA_HDF5_CHECK(H5Dwrite(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, narrow.data()));
  h5::write_attribute(dset, "format_version", kFormatVersion);
  h5::write_attribute(dset, "vocab_size", info.vocab_size);
  h5::write_attribute(dset, "n_tokens", static_cast<int64_t>(tokens.size()));
  h5::write_attribute(dset, "n_documents", info.n_documents);
  h5::write_attribute(dset, "eot_id", info.eot_id);
  h5::write_attribute(dset, "tokenizer", info.tokenizer);
  h5::write_attribute(dset, "source", info.source);
}

template <typename T>
std::vector<uint32_t> read_tokens(hid_t dset, hid_t mem_type, size_t n) {
  std::vector<T> narrow(n);
  if (n > 0)
    STRATA_HDF5_CHECK(H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, narrow.data()));
  return std::vector<uint32_t>(narrow.begin(), narrow.end());
}

}  // namespace

TokenDataset::TokenDataset(std::vector<uint32_t> tokens, TokenDatasetInfo info,
                           std::filesystem::path path)
    : tokens_(std::move(tokens)), info_(std::move(info)), path_(std::move(path)) {}

void TokenDataset::write(const std::filesystem::path& path, std::span<const int32_t> tokens,
                         const TokenDatasetInfo& info) {
  STRATA_CHECK(info.vocab_size > 0 && info.vocab_size <= (int64_t{1} << 32), "token dataset ",
               path.string(), ": vocab_size ", info.vocab_size, " is out of range");
  for (size_t i = 0; i < tokens.size(); ++i)
    STRATA_CHECK(tokens[i] >= 0 && tokens[i] < info.vocab_size, "token dataset ", path.string(),
                 ": id ", tokens[i], " at position ", i,
                 " is outside [0, vocab_size=", info.vocab_size, ")");
  std::filesystem::path temporary = path;
  temporary += ".tmp";
  try {
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    {
      h5::Handle file = h5::create_file(temporary.string());
      if (info.vocab_size <= 65536)
        write_tokens<uint16_t>(file, tokens, H5T_STD_U16LE, H5T_NATIVE_UINT16, info);
      else
        write_tokens<uint32_t>(file, tokens, H5T_STD_U32LE, H5T_NATIVE_UINT32, info);
      STRATA_HDF5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL));
    }
    std::filesystem::rename(temporary, path);
  } catch (const std::exception& e) {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    STRATA_FAIL("cannot write token dataset ", path.string(), ": ", e.what());
  }
}

TokenDataset TokenDataset::read(const std::filesystem::path& path) {
  STRATA_CHECK(std::filesystem::is_regular_file(path), "token dataset ", path.string(),
               " does not exist (make it with `strata tokenize`; see docs/data.md)");
  try {
    h5::Handle file = h5::open_file(path.string());
    h5::Handle dset = h5::open_dataset(file, kTokens, path.string());
    std::vector<int64_t> shape = h5::dataset_shape(dset);
    STRATA_CHECK(shape.size() == 1, "/", kTokens, " is not one-dimensional");
    h5::Handle type(STRATA_HDF5_CHECK(H5Dget_type(dset)), H5Tclose);
    size_t type_bytes = H5Tget_size(type);
    STRATA_CHECK(H5Tget_class(type) == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_NONE &&
                     (type_bytes == 2 || type_bytes == 4),
                 "/", kTokens, " holds ", type_bytes,
                 "-byte elements that are not uint16 or uint32");

    TokenDatasetInfo info;
    int64_t version = read_int(dset, "format_version");
    STRATA_CHECK(version == kFormatVersion, "format_version ", version, " is not ", kFormatVersion);
    info.vocab_size = read_int(dset, "vocab_size");
    info.n_documents = read_int(dset, "n_documents");
    info.eot_id = read_int(dset, "eot_id");
    info.tokenizer = h5::read_string_attribute(dset, "tokenizer");
    info.source = h5::read_string_attribute(dset, "source");
    int64_t n_tokens = read_int(dset, "n_tokens");
    STRATA_CHECK(n_tokens == shape[0], "attribute n_tokens=", n_tokens, " but /", kTokens,
                 " holds ", shape[0], " ids");
    STRATA_CHECK(info.vocab_size > 0, "vocab_size ", info.vocab_size, " is not positive");

    const auto n = static_cast<size_t>(shape[0]);
    std::vector<uint32_t> tokens = type_bytes == 2
                                       ? read_tokens<uint16_t>(dset, H5T_NATIVE_UINT16, n)
                                       : read_tokens<uint32_t>(dset, H5T_NATIVE_UINT32, n);
    for (size_t i = 0; i < tokens.size(); ++i)
      STRATA_CHECK(tokens[i] < info.vocab_size, "id ", tokens[i], " at position ", i,
                   " is not below vocab_size ", info.vocab_size);
    return TokenDataset(std::move(tokens), std::move(info), path);
  } catch (const Error& e) {
    STRATA_FAIL("cannot read token dataset ", path.string(), ": ", e.what());
  }
}

}  // namespace strata
