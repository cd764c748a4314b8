#include "data/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "data/unicode_tables.h"

namespace strata {
namespace {

// ---- Unicode ----

enum class CharClass : uint8_t { letter, number, space, other };

template <size_t N>
bool in_table(const unicode_tables::Range (&table)[N], char32_t c) {
  // The last range whose first <= c contains c, if any.
  auto it =
      std::upper_bound(std::begin(table), std::end(table), c,
                       [](char32_t v, const unicode_tables::Range& r) { return v < r.first; });
  return it != std::begin(table) && c <= std::prev(it)->last;
}

CharClass classify(char32_t c) {
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CharClass::letter;
    if (c >= '0' && c <= '9') return CharClass::number;
    if (c == ' ' || (c >= 0x09 && c <= 0x0d)) return CharClass::space;
    return CharClass::other;
  }
  if (in_table(unicode_tables::kLetter, c)) return CharClass::letter;
  if (in_table(unicode_tables::kNumber, c)) return CharClass::number;
  if (in_table(unicode_tables::kSpace, c)) return CharClass::space;
  return CharClass::other;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// The end (in code points) of the pre-token that starts at `i`: the first alternative of
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// that matches there, as a backtracking engine tries them. The classes partition all code points,
// so some alternative always matches and consecutive pieces cover the text.
size_t piece_end(const std::u32string& cps, const std::vector<CharClass>& cls, size_t i) {
  const size_t n = cps.size();
  if (cps[i] == U'\'' && i + 1 < n) {
    char32_t a = cps[i + 1];
    char32_t b = i + 2 < n ? cps[i + 2] : 0;
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return i + 2;
    if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l'))
      return i + 3;
  }
  // " ?X+" for X = letter, number, other: an optional leading space, then a run of X. When the
  // space is not followed by X, trying without it fails too (a space is none of the three).
  size_t j = cps[i] == U' ' ? i + 1 : i;
  if (j < n && cls[j] != CharClass::space) {
    CharClass run = cls[j];
    while (j < n && cls[j] == run) ++j;
    return j;
  }
  // Here cps[i] is white space. "\s+(?!\S)": the run, less its last character when a non-space
  // follows (so that " word" keeps its space), if anything is left; else "\s+": the whole run.
  size_t end = i;
  while (end < n && cls[end] == CharClass::space) ++end;
  if (end < n && end - i >= 2) return end - 1;
  return end;
}

// ---- files ----

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in.good(), "cannot open tokenizer file ", path.string(),
               " (run scripts/fetch_data.sh to get GPT-2's encoder.json and vocab.bpe)");
  std::ostringstream content;
  content << in.rdbuf();
  STRATA_CHECK(!in.bad(), "error reading tokenizer file ", path.string());
  return std::move(content).str();
}

}  // namespace

std::u32string decode_utf8_lossy(std::string_view bytes) {
  // The WHATWG Encoding Standard's UTF-8 decoder (which node uses to read files as UTF-8).
  std::u32string out;
  out.reserve(bytes.size());
  char32_t cp = 0;
  int needed = 0, seen = 0;
  uint8_t lower = 0x80, upper = 0xBF;
  for (size_t i = 0; i < bytes.size();) {
    uint8_t b = static_cast<uint8_t>(bytes[i]);
    if (needed == 0) {
      ++i;
      if (b <= 0x7F) {
        out += static_cast<char32_t>(b);
      } else if (b >= 0xC2 && b <= 0xDF) {
        needed = 1;
        cp = b & 0x1F;
      } else if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0) lower = 0xA0;
        if (b == 0xED) upper = 0x9F;  // no surrogates
        needed = 2;
        cp = b & 0x0F;
      } else if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0) lower = 0x90;
        if (b == 0xF4) upper = 0x8F;  // nothing above U+10FFFF
        needed = 3;
        cp = b & 0x07;
      } else {
        out += U'\uFFFD';
      }
      continue;
    }
    if (b < lower || b > upper) {
      // The sequence so far is one error; the byte is looked at again as a possible start.
      cp = 0;
      needed = seen = 0;
      lower = 0x80;
      upper = 0xBF;
      out += U'\uFFFD';
      continue;
    }
    ++i;
    lower = 0x80;
    upper = 0xBF;
    cp = (cp << 6) | (b & 0x3F);
    if (++seen == needed) {
      out += cp;
      cp = 0;
      needed = seen = 0;
    }
  }
  if (needed != 0) out += U'\uFFFD';
  return out;
}

