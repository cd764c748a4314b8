#include "core/log.h"

#include <cstdio>
#include <filesystem>
#include <mutex>

namespace strata::log {
namespace {
// The log's settings are process-wide by nature (there is one stderr); they are written once at
// start-up and read under a mutex so lines from threads do not interleave.
std::mutex g_mutex;
Options g_options;
bool g_configured = false;
}  // namespace

std::FILE* g_rank_file = nullptr;

void configure(const Options& options) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_options = options;
  g_configured = true;
  if (g_rank_file) std::fclose(g_rank_file);
  g_rank_file = nullptr;
  if (!options.rank_log_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.rank_log_dir, ec);
    const std::string path = options.rank_log_dir + "/rank-" + std::to_string(options.rank) + ".log";
    g_rank_file = std::fopen(path.c_str(), "a");
    if (!g_rank_file) std::fprintf(stderr, "warning: cannot open the rank log '%s'\n", path.c_str());
  }
}

Options current() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_options;
}

void write(Level level, const std::string& message) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (level < g_options.level) return;
  const char* tag = level == Level::debug  ? "debug"
                    : level == Level::info ? "info"
                    : level == Level::warn ? "warning"
                                           : "error";
  if (g_rank_file) {
    std::fprintf(g_rank_file, "%s: %s\n", tag, message.c_str());
    std::fflush(g_rank_file);
  }
  if (level <= Level::info && g_options.rank != 0 && !g_options.all_ranks) return;
  if (g_configured && g_options.world > 1) {
    std::fprintf(stderr, "[rank %d/%d] %s: %s\n", g_options.rank, g_options.world, tag,
                 message.c_str());
  } else {
    std::fprintf(stderr, "%s: %s\n", tag, message.c_str());
  }
  std::fflush(stderr);
}

}  // namespace strata::log
