// The GPT-2 tokenizer against the JavaScript encoder it must reproduce (npm gpt-3-encoder 1.1.4):
// hand-written cases whose ids that encoder produced, its regex's splits, a synthetic vocabulary
// that shows the package's comma-joined merge keys, and the whole Brown corpus against the
// reference ids scripts/fetch_data.sh makes by running the package under node.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "data/tokenizer.h"
#include "unit/data_testing.h"

using namespace strata;
using strata::testing::data_dir;
using strata::testing::read_bytes;
using strata::testing::read_reference;
using strata::testing::Reference;
using strata::testing::ScratchDir;
using strata::testing::write_bytes;

namespace {

std::filesystem::path gpt2_dir() {
  return data_dir() / "gpt2";
}

bool have_gpt2() {
  return std::filesystem::exists(gpt2_dir() / "encoder.json") &&
         std::filesystem::exists(gpt2_dir() / "vocab.bpe");
}

// One tokenizer per test process (reading the 50k-entry vocabulary takes a moment).
Tokenizer& gpt2() {
  static std::unique_ptr<Tokenizer> tokenizer =
      std::make_unique<Tokenizer>(Tokenizer::from_directory(gpt2_dir()));
  return *tokenizer;
}

#define SKIP_WITHOUT_GPT2()                                      \
  if (!have_gpt2())                                              \
  GTEST_SKIP() << "GPT-2 vocabulary not found in " << gpt2_dir() \
               << ": run scripts/fetch_data.sh (scripts/test.sh does) or set STRATA_DATA_DIR"

// ---- cases: ids made by the JavaScript encoder ----
// Generated once with node 20 from gpt-3-encoder 1.1.4: for each case,
//   require('gpt-3-encoder').encode(Buffer.from(bytes).toString('utf-8'))
// (for the invalid_* byte strings node's UTF-8 decoding turns bad bytes into U+FFFD first).
struct Case {
  const char* name;
  const char* text;
  std::vector<int32_t> ids;
};

const std::vector<Case>& js_cases() {
  static const std::vector<Case> cases = {
      {"empty", "", {}},
      {"hello", "Hello world", {15496, 995}},
      {"sentence", "Hello, world! How's it going?", {15496, 11, 995, 0, 1374, 338, 340, 1016, 30}},
      {"contractions",
       "I'm sure you're right: we've said they'll come, she'd know it's so, don't you?",
       {40, 1101, 1654, 345, 821, 826, 25,  356, 1053, 531, 484, 1183, 1282,
        11, 673,  1549, 760, 340, 338, 523, 11,  836,  470, 345, 30}},
      {"contractions_upper", "IT'S DON'T WE'LL", {2043, 6, 50, 23917, 6, 51, 12887, 6, 3069}},
      {"apostrophes",
       "''s 'tis rock 'n' roll '",
       {7061, 82, 705, 48010, 3881, 705, 77, 6, 4836, 705}},
      {"numbers",
       "In 1984, 3.14159 and 1,000,000 people; 12345678901234567890",
       {818, 12844, 11, 513,   13,   1415, 19707, 290, 352,  11,   830,   11,
        830, 661,   26, 17031, 2231, 3134, 4531,  486, 1954, 2231, 30924, 3829}},
      {"unicode_numbers",
       "\xd9\xa3\xd9\xa4 \xc2\xb2\xc2\xb3 \xe2\x85\xab \xc2\xbd \xe0\xaf\xb0",
       {149, 96, 149, 97, 1587, 110, 126, 111, 2343, 227, 104, 25208, 220, 156, 107, 108}},
      {"spaces",
       "a  b   c\n\nd\t\te \n f  ",
       {64, 220, 275, 220, 220, 269, 198, 198, 67, 197, 197, 68, 220, 198, 277, 220, 220}},
      {"leading_trailing",
       "   leading and trailing   ",
       {220, 220, 3756, 290, 25462, 220, 220, 220}},
      {"newlines",
       "line one\r\nline two\n\n\nline four\n",
       {1370, 530, 201, 198, 1370, 734, 628, 198, 1370, 1440, 198}},
      {"unicode_spaces",
       "x\xc2\xa0y \xc2\xa0 z\xe2\x80\xa8w\xe3\x80\x80v \xef\xbb\xbfu",
       {87, 1849, 88, 5624, 1976, 447, 101, 86, 5099, 222, 85, 220, 171, 119, 123, 84}},
      {"not_js_space",
       "a\xc2\x85"
       "b \xe2\x80\x8b"
       "c",
       {64, 126, 227, 65, 20126, 66}},
      {"accents",
       "na\xc3\xafve caf\xc3\xa9 r\xc3\xa9sum\xc3\xa9 \xc3\x85ngstr\xc3\xb6m",
       {2616, 38776, 40304, 40560, 16345, 2634, 6184, 227, 782, 2536, 9101, 76}},
      {"scripts",
       "\xce\x95\xce\xbb\xce\xbb\xce\xb7\xce\xbd\xce\xb9\xce\xba\xce\xac "
       "\xd1\x80\xd1\x83\xd1\x81\xd1\x81\xd0\xba\xd0\xb8\xd0\xb9 "
       "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3"
       "\x83\x88 \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xd7\xa2\xd7\x91\xd7\xa8\xd7\x99\xd7\xaa "
       "\xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9 "
       "\xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80",
       {138,   243,   39377, 39377, 138,   115,   26180, 29945, 43000, 138,   105,   220,   21169,
        35072, 21727, 21727, 31583, 18849, 140,   117,   10545, 245,   98,    17312, 105,   45739,
        252,   5641,  24336, 25084, 43302, 220,   47991, 250,   166,   113,   255,   168,   244,
        112,   14360, 95,    49603, 37778, 33951, 103,   28981, 44690, 26897, 39848, 22654, 45632,
        28225, 117,   11976, 123,   11976, 101,   24231, 235,   11976, 99,    24231, 222}},
      {"combining",
       "e\xcc\x81te\xcc\x81 a\xcc\x80 n\xcc\x83",
       {68, 136, 223, 660, 136, 223, 257, 136, 222, 299, 136, 225}},
      {"emoji",
       "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd family "
       "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 ok "
       "\xf0\x9f\xa4\x96!",
       {41840, 235, 8582, 237,   121, 1641,  50169, 101, 447, 235, 41840,
        102,   447, 235,  41840, 100, 12876, 12520, 97,  244, 0}},
      {"code",
       "def f(x):\n    return {\"a\": [1, 2], 'b': None}  # ok\n",
       {4299, 277, 7,   87,   2599, 198, 220,   220,  220, 1441, 19779, 64,    1298, 685,
        16,   11,  362, 4357, 705,  65,  10354, 6045, 92,  220,  1303,  12876, 198}},
      {"punctuation",
       "...!!! ?!? --- \"quoted\" (parens) [brackets] $5.00 50% a/b c_d",
       {986,   10185, 5633, 22857, 11420, 366, 421,  5191, 1,   357, 11730, 82,  8,  685, 1671,
        25180, 60,    720,  20,    13,    405, 2026, 4,    257, 14,  65,    269, 62, 67}},
      {"endoftext_as_text", "one<|endoftext|>two", {505, 27, 91, 437, 1659, 5239, 91, 29, 11545}},
      {"long_word",
       "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
       {47,  25668, 261,  25955, 859,   2500, 1416,  404,   873,  41896,
        709, 349,   5171, 36221, 42960, 1885, 29207, 44390, 3699, 1042}},
      {"invalid_lone_ff", "\xff", {4210}},
      {"invalid_truncated_2", "a\xc3(b", {64, 4210, 7, 65}},
      {"invalid_truncated_3_at_end", "a\xe2\x82", {64, 4210}},
      {"invalid_surrogate", "\xed\xa0\x80 x", {48585, 2124}},
      {"invalid_above_max", "\xf4\x90\x80\x80", {12100}},
      {"invalid_overlong", "\xc0\xaf/", {6353, 14}},
      {"valid_euro_between", "ok\xe2\x82\xacok", {482, 26391, 482}},
      {"invalid_mixed",
       "A\xf0\x9f\x98"
       "A\xe0\x80"
       "B\xf8"
       "C",
       {32, 4210, 32, 6353, 33, 4210, 34}},
  };
  return cases;
}

}  // namespace

