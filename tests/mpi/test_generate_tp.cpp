// Generation under tensor parallelism: two ranks holding half the heads, FFN and vocabulary each
// choose, greedily, exactly the tokens one process chooses; and their cached logits agree with
// one process's to 1e-5 relative.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>

#include "comm/process_groups.h"
#include "infer/generate.h"
#include "io/config.h"
#include "kernels/ops.h"

using namespace strata;

TEST(GenerateTensorParallel, GreedyTokensEqualOneProcess) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (world != 2) GTEST_SKIP() << "needs 2 ranks";
  ProcessGrid grid(2, rank, GridSizes{1, 1, 1, 2, 1});
  ProcessGroups groups(grid, Backend::mpi);
  for (const std::string arch : {"llama", "gpt2"}) {
    // 4 query heads over 2 kv heads (GPT-2: 4 and 4), vocabulary 501 (no multiple of tp).
    Config c = parse_config(R"(
model: { arch: llama, vocab_size: 501, n_layers: 2, d_model: 32, n_heads: 4, n_kv_heads: 2,
         d_ff: 64, max_seq_len: 32 }
train: { seq_len: 32 }
)",
                            "tp generate");
    if (arch == "gpt2")
      for (const char* o : {"model.arch=gpt2", "model.norm=layernorm", "model.activation=gelu",
                            "model.position=learned", "model.tie_embeddings=true", "model.bias=true",
                            "model.n_kv_heads=4"})
        apply_override(c, o);
    Transformer one(c.model, DType::f32);
    Transformer split(c.model, DType::f32, TensorParallel{&groups.tp(), grid.coordinate(Axis::tp), 2});
    one.params().initialize(5);  // initial values depend only on the seed and the global names
    split.params().initialize(5);
    GenerateOptions o;
    o.max_new_tokens = 12;
    const std::vector<std::vector<int32_t>> prompts = {{17, 250, 3, 499, 12}, {40, 41}};
    EXPECT_EQ(generate(split, prompts, o), generate(one, prompts, o)) << arch;
    // The prefill's logits, every row.
    KvCache a = one.make_kv_cache(1, 8), b = split.make_kv_cache(1, 8);
    const std::vector<CacheSegment> seg = {{0, 5, 0}};
    Tensor ids = Tensor::from_vector(prompts[0], {5});
    const Tensor la = one.forward_cached(ids, seg, a, false), lb = split.forward_cached(ids, seg, b, false);
    ASSERT_EQ(la.shape(), lb.shape());
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < la.numel(); ++i) {
      diff = std::max(diff, std::abs(double(la.data<float>()[i]) - lb.data<float>()[i]));
      scale = std::max(scale, std::abs(double(la.data<float>()[i])));
    }
    EXPECT_LE(diff / scale, 1e-5) << arch;
  }
}
