// The config schema: defaults, parsing, overrides, and the message each bad input gets.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/config.h"

using namespace strata;

namespace {
// The message of the Error `f` throws; fails the test when it throws nothing.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}
}  // namespace

TEST(Config, DefaultsAreValid) {
  Config c = parse_config("", "empty");
  EXPECT_EQ(c.model.arch, "llama");
  EXPECT_EQ(c.model.vocab_size, 50257);
  EXPECT_EQ(c.train.global_batch, 256);
  EXPECT_EQ(c.optim.betas[1], 0.95);
  EXPECT_EQ(c.checkpoint_dir(), "runs/default/checkpoints");
}

TEST(Config, ReadsNestedSectionsAndOverrides) {
  Config c = parse_config(R"(
model: { arch: gpt2, n_layers: 2, d_model: 64, n_heads: 4, n_kv_heads: 4, norm: layernorm,
         moe: { n_experts: 4, top_k: 1 } }
train: { seq_len: 32, micro_batch: 2, global_batch: 8 }
optim: { betas: [0.8, 0.99] }
)",
                          "inline", {"train.steps=7", "optim.lr=1e-3", "model.tie_embeddings=true"});
  EXPECT_EQ(c.model.arch, "gpt2");
  EXPECT_EQ(c.model.n_layers, 2);
  EXPECT_EQ(c.model.moe.n_experts, 4);
  EXPECT_EQ(c.model.moe.top_k, 1);
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_DOUBLE_EQ(c.optim.lr, 1e-3);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.optim.betas[0], 0.8);
}

TEST(Config, YamlRoundTripGivesTheSameConfig) {
  Config c = parse_config("model: { n_layers: 3, moe: { n_experts: 8 } }\ndata: { train: 'a b.h5' }",
                          "inline", {"checkpoint.dir=/tmp/x"});
  std::string yaml = config_to_yaml(c);
  Config back = parse_config(yaml, "round trip");
  EXPECT_EQ(config_to_yaml(back), yaml);
  EXPECT_EQ(back.model.n_layers, 3);
  EXPECT_EQ(back.model.moe.n_experts, 8);
  EXPECT_EQ(back.data.train, "a b.h5");
  EXPECT_EQ(back.checkpoint.dir, "/tmp/x");
}

TEST(Config, UnknownKeyNamesItsPathAndTheNearestValidName) {
  std::string m = error_of([] { parse_config("model:\n  n_layer: 3\n", "run.yaml"); });
  EXPECT_NE(m.find("run.yaml"), std::string::npos) << m;
  EXPECT_NE(m.find("unknown key 'model.n_layer'"), std::string::npos) << m;
  EXPECT_NE(m.find("did you mean 'model.n_layers'"), std::string::npos) << m;
  m = error_of([] { parse_config("trian: { steps: 3 }\n", "run.yaml"); });
  EXPECT_NE(m.find("unknown key 'trian.steps'"), std::string::npos) << m;
  EXPECT_NE(m.find("'train.steps'"), std::string::npos) << m;
  m = error_of([] { parse_config("", "x", {"optim.betass=[0.9, 0.9]"}); });
  EXPECT_NE(m.find("did you mean 'optim.betas'"), std::string::npos) << m;
}

TEST(Config, WrongTypesAndValuesNameTheKey) {
  struct Case {
    std::string yaml;
    std::string expect;
  };
  for (const Case& c : std::vector<Case>{
           {"train: { steps: ten }", "key 'train.steps': expected int, got 'ten'"},
           {"model: { tie_embeddings: maybe }", "key 'model.tie_embeddings': expected bool"},
           {"model: { norm: batchnorm }", "key 'model.norm': 'batchnorm' is not one of layernorm, rmsnorm"},
           {"optim: { betas: [0.9] }", "key 'optim.betas': expected a list of two floats"},
           {"model: 3", "'model' is a section"},
           {"model: { d_model: 100, n_heads: 12 }", "key 'model.n_heads': 12 heads do not divide model.d_model = 100"},
           {"model: { n_heads: 12, n_kv_heads: 5 }", "key 'model.n_kv_heads': 5 kv heads do not divide"},
           {"train: { seq_len: 2048 }", "key 'train.seq_len': 2048 exceeds model.max_seq_len = 1024"},
           {"optim: { lr: 0 }", "key 'optim.lr' must be positive"},
           {"optim: { lr: 1e-4, min_lr: 1e-3 }", "key 'optim.min_lr'"},
           {"train: { micro_batch: 3, global_batch: 8 }", "key 'train.global_batch': 8 is not a multiple"},
           {"parallel: { dp: 2, sp: 2, ep: 3 }", "ep=3 does not divide dp*sp=4"},
           {"parallel: { zero: 4 }", "key 'parallel.zero' must be 0, 1, 2 or 3"},
           {"model: [1, 2", "not valid YAML at line"},
       }) {
    std::string m = error_of([&] { parse_config(c.yaml, "t.yaml"); });
    EXPECT_NE(m.find(c.expect), std::string::npos) << "yaml: " << c.yaml << "\nmessage: " << m;
  }
}

TEST(Config, OverrideSyntaxErrors) {
  Config c;
  EXPECT_NE(error_of([&] { apply_override(c, "train.steps"); }).find("expected key.path=value"),
            std::string::npos);
  EXPECT_NE(error_of([&] { apply_override(c, "train.steps=abc"); }).find("--set train.steps=abc"),
            std::string::npos);
}

TEST(Config, MissingFileIsNamed) {
  std::string m = error_of([] { load_config("/nonexistent/run.yaml"); });
  EXPECT_NE(m.find("config file '/nonexistent/run.yaml' cannot be read"), std::string::npos) << m;
}

TEST(Config, ReferenceDocIsUpToDate) {
  std::ifstream in(std::string(STRATA_SOURCE_DIR) + "/docs/config.md");
  ASSERT_TRUE(in.good()) << "docs/config.md is missing: run `strata config --reference > docs/config.md`";
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), config_reference_markdown())
      << "docs/config.md is stale: run `strata config --reference > docs/config.md`";
}
