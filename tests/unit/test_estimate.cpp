// `strata estimate` (tools/estimate.h): the published formulas against the papers' own tables and
// hand-computed values, the FLOP count against a hand count and the trainer's counter, the
// parameters each rank holds against a model actually built with that layout, and bad hardware
// files refused with the field named.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "model/flops.h"
#include "model/transformer.h"
#include "parallel/pipeline.h"
#include "hardware_testing.h"
#include "tools/estimate.h"

using namespace strata;
using strata::testing::test_hardware;

namespace {

// The parity tests' tiny Llama: d 32, 2 layers, 4 query heads over 2 kv heads, SwiGLU d_ff 64,
// vocabulary 501, untied head.
Config tiny_llama() {
  return parse_config(R"(
model: { arch: llama, vocab_size: 501, n_layers: 2, d_model: 32, n_heads: 4, n_kv_heads: 2,
         d_ff: 64, max_seq_len: 32 }
train: { device: cpu, precision: fp32, seq_len: 16, micro_batch: 2, global_batch: 8 }
)",
                      "tiny");
}

}  // namespace

// Rajbhandari et al. 2020, Table 1: per-device model-state memory (GB) of a 7.5B, a 128B and a 1T
// parameter model (K = 12) under P_os, P_os+g and P_os+g+p for data-parallel degrees 1 to 1024, as
// the paper prints them (rounded: 3 significant digits for 7.5B, whole GB for the larger ones).
TEST(Estimate, ReproducesTheZeroPapersTable1) {
  struct Row {
    double n_d;
    double gb[3][3];  // [model][stage 1, 2, 3]
  };
  const double psi[3] = {7.5e9, 128e9, 1e12};
  const double tolerance[3] = {0.1, 1.0, 1.0};  // GB: the printed precision
  const Row rows[] = {
      {1, {{120, 120, 120}, {2048, 2048, 2048}, {16000, 16000, 16000}}},
      {4, {{52.5, 41.3, 30}, {896, 704, 512}, {7000, 5500, 4000}}},
      {16, {{35.6, 21.6, 7.5}, {608, 368, 128}, {4750, 2875, 1000}}},
      {64, {{31.4, 16.6, 1.88}, {536, 284, 32}, {4187, 2218, 250}}},
      {256, {{30.4, 15.4, 0.47}, {518, 263, 8}, {4046, 2054, 62.5}}},
      {1024, {{30.1, 15.1, 0.12}, {513, 257, 2}, {4011, 2013, 15.6}}},
  };
  for (const Row& row : rows)
    for (int model = 0; model < 3; ++model)
      for (int stage = 1; stage <= 3; ++stage)
        EXPECT_NEAR(zero_paper_state_bytes(psi[model], stage, row.n_d) / 1e9, row.gb[model][stage - 1],
                    tolerance[model])
            << "model " << psi[model] << " N_d " << row.n_d << " stage " << stage;
  EXPECT_DOUBLE_EQ(zero_paper_state_bytes(7.5e9, 0, 64), 120e9);  // stage 0: (2 + 2 + 12) Psi
}

