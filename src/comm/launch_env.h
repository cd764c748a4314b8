// Who am I before MPI_Init: rank, local rank and sizes as the launcher exported them, so a process
// can pick its GPU (local_rank) before MPI or NCCL touch the device.
//
// Launchers, in the order they are asked (the one closest to the process first: under `mpirun`
// inside a Slurm allocation both OpenMPI's and Slurm's variables are set, and Slurm's describe the
// mpirun step, not this process):
//   openmpi  OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
//   pmi      PMI_RANK, PMI_SIZE (MPICH/Hydra, Intel MPI); local from MPI_LOCALRANKID,
//   MPI_LOCALNRANKS pmix     PMIX_RANK; the sizes and local rank from Slurm's variables (srun
//   --mpi=pmix) slurm    SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; local size from
//   SLURM_TASKS_PER_NODE
//            ("2(x3),1") at SLURM_NODEID
// No launcher: one process, rank 0 of 1. A launcher that names a rank but not the local rank is
// taken as a single node (local_rank = rank, local_size = world_size), and `note` says so.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace strata {

struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  std::string launcher = "none";  // "openmpi", "pmi", "pmix", "slurm", "none"
  std::string note;               // set when a value was assumed rather than read

  // "rank 3 of 8 (local 1 of 4, from openmpi)"
  std::string describe() const;
};

// Looks a variable up: its value, or nothing when unset. Tests pass a map; the process passes
// getenv.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// Throws an Error naming the variable and its text when a value is not an integer or out of range
// (rank >= size, local_rank >= local_size).
LaunchEnv read_launch_env(const EnvLookup& lookup);
// From this process's environment.
LaunchEnv read_launch_env();

}  // namespace strata
