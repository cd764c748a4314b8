#include "comm/process_grid.h"

#include "core/error.h"

namespace strata {

namespace {

struct Coordinates {
  int tp, sp, dp, pp;
  int j;  // index in the dp_sp group: dp * sp_size + sp
};

Coordinates coordinates_of(int rank, const GridSizes& s) {
  Coordinates c;
  c.tp = rank % s.tp;
  c.sp = (rank / s.tp) % s.sp;
  c.dp = (rank / (s.tp * s.sp)) % s.dp;
  c.pp = rank / (s.tp * s.sp * s.dp);
  c.j = c.dp * s.sp + c.sp;
  return c;
}

// Whether `b` is in `a`'s group on `axis`: they agree on every coordinate the axis does not span.
bool same_group(Axis axis, const Coordinates& a, const Coordinates& b, int ep) {
  switch (axis) {
    case Axis::tp:
      return a.pp == b.pp && a.dp == b.dp && a.sp == b.sp;
    case Axis::sp:
      return a.pp == b.pp && a.dp == b.dp && a.tp == b.tp;
    case Axis::dp:
      return a.pp == b.pp && a.sp == b.sp && a.tp == b.tp;
    case Axis::pp:
      return a.dp == b.dp && a.sp == b.sp && a.tp == b.tp;
    case Axis::dp_sp:
      return a.pp == b.pp && a.tp == b.tp;
    case Axis::ep:
      return a.pp == b.pp && a.tp == b.tp && a.j / ep == b.j / ep;
    case Axis::ep_dp:
      return a.pp == b.pp && a.tp == b.tp && a.j % ep == b.j % ep;
  }
  STRATA_FAIL("unknown axis code ", static_cast<int>(axis));
}

}  // namespace

std::string_view axis_name(Axis axis) {
  switch (axis) {
    case Axis::tp:
      return "tp";
    case Axis::sp:
      return "sp";
    case Axis::dp:
      return "dp";
    case Axis::pp:
      return "pp";
    case Axis::ep:
      return "ep";
    case Axis::dp_sp:
      return "dp_sp";
    case Axis::ep_dp:
      return "ep_dp";
  }
  STRATA_FAIL("unknown axis code ", static_cast<int>(axis));
}

std::string GridSizes::describe() const {
  return detail::concat("dp=", dp, " pp=", pp, " sp=", sp, " tp=", tp, " ep=", ep);
}

ProcessGrid::ProcessGrid(int world_size, int rank, GridSizes sizes)
    : world_size_(world_size), rank_(rank), sizes_(sizes) {
  std::string too_small;
  for (auto [name, value] :
       {std::pair{"dp", sizes.dp}, std::pair{"pp", sizes.pp}, std::pair{"sp", sizes.sp},
        std::pair{"tp", sizes.tp}, std::pair{"ep", sizes.ep}}) {
    if (value < 1) too_small += detail::concat(too_small.empty() ? "" : ", ", name, "=", value);
  }
  STRATA_CHECK(too_small.empty(), "parallel sizes must be at least 1, got ", too_small);
  const int64_t product = int64_t{sizes.dp} * sizes.pp * sizes.sp * sizes.tp;
  STRATA_CHECK(product == world_size, "dp*pp*sp*tp = ", product, " but ", world_size,
               " processes were launched (", sizes.describe(), ")");
  STRATA_CHECK((sizes.dp * sizes.sp) % sizes.ep == 0, "ep=", sizes.ep,
               " does not divide dp*sp=", sizes.dp * sizes.sp,
               " (experts are split across the dp x sp ranks of one tp/pp position)");
  STRATA_CHECK(rank >= 0 && rank < world_size, "rank ", rank, " is not in a world of ", world_size,
               " processes");

  const Coordinates mine = coordinates_of(rank, sizes);
  for (Axis axis : kAllAxes) {
    Group& g = groups_[static_cast<size_t>(axis)];
    for (int r = 0; r < world_size; ++r) {
      if (!same_group(axis, mine, coordinates_of(r, sizes), sizes.ep)) continue;
      if (r == rank) g.index = g.size();
      g.ranks.push_back(r);
    }
  }
}

int ProcessGrid::rank_at(int pp_i, int dp_i, int sp_i, int tp_i) const {
  const GridSizes& s = sizes_;
  STRATA_CHECK(pp_i >= 0 && pp_i < s.pp && dp_i >= 0 && dp_i < s.dp && sp_i >= 0 && sp_i < s.sp &&
                   tp_i >= 0 && tp_i < s.tp,
               "coordinates (pp ", pp_i, ", dp ", dp_i, ", sp ", sp_i, ", tp ", tp_i,
               ") are outside the grid ", s.describe());
  return ((pp_i * s.dp + dp_i) * s.sp + sp_i) * s.tp + tp_i;
}

Neighbours ProcessGrid::pp_neighbours() const {
  const Group& g = group(Axis::pp);
  Neighbours n;
  if (g.index > 0) n.prev = g.index - 1;
  if (g.index + 1 < g.size()) n.next = g.index + 1;
  if (n.prev >= 0) n.prev_world = g.ranks[static_cast<size_t>(n.prev)];
  if (n.next >= 0) n.next_world = g.ranks[static_cast<size_t>(n.next)];
  return n;
}

Neighbours ProcessGrid::sp_ring() const {
  const Group& g = group(Axis::sp);
  Neighbours n;
  n.prev = (g.index + g.size() - 1) % g.size();
  n.next = (g.index + 1) % g.size();
  n.prev_world = g.ranks[static_cast<size_t>(n.prev)];
  n.next_world = g.ranks[static_cast<size_t>(n.next)];
  return n;
}

std::string ProcessGrid::describe() const {
  return detail::concat(sizes_.describe(), " (world ", world_size_, "), rank ", rank_, ": tp ",
                        coordinate(Axis::tp), ", sp ", coordinate(Axis::sp), ", dp ",
                        coordinate(Axis::dp), ", pp ", coordinate(Axis::pp));
}

}  // namespace strata
