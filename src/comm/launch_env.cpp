#include "comm/launch_env.h"

#include <charconv>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace strata {

namespace {

std::optional<int> read_int(const EnvLookup& lookup, const std::string& name) {
  std::optional<std::string> text = lookup(name);
  if (!text) return std::nullopt;
  int value = 0;
  const char* end = text->data() + text->size();
  auto [ptr, ec] = std::from_chars(text->data(), end, value);
  STRATA_CHECK(ec == std::errc() && ptr == end && !text->empty(), "environment variable ", name,
               "='", *text, "' is not an integer");
  return value;
}

int require_int(const EnvLookup& lookup, const std::string& name, const std::string& launcher) {
  std::optional<int> value = read_int(lookup, name);
  STRATA_CHECK(value.has_value(), "the ", launcher, " launcher set a rank but not ", name);
  return *value;
}

// SLURM_TASKS_PER_NODE lists tasks per node with repeat counts: "4(x2),3" is nodes 0 and 1 with 4
// tasks each, node 2 with 3. Returns the entry for `node`.
int slurm_tasks_on_node(const std::string& spec, int node) {
  int index = 0;
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string_view item(spec.data() + pos,
                          (comma == std::string::npos ? spec.size() : comma) - pos);
    int tasks = 0, repeat = 1;
    size_t paren = item.find("(x");
    std::string_view tasks_text = item.substr(0, paren);
    auto r1 = std::from_chars(tasks_text.data(), tasks_text.data() + tasks_text.size(), tasks);
    bool ok = r1.ec == std::errc() && r1.ptr == tasks_text.data() + tasks_text.size();
    if (paren != std::string_view::npos) {
      std::string_view rep = item.substr(paren + 2);
      ok = ok && !rep.empty() && rep.back() == ')';
      if (ok) {
        rep.remove_suffix(1);
        auto r2 = std::from_chars(rep.data(), rep.data() + rep.size(), repeat);
        ok = r2.ec == std::errc() && r2.ptr == rep.data() + rep.size();
      }
    }
    STRATA_CHECK(ok && tasks > 0 && repeat > 0, "SLURM_TASKS_PER_NODE='", spec,
                 "' is not a list like '4(x2),3'");
    if (node < index + repeat) return tasks;
    index += repeat;
    pos = comma == std::string::npos ? spec.size() : comma + 1;
  }
  STRATA_FAIL("SLURM_TASKS_PER_NODE='", spec, "' lists ", index, " nodes, but SLURM_NODEID is ",
              node);
}

// Slurm's local rank and size, when Slurm set them.
bool read_slurm_local(const EnvLookup& lookup, LaunchEnv& env) {
  std::optional<int> local_id = read_int(lookup, "SLURM_LOCALID");
  if (!local_id) return false;
  env.local_rank = *local_id;
  std::optional<std::string> per_node = lookup("SLURM_TASKS_PER_NODE");
  STRATA_CHECK(per_node.has_value(), "SLURM_LOCALID is set but SLURM_TASKS_PER_NODE is not");
  env.local_size = slurm_tasks_on_node(*per_node, read_int(lookup, "SLURM_NODEID").value_or(0));
  return true;
}

void assume_single_node(LaunchEnv& env, const std::string& missing) {
  env.local_rank = env.rank;
  env.local_size = env.world_size;
  env.note = "the " + env.launcher + " launcher gave no local rank (" + missing +
             " unset): assumed a single node, local rank = rank";
}

void validate(const LaunchEnv& env) {
  STRATA_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "launcher ",
               env.launcher, " gave rank ", env.rank, " of world size ", env.world_size);
  STRATA_CHECK(env.local_size >= 1 && env.local_rank >= 0 && env.local_rank < env.local_size &&
                   env.local_size <= env.world_size,
               "launcher ", env.launcher, " gave local rank ", env.local_rank, " of local size ",
               env.local_size, " (world size ", env.world_size, ")");
}

}  // namespace

std::string LaunchEnv::describe() const {
  return detail::concat("rank ", rank, " of ", world_size, " (local ", local_rank, " of ",
                        local_size, ", from ", launcher, ")", note.empty() ? "" : "; ", note);
}

namespace {

// One launcher's variables, asked in table order (the launcher closest to the process first).
struct Source {
  const char* launcher;
  const char* rank;
  const char* size;        // nullptr: PMIx exports none; Slurm's (or PMI's) count is used
  const char* local_rank;  // nullptr: none of its own
  const char* local_size;
  bool slurm_local;  // fall back on Slurm's local rank (not under mpirun: Slurm's describe
                     // the mpirun step there)
};

constexpr Source kSources[] = {
    {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE", false},
    {"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", true},
    {"pmix", "PMIX_RANK", nullptr, nullptr, nullptr, true},
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS", nullptr, nullptr, true},
};

}  // namespace

LaunchEnv read_launch_env(const EnvLookup& lookup) {
  LaunchEnv env;
  for (const Source& source : kSources) {
    std::optional<int> rank = read_int(lookup, source.rank);
    if (!rank) continue;
    env.launcher = source.launcher;
    env.rank = *rank;
    if (source.size) {
      env.world_size = require_int(lookup, source.size, env.launcher);
    } else {
      std::optional<int> size = read_int(lookup, "SLURM_NTASKS");
      if (!size) size = read_int(lookup, "PMI_SIZE");
      STRATA_CHECK(size.has_value(), source.rank, " is set but neither SLURM_NTASKS nor PMI_SIZE ",
                   "gives the world size");
      env.world_size = *size;
    }
    std::optional<int> local_rank, local_size;
    if (source.local_rank) {
      local_rank = read_int(lookup, source.local_rank);
      local_size = read_int(lookup, source.local_size);
    }
    if (local_rank && local_size) {
      env.local_rank = *local_rank;
      env.local_size = *local_size;
    } else if (!(source.slurm_local && read_slurm_local(lookup, env))) {
      assume_single_node(env, source.local_rank
                                  ? detail::concat(source.local_rank, "/", source.local_size)
                                  : std::string("SLURM_LOCALID"));
    }
    break;
  }
  validate(env);
  return env;
}

LaunchEnv read_launch_env() {
  return read_launch_env([](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (!value) return std::nullopt;
    return std::string(value);
  });
}

}  // namespace strata
