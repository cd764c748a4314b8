// `strata train`: one process trains the configured model (multi-rank layouts are later issues).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/log.h"
#include "io/config.h"
#include "train/trainer.h"

namespace strata::cli {

Command add_train(CLI::App& app) {
  struct Options {
    std::string config_path;
    std::vector<std::string> overrides;
    std::string resume;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("train", "Train a model from a YAML config");
  cmd->add_option("--config", o->config_path, "YAML config file")->required();
  cmd->add_option("--set", o->overrides, "Override a key: key.path=value (repeatable)");
  cmd->add_option("--resume", o->resume,
                  "'auto' (newest complete checkpoint in checkpoint.dir, if any) or a checkpoint folder");
  return {cmd, [o] {
            const Config config = load_config(o->config_path, o->overrides);
            TrainOptions options;
            options.resume = o->resume;
            Trainer trainer(config, options);
            const TrainSummary s = trainer.run();
            if (s.losses.empty()) {
              log::info("nothing to do: the run already stands at step ", s.last_step, " of ",
                        config.train.steps);
            } else {
              log::info("done: step ", s.last_step, ", loss ", s.losses.back(),
                        s.last_val_loss ? ", val_loss " + std::to_string(*s.last_val_loss) : "",
                        ", checkpoint ", s.last_checkpoint);
            }
            return 0;
          }};
}

}  // namespace strata::cli
