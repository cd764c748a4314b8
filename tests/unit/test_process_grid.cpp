// The process grid as arithmetic: group membership against tables written by hand, neighbours,
// and the messages for impossible layouts. No processes are started.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "comm/process_grid.h"
#include "core/error.h"

using namespace strata;

namespace {

using Members = std::vector<std::vector<int>>;  // entry r: the group of world rank r

// One row of a hand table: for a layout and an axis, every rank's group.
struct GroupTable {
  Axis axis;
  Members per_rank;
};

void expect_groups(int world, GridSizes sizes, const std::vector<GroupTable>& table) {
  for (const GroupTable& row : table) {
    ASSERT_EQ(static_cast<int>(row.per_rank.size()), world);
    for (int r = 0; r < world; ++r) {
      ProcessGrid grid(world, r, sizes);
      const Group& g = grid.group(row.axis);
      const std::vector<int>& want = row.per_rank[static_cast<size_t>(r)];
      EXPECT_EQ(g.ranks, want) << sizes.describe() << ", axis " << axis_name(row.axis) << ", rank "
                               << r;
      const auto at = std::find(want.begin(), want.end(), r);
      EXPECT_EQ(g.index, static_cast<int>(at - want.begin()))
          << sizes.describe() << ", axis " << axis_name(row.axis) << ", rank " << r;
    }
  }
}

const Members kSingletons4 = {{0}, {1}, {2}, {3}};

std::string error_of(int world, int rank, GridSizes sizes) {
  try {
    ProcessGrid grid(world, rank, sizes);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

// rank = dp_i * 2 + tp_i
TEST(ProcessGrid, Dp2Tp2) {
  expect_groups(4, {.dp = 2, .tp = 2},
                {{Axis::tp, {{0, 1}, {0, 1}, {2, 3}, {2, 3}}},
                 {Axis::dp, {{0, 2}, {1, 3}, {0, 2}, {1, 3}}},
                 {Axis::sp, kSingletons4},
                 {Axis::pp, kSingletons4},
                 {Axis::dp_sp, {{0, 2}, {1, 3}, {0, 2}, {1, 3}}},
                 {Axis::ep, kSingletons4},
                 {Axis::ep_dp, {{0, 2}, {1, 3}, {0, 2}, {1, 3}}}});
}

// rank = pp_i * 2 + tp_i
TEST(ProcessGrid, Pp2Tp2) {
  expect_groups(4, {.pp = 2, .tp = 2},
                {{Axis::tp, {{0, 1}, {0, 1}, {2, 3}, {2, 3}}},
                 {Axis::pp, {{0, 2}, {1, 3}, {0, 2}, {1, 3}}},
                 {Axis::dp, kSingletons4},
                 {Axis::sp, kSingletons4},
                 {Axis::dp_sp, kSingletons4},
                 {Axis::ep, kSingletons4},
                 {Axis::ep_dp, kSingletons4}});
}

// rank = dp_i * 2 + sp_i
TEST(ProcessGrid, Dp2Sp2) {
  const Members all = {{0, 1, 2, 3}, {0, 1, 2, 3}, {0, 1, 2, 3}, {0, 1, 2, 3}};
  expect_groups(4, {.dp = 2, .sp = 2},
                {{Axis::sp, {{0, 1}, {0, 1}, {2, 3}, {2, 3}}},
                 {Axis::dp, {{0, 2}, {1, 3}, {0, 2}, {1, 3}}},
                 {Axis::tp, kSingletons4},
                 {Axis::pp, kSingletons4},
                 {Axis::dp_sp, all},
                 {Axis::ep, kSingletons4},
                 {Axis::ep_dp, all}});
}

// rank = pp_i * 2 + dp_i; ep=2 takes both dp ranks of a stage, so each expert shard is held once
// per stage and ep_dp is a singleton.
TEST(ProcessGrid, Pp2Dp2Ep2) {
  expect_groups(4, {.dp = 2, .pp = 2, .ep = 2},
                {{Axis::dp, {{0, 1}, {0, 1}, {2, 3}, {2, 3}}},
                 {Axis::pp, {{0, 2}, {1, 3}, {0, 2}, {1, 3}}},
                 {Axis::tp, kSingletons4},
                 {Axis::sp, kSingletons4},
                 {Axis::dp_sp, {{0, 1}, {0, 1}, {2, 3}, {2, 3}}},
                 {Axis::ep, {{0, 1}, {0, 1}, {2, 3}, {2, 3}}},
                 {Axis::ep_dp, kSingletons4}});
}

// dp2 x pp2 x sp2 x tp2, world 16: rank = ((pp*2 + dp)*2 + sp)*2 + tp, i.e. the bits pp dp sp tp.
TEST(ProcessGrid, SixteenRanksSpotChecks) {
  const GridSizes sizes{.dp = 2, .pp = 2, .sp = 2, .tp = 2, .ep = 2};
  // Rank 13 = 0b1101: pp 1, dp 1, sp 0, tp 1; its index in dp_sp is j = dp*2 + sp = 2.
  ProcessGrid g13(16, 13, sizes);
  EXPECT_EQ(g13.group(Axis::tp).ranks, (std::vector<int>{12, 13}));
  EXPECT_EQ(g13.group(Axis::sp).ranks, (std::vector<int>{13, 15}));
  EXPECT_EQ(g13.group(Axis::dp).ranks, (std::vector<int>{9, 13}));
  EXPECT_EQ(g13.group(Axis::pp).ranks, (std::vector<int>{5, 13}));
  EXPECT_EQ(g13.group(Axis::dp_sp).ranks, (std::vector<int>{9, 11, 13, 15}));
  EXPECT_EQ(g13.group(Axis::ep).ranks, (std::vector<int>{13, 15}));    // j in {2, 3}
  EXPECT_EQ(g13.group(Axis::ep_dp).ranks, (std::vector<int>{9, 13}));  // j in {0, 2}
  EXPECT_EQ(g13.coordinate(Axis::tp), 1);
  EXPECT_EQ(g13.coordinate(Axis::sp), 0);
  EXPECT_EQ(g13.coordinate(Axis::dp), 1);
  EXPECT_EQ(g13.coordinate(Axis::pp), 1);
  EXPECT_EQ(g13.coordinate(Axis::dp_sp), 2);
  EXPECT_EQ(g13.rank_at(1, 1, 0, 1), 13);

  // Rank 6 = 0b0110: pp 0, dp 1, sp 1, tp 0; j = 3.
  ProcessGrid g6(16, 6, sizes);
  EXPECT_EQ(g6.group(Axis::tp).ranks, (std::vector<int>{6, 7}));
  EXPECT_EQ(g6.group(Axis::sp).ranks, (std::vector<int>{4, 6}));
  EXPECT_EQ(g6.group(Axis::dp).ranks, (std::vector<int>{2, 6}));
  EXPECT_EQ(g6.group(Axis::pp).ranks, (std::vector<int>{6, 14}));
  EXPECT_EQ(g6.group(Axis::dp_sp).ranks, (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(g6.group(Axis::ep).ranks, (std::vector<int>{4, 6}));     // j in {2, 3}
  EXPECT_EQ(g6.group(Axis::ep_dp).ranks, (std::vector<int>{2, 6}));  // j in {1, 3}

  // ep = dp*sp: one expert group per tp/pp position, every shard held once.
  ProcessGrid ep4(16, 6, {.dp = 2, .pp = 2, .sp = 2, .tp = 2, .ep = 4});
  EXPECT_EQ(ep4.group(Axis::ep).ranks, (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(ep4.group(Axis::ep).index, 3);
  EXPECT_EQ(ep4.group(Axis::ep_dp).ranks, (std::vector<int>{6}));
}

TEST(ProcessGrid, Neighbours) {
  // pp2 x tp2: stage 0 has only a next stage, stage 1 only a previous one.
  ProcessGrid r0(4, 0, {.pp = 2, .tp = 2});
  EXPECT_EQ(r0.pp_neighbours().prev, -1);
  EXPECT_EQ(r0.pp_neighbours().prev_world, -1);
  EXPECT_EQ(r0.pp_neighbours().next, 1);
  EXPECT_EQ(r0.pp_neighbours().next_world, 2);
  ProcessGrid r3(4, 3, {.pp = 2, .tp = 2});
  EXPECT_EQ(r3.pp_neighbours().prev, 0);
  EXPECT_EQ(r3.pp_neighbours().prev_world, 1);
  EXPECT_EQ(r3.pp_neighbours().next, -1);

  // pp4: the middle stages have both.
  ProcessGrid mid(4, 2, {.pp = 4});
  EXPECT_EQ(mid.pp_neighbours().prev_world, 1);
  EXPECT_EQ(mid.pp_neighbours().next_world, 3);

  // sp4 x tp2 (world 8): rank 5 = sp 2, tp 1; the ring is 1, 3, 5, 7.
  ProcessGrid ring(8, 5, {.sp = 4, .tp = 2});
  EXPECT_EQ(ring.group(Axis::sp).ranks, (std::vector<int>{1, 3, 5, 7}));
  EXPECT_EQ(ring.sp_ring().prev, 1);
  EXPECT_EQ(ring.sp_ring().next, 3);
  EXPECT_EQ(ring.sp_ring().prev_world, 3);
  EXPECT_EQ(ring.sp_ring().next_world, 7);
  ProcessGrid wrap(8, 7, {.sp = 4, .tp = 2});
  EXPECT_EQ(wrap.sp_ring().next, 0);
  EXPECT_EQ(wrap.sp_ring().next_world, 1);

  // sp = 1: the ring is this rank alone.
  ProcessGrid alone(2, 1, {.dp = 2});
  EXPECT_EQ(alone.sp_ring().prev_world, 1);
  EXPECT_EQ(alone.sp_ring().next_world, 1);
}

// Every axis partitions the world: each rank is in exactly one group, and all members of a group
// compute the same member list.
TEST(ProcessGrid, GroupsPartitionTheWorld) {
  const std::vector<std::pair<int, GridSizes>> layouts = {
      {1, {}},
      {8, {.dp = 2, .pp = 2, .tp = 2}},
      {12, {.dp = 3, .sp = 2, .tp = 2, .ep = 3}},
      {16, {.dp = 2, .pp = 2, .sp = 2, .tp = 2, .ep = 2}},
      {24, {.dp = 4, .pp = 3, .sp = 2, .ep = 8}},
  };
  for (const auto& [world, sizes] : layouts) {
    std::vector<ProcessGrid> grids;
    for (int r = 0; r < world; ++r) grids.emplace_back(world, r, sizes);
    for (Axis axis : kAllAxes) {
      for (int r = 0; r < world; ++r) {
        const Group& g = grids[static_cast<size_t>(r)].group(axis);
        ASSERT_TRUE(std::is_sorted(g.ranks.begin(), g.ranks.end()));
        EXPECT_EQ(g.ranks[static_cast<size_t>(g.index)], r);
        for (int member : g.ranks) {
          EXPECT_EQ(grids[static_cast<size_t>(member)].group(axis).ranks, g.ranks)
              << sizes.describe() << " axis " << axis_name(axis) << " ranks " << r << ", "
              << member;
        }
      }
    }
    // Group sizes follow the sizes.
    const ProcessGrid& g0 = grids[0];
    EXPECT_EQ(g0.group(Axis::tp).size(), sizes.tp);
    EXPECT_EQ(g0.group(Axis::sp).size(), sizes.sp);
    EXPECT_EQ(g0.group(Axis::dp).size(), sizes.dp);
    EXPECT_EQ(g0.group(Axis::pp).size(), sizes.pp);
    EXPECT_EQ(g0.group(Axis::ep).size(), sizes.ep);
    EXPECT_EQ(g0.group(Axis::dp_sp).size(), sizes.dp * sizes.sp);
    EXPECT_EQ(g0.group(Axis::ep_dp).size(), sizes.dp * sizes.sp / sizes.ep);
  }
}

TEST(ProcessGrid, RejectsImpossibleLayouts) {
  auto expect_message = [](const std::string& got, const std::string& want) {
    EXPECT_NE(got.find(want), std::string::npos) << "message: " << got << "\nwanted: " << want;
  };
  expect_message(error_of(8, 0, {.dp = 2, .tp = 3}),
                 "dp*pp*sp*tp = 6 but 8 processes were launched");
  expect_message(error_of(4, 0, {.dp = 2, .sp = 2, .ep = 3}), "ep=3 does not divide dp*sp=4");
  expect_message(error_of(4, 0, {.dp = 4, .tp = 0}), "parallel sizes must be at least 1, got tp=0");
  expect_message(error_of(4, 0, {.dp = -1, .ep = 0}),
                 "parallel sizes must be at least 1, got dp=-1, ep=0");
  expect_message(error_of(4, 4, {.dp = 4}), "rank 4 is not in a world of 4 processes");
  expect_message(error_of(4, -1, {.dp = 4}), "rank -1 is not in a world of 4 processes");
  EXPECT_EQ(error_of(4, 3, {.dp = 4, .ep = 4}), "no error");
}

TEST(ProcessGrid, AxisNamesAndDescription) {
  std::vector<std::string> names;
  for (Axis axis : kAllAxes) names.emplace_back(axis_name(axis));
  EXPECT_EQ(names, (std::vector<std::string>{"tp", "sp", "dp", "pp", "ep", "dp_sp", "ep_dp"}));
  ProcessGrid grid(4, 3, {.dp = 2, .tp = 2});
  EXPECT_EQ(grid.describe(), "dp=2 pp=1 sp=1 tp=2 ep=1 (world 4), rank 3: tp 1, sp 0, dp 1, pp 0");
}
