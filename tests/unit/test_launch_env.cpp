// Launcher environment parsing, on fake environments (the process's own is never touched).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "comm/launch_env.h"
#include "core/error.h"

using namespace strata;

namespace {

LaunchEnv read(const std::map<std::string, std::string>& vars) {
  return read_launch_env([&](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

std::string error_of(const std::map<std::string, std::string>& vars) {
  try {
    read(vars);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

void expect_env(const LaunchEnv& env, int rank, int world, int local_rank, int local_size,
                const std::string& launcher) {
  EXPECT_EQ(env.rank, rank) << env.describe();
  EXPECT_EQ(env.world_size, world) << env.describe();
  EXPECT_EQ(env.local_rank, local_rank) << env.describe();
  EXPECT_EQ(env.local_size, local_size) << env.describe();
  EXPECT_EQ(env.launcher, launcher) << env.describe();
}

}  // namespace

TEST(LaunchEnv, NoLauncherIsOneProcess) {
  LaunchEnv env = read({});
  expect_env(env, 0, 1, 0, 1, "none");
  EXPECT_TRUE(env.note.empty());
  EXPECT_EQ(env.describe(), "rank 0 of 1 (local 0 of 1, from none)");
}

TEST(LaunchEnv, OpenMpi) {
  expect_env(read({{"OMPI_COMM_WORLD_RANK", "5"},
                   {"OMPI_COMM_WORLD_SIZE", "8"},
                   {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}}),
             5, 8, 1, 4, "openmpi");
}

// mpirun inside a Slurm allocation: Slurm's variables describe the mpirun step, not this process.
TEST(LaunchEnv, OpenMpiWinsOverSlurm) {
  expect_env(read({{"OMPI_COMM_WORLD_RANK", "3"},
                   {"OMPI_COMM_WORLD_SIZE", "4"},
                   {"OMPI_COMM_WORLD_LOCAL_RANK", "3"},
                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                   {"SLURM_PROCID", "0"},
                   {"SLURM_NTASKS", "1"},
                   {"SLURM_LOCALID", "0"},
                   {"SLURM_TASKS_PER_NODE", "1"}}),
             3, 4, 3, 4, "openmpi");
}

TEST(LaunchEnv, PmiWithHydraLocalRank) {
  expect_env(read({{"PMI_RANK", "2"},
                   {"PMI_SIZE", "4"},
                   {"MPI_LOCALRANKID", "0"},
                   {"MPI_LOCALNRANKS", "2"}}),
             2, 4, 0, 2, "pmi");
}

TEST(LaunchEnv, PmixUnderSrun) {
  expect_env(read({{"PMIX_RANK", "6"},
                   {"SLURM_PROCID", "6"},
                   {"SLURM_NTASKS", "8"},
                   {"SLURM_LOCALID", "2"},
                   {"SLURM_NODEID", "1"},
                   {"SLURM_TASKS_PER_NODE", "4(x2)"}}),
             6, 8, 2, 4, "pmix");
}

TEST(LaunchEnv, SlurmTasksPerNodeWithRepeats) {
  // "4(x2),3": nodes 0 and 1 run 4 tasks, node 2 runs 3.
  auto on_node = [](const std::string& procid, const std::string& node) {
    return read({{"SLURM_PROCID", procid},
                 {"SLURM_NTASKS", "11"},
                 {"SLURM_LOCALID", "1"},
                 {"SLURM_NODEID", node},
                 {"SLURM_TASKS_PER_NODE", "4(x2),3"}});
  };
  expect_env(on_node("9", "2"), 9, 11, 1, 3, "slurm");
  expect_env(on_node("5", "1"), 5, 11, 1, 4, "slurm");
}

TEST(LaunchEnv, MissingLocalRankAssumesOneNodeAndSaysSo) {
  LaunchEnv env = read({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}});
  expect_env(env, 1, 2, 1, 2, "openmpi");
  EXPECT_NE(env.note.find("assumed a single node"), std::string::npos) << env.note;
}

TEST(LaunchEnv, BadValuesNameTheVariable) {
  auto expect_message = [](const std::string& got, const std::string& want) {
    EXPECT_NE(got.find(want), std::string::npos) << "message: " << got << "\nwanted: " << want;
  };
  expect_message(error_of({{"OMPI_COMM_WORLD_RANK", "one"}, {"OMPI_COMM_WORLD_SIZE", "2"}}),
                 "OMPI_COMM_WORLD_RANK='one' is not an integer");
  expect_message(error_of({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}}),
                 "launcher openmpi gave rank 2 of world size 2");
  expect_message(error_of({{"PMI_RANK", "0"}}), "the pmi launcher set a rank but not PMI_SIZE");
  expect_message(error_of({{"SLURM_PROCID", "0"},
                           {"SLURM_NTASKS", "2"},
                           {"SLURM_LOCALID", "0"},
                           {"SLURM_TASKS_PER_NODE", "2(x"}}),
                 "SLURM_TASKS_PER_NODE='2(x' is not a list");
  expect_message(error_of({{"PMIX_RANK", "0"}}), "PMIX_RANK is set but neither SLURM_NTASKS");
}
