// `strata train`: one process trains the configured model (multi-rank layouts are later issues).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "comm/launch_env.h"
#include "comm/mpi_session.h"
#include "comm/process_groups.h"
#include "core/log.h"
#include "io/config.h"
#include "train/trainer.h"

namespace strata::cli {

Command add_train(CLI::App& app) {
  struct Options {
    std::string config_path;
    std::vector<std::string> overrides;
    std::string resume;
    std::string init_from;
    std::string rank_logs;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("train", "Train a model from a YAML config");
  cmd->add_option("--config", o->config_path, "YAML config file")->required();
  cmd->add_option("--set", o->overrides, "Override a key: key.path=value (repeatable)");
  cmd->add_option("--resume", o->resume,
                  "'auto' (newest complete checkpoint in checkpoint.dir, if any) or a checkpoint folder");
  cmd->add_option("--rank-logs", o->rank_logs,
                  "Also write every rank's log lines (info included) to DIR/rank-N.log");
  cmd->add_option("--init-from", o->init_from,
                  "Start from a checkpoint's weights only (any layout; e.g. strata convert --from-hf)");
  return {cmd, [o] {
            if (!o->rank_logs.empty()) {
              log::Options logging = log::current();
              logging.rank_log_dir = o->rank_logs;
              log::configure(logging);
            }
            const Config config = load_config(o->config_path, o->overrides);
            TrainOptions options;
            options.resume = o->resume;
            options.init_from = o->init_from;
            // One process needs no MPI; under mpirun (or srun) every rank joins the grid.
            std::unique_ptr<MpiSession> mpi;
            std::unique_ptr<ProcessGrid> grid;
            std::unique_ptr<ProcessGroups> groups;
            if (read_launch_env().world_size > 1) {
              mpi = std::make_unique<MpiSession>(nullptr, nullptr);
              const ParallelConfig& p = config.parallel;
              grid = std::make_unique<ProcessGrid>(
                  mpi->world_size(), mpi->world_rank(),
                  GridSizes{static_cast<int>(p.dp), static_cast<int>(p.pp), static_cast<int>(p.sp),
                            static_cast<int>(p.tp), static_cast<int>(p.ep)});
              const TrainingBackend b = training_backend(config, read_launch_env());
              groups = std::make_unique<ProcessGroups>(*grid, b.backend, MPI_COMM_WORLD, b.cuda_device);
            }
            install_preemption_handlers();
            auto train = [&] {
              Trainer trainer(config, options, groups.get());
              const TrainSummary s = trainer.run();
              if (s.preempted) return 0;
              if (s.losses.empty()) {
                log::info("nothing to do: the run already stands at step ", s.last_step, " of ",
                          config.train.steps);
              } else {
                log::info("done: step ", s.last_step, ", loss ", s.losses.back(),
                          s.last_val_loss ? ", val_loss " + std::to_string(*s.last_val_loss) : "",
                          ", checkpoint ", s.last_checkpoint);
                char line[160];
                std::snprintf(line, sizeof(line), "%zu steps, %lld tokens in %.1f s (%.0f tokens/s)%s",
                              s.losses.size(), static_cast<long long>(s.tokens), s.seconds,
                              s.seconds > 0 ? static_cast<double>(s.tokens) / s.seconds : 0.0,
                              s.best_val_loss ? (", best val_loss " + std::to_string(*s.best_val_loss)).c_str() : "");
                log::info("this run: ", line);
              }
              return 0;
            };
            // Several ranks: an error on one stops them all (MPI_Abort) while MPI is still up,
            // so no rank waits forever in a collective for a peer that has gone.
            if (mpi) return run_or_abort(train);
            return train();
          }};
}

}  // namespace strata::cli
