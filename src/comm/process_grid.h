// The process grid, as pure arithmetic (STYLE habit 12): from the world size, this rank and the
// parallel sizes, which ranks form each group, this rank's place in them, and its neighbours. No
// MPI here; ProcessGroups (process_groups.h) turns the groups into Communicators.
//
// Rank order, tp fastest, then sp, dp, pp (tensor-parallel peers are neighbours, so they share a
// node):
//     rank = ((pp_i * dp + dp_i) * sp + sp_i) * tp + tp_i
//
// Groups (each lists its member world ranks in ascending order; a rank's index in that list is its
// rank in the group's Communicator, and for tp, sp, dp, pp it equals the rank's coordinate):
//   tp     same pp, dp, sp                tensor parallel
//   sp     same pp, dp, tp                sequence (context) parallel ring
//   dp     same pp, sp, tp                data parallel
//   pp     same dp, sp, tp                pipeline stages, in stage order
//   dp_sp  same pp, tp                    the dp x sp ranks that average (dense) gradients
//   ep     same pp, tp, same block        expert parallel: the dp_sp group, in its order
//                                         (j = dp_i * sp + sp_i), cut into consecutive blocks of
//                                         ep ranks; ep must divide dp * sp
//   ep_dp  same pp, tp, same j mod ep     the ranks holding the same expert shard (one per ep
//                                         block), over which expert gradients are averaged
// Consecutive blocks keep an ep group inside as few dp replicas as possible (with ep <= sp it lies
// within one sp ring), so tokens exchanged by all-to-all travel between close ranks.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace strata {

enum class Axis : uint8_t { tp, sp, dp, pp, ep, dp_sp, ep_dp };
inline constexpr std::array<Axis, 7> kAllAxes = {Axis::tp, Axis::sp,    Axis::dp,   Axis::pp,
                                                 Axis::ep, Axis::dp_sp, Axis::ep_dp};
std::string_view axis_name(Axis axis);  // "tp", ..., "dp_sp", "ep_dp": also the group's name

struct GridSizes {
  int dp = 1;
  int pp = 1;
  int sp = 1;
  int tp = 1;
  int ep = 1;
  std::string describe() const;  // "dp=2 pp=1 sp=1 tp=2 ep=1"
  bool operator==(const GridSizes&) const = default;
};

struct Group {
  std::vector<int> ranks;  // member world ranks, ascending
  int index = 0;           // this rank's position in `ranks`
  int size() const { return static_cast<int>(ranks.size()); }
};

// Neighbours on an axis, as ranks in that axis's group (prev, next) and as world ranks; -1 where
// there is none.
struct Neighbours {
  int prev = -1;
  int next = -1;
  int prev_world = -1;
  int next_world = -1;
};

class ProcessGrid {
 public:
  // Throws an Error when the layout is impossible: a size below 1, dp*pp*sp*tp != world_size,
  // ep not dividing dp*sp, rank outside the world.
  ProcessGrid(int world_size, int rank, GridSizes sizes);

  int world_size() const { return world_size_; }
  int rank() const { return rank_; }
  const GridSizes& sizes() const { return sizes_; }

  // This rank's coordinate on tp, sp, dp, pp, and its index in the ep, dp_sp, ep_dp groups.
  int coordinate(Axis axis) const { return group(axis).index; }
  const Group& group(Axis axis) const { return groups_[static_cast<size_t>(axis)]; }
  // The world rank at the given coordinates.
  int rank_at(int pp_i, int dp_i, int sp_i, int tp_i) const;

  Neighbours pp_neighbours()
      const;                   // previous and next stage; none before the first, after the last
  Neighbours sp_ring() const;  // the ring wraps: with sp = 1 both are this rank itself

  std::string describe()
      const;  // "dp=2 pp=1 sp=1 tp=2 ep=1 (world 4), rank 3: tp 1, sp 0, dp 1, pp 0"

 private:
  int world_size_;
  int rank_;
  GridSizes sizes_;
  std::array<Group, kAllAxes.size()> groups_;
};

}  // namespace strata
