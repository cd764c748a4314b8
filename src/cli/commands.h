// The subcommands of `strata`. Each adds itself to the app and returns the function that runs it
// once the command line has been parsed.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace strata::cli {

using Runner = std::function<int()>;

struct Command {
  CLI::App* app;
  Runner run;
};

Command add_config(CLI::App& app);
Command add_convert(CLI::App& app);
Command add_generate(CLI::App& app);
Command add_estimate(CLI::App& app);
Command add_train(CLI::App& app);
Command add_tokenize(CLI::App& app);

}  // namespace strata::cli
