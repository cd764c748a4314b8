// `strata estimate`: parameters, FLOPs, memory per rank and step time of the run a config
// describes, on the hardware a file describes (tools/estimate.h); or, with --search, the layouts
// of N ranks that fit, fastest first.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "io/config.h"
#include "tools/estimate.h"

namespace strata::cli {

namespace {

// A bare name ("h100") is configs/hardware/<name>.yaml, looked for under the working directory and
// then beside the executable's folder (a build folder inside the repository); anything else is a
// path.
std::string hardware_path(const std::string& name) {
  namespace fs = std::filesystem;
  if (name.find('/') != std::string::npos || name.ends_with(".yaml")) return name;
  const fs::path relative = fs::path("configs") / "hardware" / (name + ".yaml");
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  for (const fs::path& base : {fs::current_path(), ec ? fs::path() : exe.parent_path().parent_path()})
    if (!base.empty() && fs::exists(base / relative)) return (base / relative).string();
  throw Error("no hardware named '" + name + "': configs/hardware/" + name +
              ".yaml is not under the working directory or the executable's; give a file path");
}

}  // namespace

Command add_estimate(CLI::App& app) {
  struct Options {
    std::string config_path;
    std::vector<std::string> overrides;
    std::string hardware = "h100";
    bool json = false;
    bool search = false;
    int64_t world = 0;
    int64_t top = 10;
    double step_ms = 0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "estimate", "Estimate parameters, FLOPs, memory per rank and step time of a run, or search layouts");
  cmd->add_option("--config", o->config_path, "YAML config file (the one strata train reads)")->required();
  cmd->add_option("--set", o->overrides, "Override a key: key.path=value (repeatable)");
  cmd->add_option("--hardware", o->hardware,
                  "Hardware: a YAML file, or a name from configs/hardware (a100, h100, h200, cpu); "
                  "default h100");
  cmd->add_flag("--json", o->json, "Print JSON instead of a table");
  cmd->add_flag("--search", o->search, "List the layouts of --world ranks that fit, fastest first");
  cmd->add_option("--world", o->world, "Ranks to search layouts for");
  cmd->add_option("--top", o->top, "Layouts --search lists (default 10)");
  cmd->add_option("--step-ms", o->step_ms, "A measured step time: prints the MFU it implies");
  return {cmd, [o] {
            Config config = load_config(o->config_path, o->overrides);
            const Hardware hw = load_hardware(hardware_path(o->hardware));
            if (o->search) {
              STRATA_CHECK(o->world >= 1, "--search needs --world N (the ranks to lay out), got ", o->world);
              const auto found = search_layouts(config, hw, o->world);
              STRATA_CHECK(!found.empty(), "no layout of ", o->world, " ranks fits ", hw.name,
                           " for this config (try more ranks, offload, or a smaller micro-batch)");
              const size_t n = std::min(found.size(), static_cast<size_t>(std::max<int64_t>(1, o->top)));
              if (o->json) {
                std::string out = "[\n";
                for (size_t i = 0; i < n; ++i)
                  out += estimate_json(found[i].config, hw, found[i].estimate) + (i + 1 < n ? ",\n" : "\n");
                std::fputs((out + "]\n").c_str(), stdout);
                return 0;
              }
              std::printf("%zu layouts of %lld ranks fit %s; the fastest %zu:\n", found.size(),
                          static_cast<long long>(o->world), hw.name.c_str(), n);
              std::printf("%4s %4s %4s %4s %4s %5s %-10s %6s %12s %10s %7s\n", "dp", "tp", "pp", "sp", "ep",
                          "zero", "recompute", "micro", "memory GiB", "step s", "MFU");
              for (size_t i = 0; i < n; ++i) {
                const Config& c = found[i].config;
                const Estimate& e = found[i].estimate;
                std::printf("%4lld %4lld %4lld %4lld %4lld %5lld %-10s %6lld %12.2f %10.4g %6.1f%%\n",
                            static_cast<long long>(c.parallel.dp), static_cast<long long>(c.parallel.tp),
                            static_cast<long long>(c.parallel.pp), static_cast<long long>(c.parallel.sp),
                            static_cast<long long>(c.parallel.ep), static_cast<long long>(c.parallel.zero),
                            c.train.recompute.c_str(), static_cast<long long>(c.train.micro_batch),
                            e.memory.total() / (1024.0 * 1024.0 * 1024.0), e.step_s, 100 * e.mfu);
              }
              return 0;
            }
            const Estimate e = estimate_run(config, hw);
            std::fputs((o->json ? estimate_json(config, hw, e) + "\n" : format_estimate(config, hw, e)).c_str(),
                       stdout);
            if (o->step_ms > 0) {
              const double world = static_cast<double>(config.parallel.dp * config.parallel.tp *
                                                        config.parallel.pp * config.parallel.sp);
              const double peak = config.train.precision == "fp32" ? hw.peak_flops_fp32 : hw.peak_flops_bf16;
              std::printf("a step of %.4g ms is an MFU of %.2f%%\n", o->step_ms,
                          100 * e.model_flops_per_step / (o->step_ms / 1e3 * world * peak));
            }
            return 0;
          }};
}

}  // namespace strata::cli
