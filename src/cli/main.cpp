// strata: one executable for every command. Only subcommands that work are listed.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"Strata: train decoder-only language models on one GPU or thousands"};
  app.set_version_flag("--version", std::string("strata ") + STRATA_VERSION);
  app.require_subcommand(0, 1);
  const std::vector<strata::cli::Command> commands = {
      strata::cli::add_train(app), strata::cli::add_tokenize(app), strata::cli::add_config(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto& c : commands)
      if (c.app->parsed()) return c.run();
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {
    // One line that says what is wrong; the run's files are left as they were.
    std::fprintf(stderr, "strata: error: %s\n", e.what());
    return 1;
  }
}
