// Checkpoints: round trip, the multi-rank write protocol (ranks as threads), resharding on load,
// and the errors for damaged or mismatched checkpoints.
#include <gtest/gtest.h>

#include <barrier>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/random.h"
#include "io/checkpoint.h"
#include "op_testing.h"

using namespace strata;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("strata_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

Tensor make(const Shape& shape, DType dtype, const std::string& name) {
  return strata::testing::random_tensor(shape, dtype, name);
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Runs `body(group)` on `world` threads that play ranks, with a real barrier and gather.
void run_ranks(int world, const std::function<void(const CheckpointGroup&)>& body) {
  std::barrier sync(world);
  std::mutex mutex;
  std::vector<std::string> gathered(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      CheckpointGroup g;
      g.rank = r;
      g.world = world;
      g.barrier = [&] { sync.arrive_and_wait(); };
      g.gather = [&, r](const std::string& s) {
        {
          std::lock_guard<std::mutex> lock(mutex);
          gathered[static_cast<size_t>(r)] = s;
        }
        sync.arrive_and_wait();
        std::vector<std::string> out = r == 0 ? gathered : std::vector<std::string>{};
        sync.arrive_and_wait();
        return out;
      };
      body(g);
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace

TEST(Checkpoint, RoundTripKeepsValuesDtypesAndManifest) {
  fs::path dir = fresh_dir("roundtrip");
  Tensor a = make({3, 5}, DType::f32, "a"), b = make({7}, DType::bf16, "b"),
         c = make({2, 2, 2}, DType::f64, "c");
  Manifest m;
  m.step = 42;
  m.config_yaml = "model:\n  n_layers: 2\n";
  m.layout = {{"world", 1}, {"dp", 1}};
  m.state = {{"data.position", "17"}, {"loss_scale", "65536"}};
  std::string path = save_checkpoint(dir.string(), m,
                                     {{"a", {3, 5}, {0, 0}, &a}, {"layers.0/b", {7}, {0}, &b},
                                      {"opt/c/exp_avg", {2, 2, 2}, {0, 0, 0}, &c}},
                                     CheckpointGroup{});
  EXPECT_EQ(fs::path(path).filename(), "step-000042");
  Manifest back = read_manifest(path);
  EXPECT_EQ(back.step, 42);
  EXPECT_EQ(back.config_yaml, m.config_yaml);
  EXPECT_EQ(back.layout, m.layout);
  EXPECT_EQ(back.state, m.state);
  ASSERT_EQ(back.files.size(), 1u);

  Tensor a2 = Tensor::zeros({3, 5}, DType::f32), b2 = Tensor::zeros({7}, DType::bf16),
         c2 = Tensor::zeros({2, 2, 2}, DType::f64), b_as_f32 = Tensor::zeros({7}, DType::f32);
  load_checkpoint(path, {{"a", {3, 5}, {0, 0}, &a2}, {"layers.0/b", {7}, {0}, &b2},
                         {"opt/c/exp_avg", {2, 2, 2}, {0, 0, 0}, &c2},
                         {"layers.0/b", {7}, {0}, &b_as_f32}});
  EXPECT_EQ(strata::testing::max_relative_error(a2, a), 0.0);
  EXPECT_EQ(strata::testing::max_relative_error(b2, b), 0.0);
  EXPECT_EQ(strata::testing::max_relative_error(c2, c), 0.0);
  EXPECT_EQ(strata::testing::max_relative_error(b_as_f32, b), 0.0);  // widened exactly
  fs::remove_all(dir);
}

TEST(Checkpoint, RanksWriteSlicesThatReadBackUnderAnotherSplit) {
  fs::path dir = fresh_dir("reshard");
  const Shape global{4, 6};
  Tensor whole = make(global, DType::f32, "w");
  // Written by 2 ranks, each holding 3 columns; a replicated tensor written by rank 0 only.
  Tensor norm = make({6}, DType::f32, "norm");
  std::string path;
  run_ranks(2, [&](const CheckpointGroup& g) {
    Tensor mine = whole.slice(1, 3 * g.rank, 3 * g.rank + 3).contiguous();
    Manifest m;
    m.step = 5;
    std::string p = save_checkpoint(dir.string(), m,
                                    {{"w", global, {0, 3 * g.rank}, &mine},
                                     {"norm", {6}, {0}, &norm, g.rank == 0}},
                                    g);
    if (g.rank == 0) path = p;
  });
  EXPECT_EQ(read_manifest(path).files.size(), 2u);
  EXPECT_FALSE(fs::exists(dir / ".step-000005.partial"));
  // Read back split 4 ways by rows, and whole.
  for (int64_t r = 0; r < 4; ++r) {
    Tensor row = Tensor::zeros({1, 6}, DType::f32);
    load_checkpoint(path, {{"w", global, {r, 0}, &row}});
    EXPECT_EQ(strata::testing::max_relative_error(row, whole.slice(0, r, r + 1).contiguous()), 0.0);
  }
  Tensor all = Tensor::zeros(global, DType::f32), norm2 = Tensor::zeros({6}, DType::f32);
  load_checkpoint(path, {{"w", global, {0, 0}, &all}, {"norm", {6}, {0}, &norm2}});
  EXPECT_EQ(strata::testing::max_relative_error(all, whole), 0.0);
  EXPECT_EQ(strata::testing::max_relative_error(norm2, norm), 0.0);
  fs::remove_all(dir);
}

TEST(Checkpoint, DamageAndMismatchGetClearErrors) {
  fs::path dir = fresh_dir("damage");
  Tensor a = make({8, 8}, DType::f32, "a");
  std::string path = save_checkpoint(dir.string(), Manifest{}, {{"a", {8, 8}, {0, 0}, &a}}, {});
  Tensor wrong = Tensor::zeros({8, 4}, DType::f32);
  std::string m = message_of([&] { load_checkpoint(path, {{"a", {8, 4}, {0, 0}, &wrong}}); });
  EXPECT_NE(m.find("tensor 'a' has global shape [8, 8] but the model expects [8, 4]"),
            std::string::npos) << m;
  m = message_of([&] { load_checkpoint(path, {{"b", {8, 4}, {0, 0}, &wrong}}); });
  EXPECT_NE(m.find("has no tensor 'b'"), std::string::npos) << m;

  // Flip one byte: the checksum catches it. Truncate: the size catches it.
  const fs::path file = fs::path(path) / "rank-00000.h5";
  const auto bytes = fs::file_size(file);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(bytes - 10));
    char x = 0;
    f.read(&x, 1);
    f.seekp(static_cast<std::streamoff>(bytes - 10));
    x = static_cast<char>(x ^ 0x5a);
    f.write(&x, 1);
  }
  m = message_of([&] { read_manifest(path); });
  EXPECT_NE(m.find("does not match its checksum"), std::string::npos) << m;
  fs::resize_file(file, bytes / 2);
  m = message_of([&] { read_manifest(path); });
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  m = message_of([&] { read_manifest((dir / "nowhere").string()); });
  EXPECT_NE(m.find("has no manifest.yaml"), std::string::npos) << m;
  fs::remove_all(dir);
}

TEST(Checkpoint, LatestIgnoresPartialFoldersAndPruneKeepsTheNewest) {
  fs::path dir = fresh_dir("latest");
  Tensor a = make({2}, DType::f32, "a");
  for (int64_t step : {10, 20, 30}) {
    Manifest m;
    m.step = step;
    save_checkpoint(dir.string(), m, {{"a", {2}, {0}, &a}}, {});
  }
  fs::create_directories(dir / ".step-000040.partial");  // a crash mid-write
  fs::create_directories(dir / "step-000050");           // no manifest: incomplete
  EXPECT_EQ(fs::path(*latest_checkpoint(dir.string())).filename(), "step-000030");
  prune_checkpoints(dir.string(), 2);
  EXPECT_FALSE(fs::exists(dir / "step-000010"));
  EXPECT_TRUE(fs::exists(dir / "step-000020"));
  EXPECT_TRUE(fs::exists(dir / "step-000030"));
  EXPECT_FALSE(latest_checkpoint((dir / "empty").string()).has_value());
  fs::remove_all(dir);
}