// ---- pre-tokenization and UTF-8, no vocabulary needed ----

TEST(PreTokenizer, SplitsLikeTheJavaScriptRegex) {
  // Expected pieces from node: Array.from(text.matchAll(pat)).map(m => m[0]).
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"  hello world", {" ", " hello", " world"}},
      {"a \n b", {"a", " \n", " b"}},
      {"x\t\t y", {"x", "\t\t", " y"}},
      {"end   ", {"end", "   "}},
      {"don't 'S", {"don", "'t", " '", "S"}},
      {"''s", {"''", "s"}},
      {"1984abc", {"1984", "abc"}},
      {" !?x", {" !?", "x"}},
      {"a\xc2\xa0"
       "b",
       {"a", "\xc2\xa0", "b"}},  // NBSP is JavaScript white space
      {"tab\t", {"tab", "\t"}},
      {"\n\n\nx", {"\n\n", "\n", "x"}},
      {"", {}},
  };
  for (const auto& [text, want] : cases) {
    PreTokens got = pretokenize(text);
    std::vector<std::string> pieces;
    size_t start = 0;
    for (size_t end : got.ends) {
      pieces.push_back(got.text.substr(start, end - start));
      start = end;
    }
    EXPECT_EQ(pieces, want) << "text: \"" << text << "\"";
  }
}