// Korthikanti et al. 2022, Table 2, for GPT-3 175B (s 2048, b 1, h 12288, a 96) at t = 8, worked
// by hand: sbh = 2048 * 12288 = 25,165,824 and 5as/h = 80.
TEST(Estimate, KorthikantiActivationsForGpt3) {
  const double s = 2048, b = 1, h = 12288, a = 96, sbh = 25165824;
  struct Case {
    double t;
    bool sp;
    Recompute recompute;
    double bytes;
  };
  const Case cases[] = {
      {1, false, Recompute::none, 114 * sbh},         // 34 + 80: 2,868,903,936
      {8, false, Recompute::none, 23 * sbh},          // 10 + 24/8 + 80/8: 578,813,952
      {8, true, Recompute::none, 14.25 * sbh},        // 34/8 + 80/8: 358,612,992
      {8, false, Recompute::selective, 13 * sbh},     // 10 + 24/8: 327,155,712
      {8, true, Recompute::selective, 4.25 * sbh},    // 34/8: 106,954,752
      {8, false, Recompute::full, 2 * sbh},           // the layer input: 50,331,648
      {8, true, Recompute::full, 2 * sbh / 8},        // split over tp: 6,291,456
  };
  for (const Case& c : cases)
    EXPECT_DOUBLE_EQ(korthikanti_layer_bytes(s, b, h, a, c.t, c.sp, c.recompute), c.bytes)
        << "t " << c.t << " sp " << c.sp << " recompute " << static_cast<int>(c.recompute);
  EXPECT_DOUBLE_EQ(korthikanti_layer_bytes(s, b, h, a, 8, false, Recompute::none), 578813952.0);
}

// FLOPs of the tiny Llama counted by hand: per layer q 32x32, k and v 32x16 (2 kv heads of 8),
// o 32x32 = 3072 matmul weights, SwiGLU 3 x 32 x 64 = 6144; 2 layers and the 501 x 32 head: 34,464
// weights, 2 FLOPs each forward, plus attention 2 x layers x d x seq = 2048 per token.
TEST(Estimate, FlopsMatchAHandCountAndTheTrainersCounter) {
  const Config c = tiny_llama();
  const Estimate e = estimate_run(c, test_hardware());
  EXPECT_EQ(e.active_params_per_token, 34464);
  EXPECT_DOUBLE_EQ(e.forward_flops_per_token, 2 * 34464 + 2048);
  EXPECT_DOUBLE_EQ(e.backward_flops_per_token, 2 * (2 * 34464 + 2048));
  const double tokens = 8 * 16;
  EXPECT_DOUBLE_EQ(e.model_flops_per_step, 3 * (2 * 34464 + 2048) * tokens);
  // strata train's MFU counts with count_model: the same figure.
  EXPECT_DOUBLE_EQ(e.model_flops_per_step, count_model(c.model).train_flops_per_token(16) * tokens);
  // Full recompute adds a forward without the head; selective only the attention core.
  Config full = c;
  full.train.recompute = "full";
  EXPECT_DOUBLE_EQ(estimate_run(full, test_hardware()).recompute_flops_per_token, 2 * 34464 + 2048 - 2 * 501 * 32);
  Config selective = c;
  selective.train.recompute = "selective";
  EXPECT_DOUBLE_EQ(estimate_run(selective, test_hardware()).recompute_flops_per_token, 2048);
}

// Strata's activations of one layer and micro-batch, counted by hand for the tiny Llama (fp32,
// micro-batch 2 x 16 tokens = 32 rows, d 32, 4 heads of 8, 2 kv heads, SwiGLU 64), from what
// model/block.h keeps: x and h 2 x 32 x 32, both norm outputs 2 x 32 x 32, q and the attention
// output 2 x 32 x 32, k and v 2 x 32 x 16, the FFN's gate, up and activation 3 x 32 x 64: 13,312
// floats = 53,248 bytes; plus f32 statistics: the log-sum-exp 32 x 4 and two RMSNorm rstd of 32:
// 768 bytes.
TEST(Estimate, ActivationsPerLayerMatchAHandCount) {
  Config c = tiny_llama();
  EXPECT_DOUBLE_EQ(estimate_run(c, test_hardware()).memory.activations_per_layer, 53248 + 768);
  c.train.recompute = "selective";  // drops the attention output and its log-sum-exp
  EXPECT_DOUBLE_EQ(estimate_run(c, test_hardware()).memory.activations_per_layer, 53248 + 768 - 4096 - 512);
  c.train.recompute = "full";  // the block input only
  EXPECT_DOUBLE_EQ(estimate_run(c, test_hardware()).memory.activations_per_layer, 4096);
  // tp2 with sequence-parallel norms: x and h keep 16 rows, the norm outputs all 32; heads, kv
  // heads and the FFN halve: 1024 + 2048 + 2 x 512 + 512 + 3 x 32 x 32 = 7680 floats; statistics
  // 32 x 2 + 2 x 16 floats.
  c.train.recompute = "none";
  c.parallel.tp = 2;
  c.parallel.tp_sequence_parallel = true;
  EXPECT_DOUBLE_EQ(estimate_run(c, test_hardware()).memory.activations_per_layer, 7680 * 4 + 256 + 128);
  // Ring attention over sp2: each rank holds half of every sequence.
  c.parallel.tp = 1;
  c.parallel.tp_sequence_parallel = false;
  c.parallel.sp = 2;
  EXPECT_DOUBLE_EQ(estimate_run(c, test_hardware()).memory.activations_per_layer, (53248 + 768) / 2);
}

