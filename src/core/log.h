// Rank-aware logging. Lines carry a "[rank r/world]" prefix once the world is known; info and debug
// go out from rank 0 only unless every rank is asked to speak; warnings and errors from every rank.
#pragma once

#include <string>

#include "core/error.h"

namespace strata::log {

enum class Level { debug, info, warn, error };

// Set once at start-up, after the rank is known (before that, lines carry no rank prefix).
struct Options {
  int rank = 0;
  int world = 1;
  Level level = Level::info;
  bool all_ranks = false;  // info/debug from every rank, not only rank 0
  // When set, every rank also appends each of its lines (all levels it keeps, info included) to
  // <rank_log_dir>/rank-<rank>.log.
  std::string rank_log_dir;
};
void configure(const Options& options);
Options current();

void write(Level level, const std::string& message);

template <typename... Args> void debug(Args&&... a) { write(Level::debug, detail::concat(a...)); }
template <typename... Args> void info(Args&&... a) { write(Level::info, detail::concat(a...)); }
template <typename... Args> void warn(Args&&... a) { write(Level::warn, detail::concat(a...)); }
template <typename... Args> void error(Args&&... a) { write(Level::error, detail::concat(a...)); }

}  // namespace strata::log