TEST(PreTokenizer, DecodesUtf8LikeWhatwg) {
  // Each maximal ill-formed subsequence becomes one U+FFFD (the WHATWG decoder node uses).
  EXPECT_EQ(decode_utf8_lossy("a\xc3\xa9z"), std::u32string(U"a\u00e9z"));
  EXPECT_EQ(decode_utf8_lossy("\xf0\x9f\x91\x8d"), std::u32string(U"\U0001F44D"));
  EXPECT_EQ(decode_utf8_lossy("\xff"), std::u32string(U"\uFFFD"));
  EXPECT_EQ(decode_utf8_lossy("\xe2\x82"), std::u32string(U"\uFFFD"));  // truncated
  EXPECT_EQ(decode_utf8_lossy("\xe2\x82x"), std::u32string(U"\uFFFDx"));
  EXPECT_EQ(decode_utf8_lossy("\xed\xa0\x80"), std::u32string(U"\uFFFD\uFFFD\uFFFD"));  // surrogate
  EXPECT_EQ(decode_utf8_lossy("\xc0\xaf"), std::u32string(U"\uFFFD\uFFFD"));            // overlong
  EXPECT_EQ(decode_utf8_lossy("\xf0\x9f\x98"
                              "A"),
            std::u32string(U"\uFFFDA"));
}

// ---- the GPT-2 vocabulary ----

TEST(Gpt2Tokenizer, MatchesTheJavaScriptEncoderOnHandWrittenCases) {
  SKIP_WITHOUT_GPT2();
  Tokenizer& tok = gpt2();
  for (const Case& c : js_cases()) {
    std::vector<int32_t> ids = tok.encode(c.text);
    EXPECT_EQ(ids, c.ids) << "case " << c.name;
    // decode(encode(x)) is x for well-formed UTF-8, and x with U+FFFD for bad bytes otherwise.
    std::string expected_text = pretokenize(c.text).text;
    EXPECT_EQ(tok.decode(ids), expected_text) << "case " << c.name;
    if (std::strncmp(c.name, "invalid_", 8) != 0) {
      EXPECT_EQ(expected_text, c.text) << c.name;
    }
  }
}

TEST(Gpt2Tokenizer, VocabularyAndSpecialIds) {
  SKIP_WITHOUT_GPT2();
  Tokenizer& tok = gpt2();
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.eot_id(), 50256);
  EXPECT_EQ(tok.piece_id("\xc4\xa0the"), 262);  // "Ġthe": " the"
  EXPECT_EQ(tok.piece_id("no such piece"), -1);
  const std::vector<int32_t> eot = {50256};
  EXPECT_EQ(tok.decode(eot), "<|endoftext|>");
  // Every byte has a token of its own, so any byte string decodes from some ids.
  for (int b = 0; b < 256; ++b) {
    std::string one(1, static_cast<char>(b));
    bool found = false;
    for (int32_t id = 0; id < 256 && !found; ++id)
      found = tok.decode(std::vector<int32_t>{id}) == one;
    EXPECT_TRUE(found) << "byte " << b;
  }
}

TEST(Gpt2Tokenizer, DecodeNamesABadId) {
  SKIP_WITHOUT_GPT2();
  const std::vector<int32_t> ids = {15496, 50257};
  try {
    gpt2().decode(ids);
    FAIL() << "decode accepted id 50257";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("50257"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("position 1"), std::string::npos) << e.what();
  }
}

// ---- the package's quirk, on a synthetic vocabulary ----

