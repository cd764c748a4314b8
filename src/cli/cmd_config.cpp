// `strata config`: the resolved configuration (defaults, then --config, then --set) as YAML, or the
// reference of every key.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "io/config.h"

namespace strata::cli {

Command add_config(CLI::App& app) {
  struct Options {
    std::string config_path;
    std::vector<std::string> overrides;
    bool reference = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "config", "Print the resolved configuration (defaults, then --config, then --set) as YAML");
  cmd->add_option("--config", o->config_path, "YAML config file");
  cmd->add_option("--set", o->overrides, "Override a key: key.path=value (repeatable)");
  cmd->add_flag("--reference", o->reference, "Print the reference of every key (docs/config.md)");
  return {cmd, [o] {
            if (o->reference) {
              std::fputs(config_reference_markdown().c_str(), stdout);
              return 0;
            }
            Config config = o->config_path.empty() ? parse_config("", "defaults", o->overrides)
                                                   : load_config(o->config_path, o->overrides);
            std::fputs(config_to_yaml(config).c_str(), stdout);
            return 0;
          }};
}

}  // namespace strata::cli