PreTokens pretokenize(std::string_view text) {
  std::u32string cps = decode_utf8_lossy(text);
  std::vector<CharClass> cls(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) cls[i] = classify(cps[i]);

  PreTokens result;
  result.text.reserve(text.size() + 16);
  for (size_t i = 0; i < cps.size();) {
    size_t end = piece_end(cps, cls, i);
    for (; i < end; ++i) append_utf8(result.text, cps[i]);
    result.ends.push_back(result.text.size());
  }
  return result;
}

Tokenizer Tokenizer::from_directory(const std::filesystem::path& dir) {
  return Tokenizer(dir / "encoder.json", dir / "vocab.bpe");
}

Tokenizer::Tokenizer(const std::filesystem::path& encoder_json,
                     const std::filesystem::path& vocab_bpe)
    : source_(encoder_json.string() + " + " + vocab_bpe.string()) {
  // GPT-2's bytes_to_unicode(): the printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
  // themselves; the other 68 bytes get the code points 256, 257, ... in byte order, so every
  // byte has a visible, non-space stand-in and BPE pieces never contain white space.
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    append_utf8(byte_encoder_[b], printable ? static_cast<char32_t>(b) : next++);
  }
  std::unordered_map<std::string, uint8_t> byte_decoder;
  for (int b = 0; b < 256; ++b) byte_decoder[byte_encoder_[b]] = static_cast<uint8_t>(b);

  // encoder.json: {"piece": id, ...}, pieces byte-encoded.
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(read_file(encoder_json));
  } catch (const nlohmann::json::exception& e) {
    STRATA_FAIL("tokenizer vocabulary ", encoder_json.string(), " is not valid JSON: ", e.what());
  }
  STRATA_CHECK(vocab.is_object() && !vocab.empty(), "tokenizer vocabulary ", encoder_json.string(),
               " is not a non-empty JSON object of piece -> id");
  for (auto& [piece, id_json] : vocab.items()) {
    STRATA_CHECK(id_json.is_number_integer(), "tokenizer vocabulary ", encoder_json.string(),
                 ": the id of ", piece, " is not an integer");
    int64_t id = id_json.get<int64_t>();
    STRATA_CHECK(id >= 0 && id < (int64_t{1} << 24), "tokenizer vocabulary ", encoder_json.string(),
                 ": id ", id, " of ", piece, " is out of range");
    // Raw bytes of the piece: each code point maps back to one byte.
    std::string bytes;
    std::u32string cps = decode_utf8_lossy(piece);
    bool special = false;
    for (char32_t c : cps) {
      std::string one;
      append_utf8(one, c);
      auto it = byte_decoder.find(one);
      if (it == byte_decoder.end()) {
        special = true;
        break;
      }
      bytes += static_cast<char>(it->second);
    }
    // "<|endoftext|>" is spelled in plain ASCII, which is its own byte encoding.
    STRATA_CHECK(!special, "tokenizer vocabulary ", encoder_json.string(), ": piece ", piece,
                 " has a character outside GPT-2's byte encoding");
    if (static_cast<size_t>(id) >= id_bytes_.size()) id_bytes_.resize(static_cast<size_t>(id) + 1);
    id_bytes_[static_cast<size_t>(id)] = bytes;
    piece_ids_[piece] = static_cast<int32_t>(id);
  }
  eot_id_ = piece_id("<|endoftext|>");

  // vocab.bpe: a "#version" line, then one merge per line, "first second"; the file ends with a
  // newline. Like the JS package, drop the first and the last line (split on '\n').
  std::string merges = read_file(vocab_bpe);
  std::vector<std::string_view> lines;
  for (size_t start = 0;;) {
    size_t nl = merges.find('\n', start);
    lines.emplace_back(std::string_view(merges).substr(start, nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  STRATA_CHECK(lines.size() >= 2 && lines.front().starts_with("#version"), "tokenizer merges ",
               vocab_bpe.string(), " does not start with a #version line");
  merge_ranks_.reserve(lines.size());
  for (size_t k = 1; k + 1 < lines.size(); ++k) {
    std::string_view line = lines[k];
    size_t space = line.find(' ');
    STRATA_CHECK(space != std::string_view::npos && space > 0 && space + 1 < line.size() &&
                     line.find_first_of(" \t\r", space + 1) == std::string_view::npos,
                 "tokenizer merges ", vocab_bpe.string(), " line ", k + 1,
                 " is not \"first second\": ", line);
    // Later duplicates of a joined key overwrite earlier ones, as in the JS object.
    std::string key(line);
    key[space] = ',';
    merge_ranks_[key] = static_cast<int32_t>(k - 1);
  }
}

int32_t Tokenizer::piece_id(std::string_view piece) const {
  auto it = piece_ids_.find(std::string(piece));
  return it == piece_ids_.end() ? -1 : it->second;
}

std::vector<int32_t> Tokenizer::bpe(std::string_view word) const {
  // Start from one symbol per byte and repeatedly merge every occurrence of the best-ranked
  // adjacent pair, left to right, until no pair has a rank.
  std::vector<std::string> symbols;
  symbols.reserve(word.size());
  for (char c : word) symbols.push_back(byte_encoder_[static_cast<uint8_t>(c)]);
  std::string key;
  std::vector<std::string> merged;
  while (symbols.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      key.assign(symbols[i]).append(",").append(symbols[i + 1]);
      auto it = merge_ranks_.find(key);
      if (it != merge_ranks_.end() && it->second <= best_rank) {  // <=: the last pair wins a tie
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == std::numeric_limits<int32_t>::max()) break;
    const std::string first = symbols[best], second = symbols[best + 1];
    merged.clear();
    for (size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == first && symbols[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(std::move(symbols[i]));
        i += 1;
      }
    }
    symbols.swap(merged);
  }
  std::vector<int32_t> ids;
  ids.reserve(symbols.size());
  for (const std::string& s : symbols) {
    int32_t id = piece_id(s);
    // Cannot happen with GPT-2's files (every merge result is in the vocabulary); the JS encoder
    // would emit `undefined` here.
    STRATA_CHECK(id >= 0, "tokenizer ", source_, ": BPE piece ", s, " is not in the vocabulary");
    ids.push_back(id);
  }
  return ids;
}

void Tokenizer::encode_word(std::string_view word, std::vector<int32_t>& ids) {
  auto it = cache_.find(std::string(word));
  if (it == cache_.end()) {
    // Bounded, so a long run over a huge corpus does not grow without end; dropping the cache
    // changes speed only.
    if (cache_.size() >= (size_t{1} << 20)) cache_.clear();
    it = cache_.emplace(std::string(word), bpe(word)).first;
  }
  ids.insert(ids.end(), it->second.begin(), it->second.end());
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& ids) {
  PreTokens pieces = pretokenize(text);
  size_t start = 0;
  for (size_t end : pieces.ends) {
    encode_word(std::string_view(pieces.text).substr(start, end - start), ids);
    start = end;
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);
  encode_append(text, ids);
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    STRATA_CHECK(id >= 0 && id < vocab_size(), "decode: token id ", id, " at position ", i,
                 " is outside the vocabulary [0, ", vocab_size(), ") of ", source_);
    out += id_bytes_[static_cast<size_t>(id)];
  }
  return out;
}

}  // namespace strata