// The parameters one rank holds, as estimated, equal those of the model built with that layout.
TEST(Estimate, ParametersPerRankMatchTheBuiltModel) {
  for (const std::string arch : {"llama", "gpt2"}) {
    Config c = tiny_llama();
    if (arch == "gpt2") {
      for (const char* o : {"model.arch=gpt2", "model.norm=layernorm", "model.activation=gelu",
                            "model.position=learned", "model.tie_embeddings=true", "model.bias=true",
                            "model.n_kv_heads=4"})
        apply_override(c, o);
    }
    for (int64_t tp : {1, 2, 4}) {
      Config layout = c;
      layout.parallel.tp = tp;
      const Estimate e = estimate_run(layout, test_hardware());
      Transformer model(c.model, DType::f32, TensorParallel{nullptr, 0, static_cast<int>(tp)});
      EXPECT_EQ(e.params_per_rank, model.params().local_numel()) << arch << " tp " << tp;
    }
    // Two pipeline stages: the estimate reports the rank whose memory is largest (the tied
    // GPT-2's last stage holds a mirror of the token table) and its parameters, and each stage's
    // global parameters add up to the model's (the mirror counted once).
    Config layout = c;
    layout.model.n_layers = 4;
    layout.parallel.pp = 2;
    const Estimate e = estimate_run(layout, test_hardware());
    Transformer model(layout.model, DType::f32, {}, pipeline_chunks(4, 2, 1, e.fullest_stage, {}));
    EXPECT_EQ(e.params_per_rank, model.params().local_numel()) << arch << " pp 2";
    EXPECT_EQ(e.params_by_stage[0] + e.params_by_stage[1], count_model(layout.model).params) << arch;
  }
}

// Model states per rank follow docs/zero.md (the forms the trainer's allocator is tested against).
TEST(Estimate, ModelStatesFollowTheZeroForms) {
  Config c = tiny_llama();
  c.parallel.dp = 4;
  const double psi = static_cast<double>(estimate_run(c, test_hardware()).params_per_rank);
  struct Case {
    int zero;
    const char* precision;
    double params, grads, optimizer;
  };
  const Case cases[] = {{0, "fp32", 4, 4, 8},         {1, "fp32", 4, 4, 2},
                        {2, "fp32", 4, 1, 2},         {3, "fp32", 1, 1, 2},
                        {0, "bf16", 2, 6, 12},        {3, "bf16", 0.5, 1, 3}};
  for (const Case& k : cases) {
    Config layout = c;
    layout.parallel.zero = k.zero;
    layout.train.precision = k.precision;
    const MemoryBreakdown m = estimate_run(layout, test_hardware()).memory;
    EXPECT_DOUBLE_EQ(m.params, k.params * psi) << k.zero << k.precision;
    EXPECT_DOUBLE_EQ(m.grads, k.grads * psi) << k.zero << k.precision;
    EXPECT_DOUBLE_EQ(m.optimizer, k.optimizer * psi) << k.zero << k.precision;
  }
  Config offload = c;
  offload.parallel.zero = 3;
  offload.parallel.offload.optimizer = offload.parallel.offload.params = true;
  const MemoryBreakdown m = estimate_run(offload, test_hardware()).memory;
  EXPECT_EQ(m.params + m.grads + m.optimizer, 0);
  EXPECT_DOUBLE_EQ(m.offloaded, (4 + 4 + 12) * psi / 4);  // docs/zero.md's offload form, fp32
}

