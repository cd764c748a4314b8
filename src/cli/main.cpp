// strata: one executable for every command. Only subcommands that work are listed.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/config.h"

namespace {

struct ConfigOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  bool reference = false;
};

// `strata config`: the resolved configuration (defaults, file, --set) as YAML, or the reference.
int run_config(const ConfigOptions& o) {
  if (o.reference) {
    std::fputs(strata::config_reference_markdown().c_str(), stdout);
    return 0;
  }
  strata::Config config = o.config_path.empty() ? strata::parse_config("", "defaults", o.overrides)
                                                : strata::load_config(o.config_path, o.overrides);
  std::fputs(strata::config_to_yaml(config).c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Strata: train decoder-only language models on one GPU or thousands"};
  app.set_version_flag("--version", std::string("strata ") + STRATA_VERSION);
  app.require_subcommand(0, 1);

  ConfigOptions config_options;
  CLI::App* config_cmd = app.add_subcommand(
      "config", "Print the resolved configuration (defaults, then --config, then --set) as YAML");
  config_cmd->add_option("--config", config_options.config_path, "YAML config file");
  config_cmd->add_option("--set", config_options.overrides, "Override a key: key.path=value")
      ->allow_extra_args(false);
  config_cmd->add_flag("--reference", config_options.reference,
                       "Print the reference of every key (docs/config.md) instead");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (config_cmd->parsed()) return run_config(config_options);
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata: error: %s\n", e.what());
    return 1;
  }
}
