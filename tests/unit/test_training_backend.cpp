// parallel.backend for a multi-rank run (train/trainer.h's training_backend): what auto picks,
// and the one-line refusals of nccl where it cannot run.
#include <gtest/gtest.h>

#include "core/cuda/cuda_allocator.h"
#include "train/trainer.h"
#include "unit/op_harness.h"

using namespace strata;

namespace {

Config with(const std::string& backend, const std::string& device) {
  Config c;
  c.parallel.backend = backend;
  c.train.device = device;
  return c;
}

LaunchEnv node_of(int ranks) {
  LaunchEnv env;
  env.world_size = env.local_size = ranks;
  return env;
}

TEST(TrainingBackend, MpiUnlessNcclCanCarryTheRun) {
  EXPECT_EQ(training_backend(with("mpi", "cuda"), node_of(2)).backend, Backend::mpi);
  EXPECT_EQ(training_backend(with("auto", "cpu"), node_of(2)).backend, Backend::mpi);
  EXPECT_EQ(training_backend(with("auto", "cpu"), node_of(2)).cuda_device, -1);
  // On this machine (no GPU, or more ranks than GPUs) auto stays on MPI for CUDA too.
  if (cuda_device_count() < 64) {
    EXPECT_EQ(training_backend(with("auto", "cuda"), node_of(64)).backend, Backend::mpi);
  }
}

TEST(TrainingBackend, RefusesNcclWhereItCannotRun) {
  strata::testing::expect_error([] { training_backend(with("nccl", "cpu"), node_of(2)); },
                                {"parallel.backend: nccl", "train.device: cuda", "'cpu'"});
  strata::testing::expect_error([] { training_backend(with("gloo", "cpu"), node_of(2)); },
                                {"parallel.backend", "'gloo'"});
  if (cuda_device_count() < 64) {
    strata::testing::expect_error([] { training_backend(with("nccl", "cuda"), node_of(64)); },
                                  {"parallel.backend: nccl", "64 ranks"});
  }
}

}  // namespace
