// strata: one executable for every command. Only subcommands that work are listed.
#include <CLI/CLI.hpp>
#include <mpi.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "comm/launch_env.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "core/log.h"

int main(int argc, char** argv) {
  CLI::App app{"Strata: train decoder-only language models on one GPU or thousands"};
  app.set_version_flag("--version", std::string("strata ") + STRATA_VERSION);
  app.require_subcommand(0, 1);
  const std::vector<strata::cli::Command> commands = {
      strata::cli::add_train(app), strata::cli::add_tokenize(app), strata::cli::add_config(app),
      strata::cli::add_estimate(app), strata::cli::add_convert(app), strata::cli::add_generate(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version come this way too (exit code 0): CLI11 prints them. A misuse gets one
    // line, as every other error does.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "strata: error: %s (see strata --help)\n", e.what());
    return e.get_exit_code();
  }
  try {
    // Log lines carry the rank once there is more than one; info comes from rank 0 only.
    const strata::LaunchEnv env = strata::read_launch_env();
    strata::log::configure({env.rank, env.world_size, strata::log::Level::info, false, ""});
    for (const auto& c : commands)
      if (c.app->parsed()) return c.run();
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {
    // One line that says what is wrong; the run's files are left as they were.
    const strata::log::Options where = strata::log::current();
    int mpi_running = 0, mpi_done = 0;
    MPI_Initialized(&mpi_running);
    MPI_Finalized(&mpi_done);
    // A multi-rank job: this rank's error stops every rank, so none waits forever on it.
    if (mpi_running && !mpi_done) strata::abort_all_ranks(e.what());
    if (where.world > 1)
      std::fprintf(stderr, "strata: error (rank %d of %d): %s\n", where.rank, where.world, e.what());
    else
      std::fprintf(stderr, "strata: error: %s\n", e.what());
    return 1;
  }
}
