// strata: one executable for every command. Only subcommands that work are listed.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"Strata: train decoder-only language models on one GPU or thousands"};
  app.set_version_flag("--version", std::string("strata ") + STRATA_VERSION);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (app.get_subcommands().empty()) {
      std::fputs(app.help().c_str(), stdout);
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