TEST(TokenizerQuirks, MergeRanksAreKeyedByCommaJoinedPairsLikeJavaScript) {
  // gpt-3-encoder looks a pair up as the string "first,second". With the merges "! ," and
  // "! ,#", the pair ("!,", "#") reads as "!,,#", the key of the second merge, so "!,#" becomes one
  // piece (a Python BPE would stop at "!," "#"). Expected ids from the package's Encoder.js run
  // under node with these two files: encode("!,#") = [4], encode("!,#!,") = [4, 3].
  ScratchDir dir("tokenizer_quirk");
  write_bytes(dir / "encoder.json",
              R"({"!": 0, ",": 1, "#": 2, "!,": 3, "!,#": 4, "<|endoftext|>": 5})");
  write_bytes(dir / "vocab.bpe", "#version: 0.2\n! ,\n! ,#\n");
  Tokenizer tok = Tokenizer::from_directory(dir.path());
  EXPECT_EQ(tok.encode("!,#"), (std::vector<int32_t>{4}));
  EXPECT_EQ(tok.encode("!,#!,"), (std::vector<int32_t>{4, 3}));
  EXPECT_EQ(tok.encode("#!"), (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(tok.eot_id(), 5);
  EXPECT_EQ(tok.vocab_size(), 6);
}

TEST(TokenizerFiles, MissingOrMalformedFilesAreNamed) {
  ScratchDir dir("tokenizer_files");
  auto message_of = [](const std::filesystem::path& d) {
    return strata::testing::error_of([&] { Tokenizer::from_directory(d); });
  };
  std::string missing = message_of(dir.path());
  EXPECT_NE(missing.find((dir / "encoder.json").string()), std::string::npos) << missing;
  write_bytes(dir / "encoder.json", "{\"a\": 0,");
  std::string bad_json = message_of(dir.path());
  EXPECT_NE(bad_json.find("not valid JSON"), std::string::npos) << bad_json;
  write_bytes(dir / "encoder.json", R"({"a": 0, "b": 1, "ab": 2})");
  write_bytes(dir / "vocab.bpe", "#version: 0.2\na b c\n");
  std::string bad_merge = message_of(dir.path());
  EXPECT_NE(bad_merge.find("vocab.bpe line 2"), std::string::npos) << bad_merge;
}

// ---- the whole Brown corpus against the JavaScript encoder ----

TEST(BrownCorpus, EveryDocumentEncodesToTheJavaScriptEncodersIds) {
  SKIP_WITHOUT_GPT2();
  const std::filesystem::path brown = data_dir() / "brown";
  if (!std::filesystem::exists(brown / "reference" / "MANIFEST"))
    GTEST_SKIP() << "no reference ids in " << brown / "reference"
                 << ": run scripts/fetch_data.sh";
  Tokenizer& tok = gpt2();
  Reference ref = read_reference(brown / "reference");
  ASSERT_TRUE(ref.problem.empty()) << ref.problem;
  ASSERT_EQ(ref.entries.size(), 500u);

  auto start = std::chrono::steady_clock::now();
  size_t n_tokens = 0, n_bytes = 0, mismatched = 0;
  for (const Reference::Entry& e : ref.entries) {
    std::string text = read_bytes(brown / "text" / e.name);
    n_bytes += text.size();
    std::vector<int32_t> ids = tok.encode(text);
    n_tokens += ids.size();
    std::vector<int32_t> want(ref.ids.begin() + static_cast<std::ptrdiff_t>(e.offset),
                              ref.ids.begin() + static_cast<std::ptrdiff_t>(e.offset + e.count));
    if (ids != want) {
      size_t at = 0;
      while (at < ids.size() && at < want.size() && ids[at] == want[at]) ++at;
      size_t from = at >= 5 ? at - 5 : 0;
      auto context = [&](const std::vector<int32_t>& v) {
        return tok.decode(
            std::span<const int32_t>(v).subspan(from, std::min(v.size(), at + 5) - from));
      };
      ADD_FAILURE() << e.name << ": " << ids.size() << " ids, the JS encoder gave " << want.size()
                    << "; first difference at id " << at << ": ours \"" << context(ids)
                    << "\", theirs \"" << context(want) << "\"";
      if (++mismatched == 5) break;
    }
    EXPECT_EQ(tok.decode(ids), text) << e.name << ": decode(encode(text)) differs from the text";
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(n_tokens, ref.ids.size());
  std::printf("Brown corpus: %zu documents, %zu bytes, %zu tokens, encoded and decoded in %.2f s\n",
              ref.entries.size(), n_bytes, n_tokens, seconds);
}