// 1F1B holds pp micro-batches on the first stage, GPipe all of them.
TEST(Estimate, PipelineMicroBatchesHeld) {
  Config c = tiny_llama();
  c.model.n_layers = 4;
  c.parallel.pp = 2;
  c.train.micro_batch = 1;  // 8 micro-batches
  EXPECT_DOUBLE_EQ(estimate_run(c, test_hardware()).memory.microbatches_held, 2);
  c.parallel.pp_schedule = "gpipe";
  EXPECT_DOUBLE_EQ(estimate_run(c, test_hardware()).memory.microbatches_held, 8);
  EXPECT_DOUBLE_EQ(estimate_run(c, test_hardware()).bubble, 1.0 / 8);
}

TEST(Estimate, SearchListsFittingLayoutsFastestFirst) {
  Config c = tiny_llama();
  const auto found = search_layouts(c, test_hardware(), 8);
  ASSERT_FALSE(found.empty());
  for (size_t i = 0; i < found.size(); ++i) {
    const ParallelConfig& p = found[i].config.parallel;
    EXPECT_EQ(p.dp * p.tp * p.pp * p.sp, 8);
    EXPECT_TRUE(found[i].estimate.fits);
    if (i > 0) {
      EXPECT_LE(found[i - 1].estimate.step_s, found[i].estimate.step_s);
    }
  }
  // Too little memory for anything: nothing fits.
  Hardware tiny = test_hardware();
  tiny.memory_bytes = 1e3;
  EXPECT_TRUE(search_layouts(c, tiny, 8).empty());
}

TEST(Estimate, RefusesABadHardwareFile) {
  const auto dir = std::filesystem::temp_directory_path() / "strata_estimate_test";
  std::filesystem::create_directories(dir);
  const std::string good = "name: x\npeak_flops_bf16: 1e12\npeak_flops_fp32: 1e11\nmemory_gb: 80\n"
                           "memory_bandwidth_gbs: 1000\nintra_node_bandwidth_gbs: 100\n"
                           "inter_node_bandwidth_gbs: 10\ndevices_per_node: 8\nflops_efficiency: 0.5\n";
  struct Case {
    std::string text, expected;
  };
  const Case cases[] = {
      {good.substr(0, good.find("memory_gb")) + good.substr(good.find("memory_bandwidth")),
       "lacks the field 'memory_gb'"},
      {good.substr(0, good.find("flops_efficiency")) + "flops_efficiency: 1.5\n",
       "field 'flops_efficiency' must be in (0, 1]"},
      {"name: x\npeak_flops_bf16: fast\n", "field 'peak_flops_bf16' is not a number"},
      {"[1, 2]", "is not a YAML map"},
  };
  for (const Case& c : cases) {
    const auto path = dir / "hw.yaml";
    std::ofstream(path) << c.text;
    try {
      load_hardware(path.string());
      ADD_FAILURE() << "accepted: " << c.text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.expected), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    }
  }
  std::ofstream(dir / "hw.yaml") << good;
  EXPECT_NO_THROW(load_hardware((dir / "hw.yaml").string()));
  std::filesystem::remove_all(dir);
}

TEST(Estimate, ShippedHardwareFilesLoad) {
  for (const char* name : {"a100", "h100", "h200", "cpu"})
    EXPECT_NO_THROW(load_hardware(std::string(STRATA_SOURCE_DIR) + "/configs/hardware/" + name + ".yaml")) << name;
}
