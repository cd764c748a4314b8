#include "train/metrics.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace strata {

MetricsLog::MetricsLog(const std::string& out_dir, bool append, int64_t first_step) {
  namespace fs = std::filesystem;
  fs::create_directories(out_dir);
  const fs::path path = fs::path(out_dir) / "metrics.jsonl";
  std::vector<std::string> kept;
  if (append && fs::exists(path)) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      try {
        if (nlohmann::json::parse(line).value("step", int64_t{0}) < first_step) kept.push_back(line);
      } catch (const nlohmann::json::exception&) {
        // A torn last line from a crash: dropped.
      }
    }
  }
  out_.open(path, std::ios::trunc);
  STRATA_CHECK(out_.good(), "cannot write metrics file '", path.string(), "'");
  for (const auto& line : kept) out_ << line << "\n";
  out_.flush();
  tty_ = ::isatty(STDERR_FILENO) != 0;
}

void MetricsLog::write(const StepMetrics& m) {
  nlohmann::json j = {{"step", m.step},           {"loss", m.loss},
                      {"lr", m.lr},               {"grad_norm", m.grad_norm},
                      {"tokens_per_s", m.tokens_per_s}, {"mfu", m.mfu},
                      {"step_ms", m.step_ms},     {"eta_s", m.eta_s},  {"memory_mb", m.memory_mb},
                      {"loss_scale", m.loss_scale}, {"skipped", m.skipped}};
  if (m.val_loss) j["val_loss"] = *m.val_loss;
  j["params_mb"] = m.params_mb;
  j["grads_mb"] = m.grads_mb;
  j["optimizer_mb"] = m.optimizer_mb;
  if (m.offload_mb > 0) j["offload_mb"] = m.offload_mb;
  j["peak_mb"] = m.peak_mb;
  if (m.comm_total_ms > 0) {
    j["comm_total_ms"] = m.comm_total_ms;
    j["comm_exposed_ms"] = m.comm_exposed_ms;
  }
  if (m.moe) j["aux_loss"] = m.aux_loss;
  if (!m.expert_load.empty()) {
    if (m.all_to_all_bytes > 0) j["all_to_all_bytes"] = m.all_to_all_bytes;
    nlohmann::json load = nlohmann::json::object(), drops = nlohmann::json::object();
    for (const auto& [layer, counts] : m.expert_load) load[std::to_string(layer)] = counts;
    for (const auto& [layer, rate] : m.drop_rate) drops[std::to_string(layer)] = rate;
    j["expert_load"] = load;
    j["expert_drop_rate"] = drops;
  }
  if (!m.pipeline_bubble.empty()) {
    double mean = 0;
    for (double b : m.pipeline_bubble) mean += b / static_cast<double>(m.pipeline_bubble.size());
    j["pipeline_bubble"] = mean;
    j["pipeline_bubble_by_stage"] = m.pipeline_bubble;
  }
  out_ << j.dump() << "\n";
  out_.flush();
}

void MetricsLog::show(const StepMetrics& m) {
  char line[256];
  std::snprintf(line, sizeof(line),
                "step %lld/%lld  loss %.4f  lr %.3e  grad_norm %.3f  %.0f tok/s  mfu %.1f%%  %.0f MiB%s",
                static_cast<long long>(m.step), static_cast<long long>(m.total_steps), m.loss, m.lr,
                m.grad_norm, m.tokens_per_s, 100.0 * m.mfu, m.memory_mb, m.skipped ? "  (skipped)" : "");
  std::string text = line;
  if (m.step < m.total_steps) {
    const auto eta = static_cast<long long>(m.eta_s + 0.5);
    if (eta >= 3600)
      std::snprintf(line, sizeof(line), "  ETA %lldh%02lldm", eta / 3600, eta % 3600 / 60);
    else
      std::snprintf(line, sizeof(line), "  ETA %lldm%02llds", eta / 60, eta % 60);
    text += line;
  }
  if (!m.pipeline_bubble.empty()) {
    text += "  bubble";
    for (double b : m.pipeline_bubble) {
      std::snprintf(line, sizeof(line), " %.0f%%", 100.0 * b);
      text += line;
    }
  }
  if (m.val_loss) {
    std::snprintf(line, sizeof(line), "  val_loss %.4f", *m.val_loss);
    text += line;
  }
  if (tty_ && !m.val_loss)
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
  else
    std::fprintf(stderr, "%s%s\n", tty_ ? "\r\033[K" : "", text.c_str());
  std::fflush(stderr);
}

void MetricsLog::finish_line() {
  if (tty_) std::fprintf(stderr, "\n");
}

double resident_memory_mb() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

}  // namespace strata
