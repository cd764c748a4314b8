// Pipeline schedules checked by running them. A simulator plays every rank's action list against
// FIFO channels (source, destination, activation|gradient) with MPI's matching rule: posted
// receives on a channel match arriving messages in posting order, with no tags. Each match must
// deliver exactly the (micro-batch, chunk) the receive expected, which proves in-order matching is
// correct; no rank may get stuck, which proves the schedule deadlock-free. Then per rank: every
// micro-batch of every chunk forwarded and backwarded once, and the activations a rank holds.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <ostream>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.h"
#include "parallel/pipeline_schedule.h"

namespace strata {
// gtest prints actions by name in failure messages (found by ADL).
void PrintTo(const PipeAction& a, std::ostream* out) {
  *out << pipe_op_name(a.op) << "(mb " << a.microbatch << ", chunk " << a.chunk << ")";
}
}  // namespace strata

using namespace strata;

namespace {

std::string describe(const PipeAction& a) {
  return testing::PrintToString(a);
}

bool is_compute(PipeOp op) {
  return op == PipeOp::forward || op == PipeOp::backward;
}

// ---- the table of cases --------------------------------------------------------------------

struct Case {
  PipelineSchedule kind;
  bool forward_only;  // build_forward_only_schedule; `kind` unused
  PipelineShape shape;
};

std::string case_name(const Case& c) {
  const std::string kind = c.forward_only ? "forward_only" : pipeline_schedule_name(c.kind);
  return (kind == "1f1b" ? std::string("one_f_one_b") : kind) + "_pp" +
         std::to_string(c.shape.stages) + "_v" + std::to_string(c.shape.virtual_stages) + "_m" +
         std::to_string(c.shape.microbatches);
}
std::string param_name(const testing::TestParamInfo<Case>& info) {
  return case_name(info.param);
}
void PrintTo(const Case& c, std::ostream* out) {
  *out << case_name(c);
}

std::vector<int> distinct(std::vector<int> values) {
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  return values;
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (int p = 1; p <= 4; ++p) {
    const std::vector<int> ms =
        p == 1 ? std::vector<int>{1, 2, 4} : distinct({p, p + 1, 2 * p, 4 * p, 4 * p + 1});
    for (PipelineSchedule kind : {PipelineSchedule::gpipe, PipelineSchedule::one_f_one_b})
      for (int m : ms) cases.push_back({kind, false, {p, 1, m}});
    if (p > 1)
      for (int v : {2, 3})
        for (int m : {p, 2 * p, 4 * p})
          cases.push_back({PipelineSchedule::interleaved, false, {p, v, m}});
    for (int v : p == 1 ? std::vector<int>{1} : std::vector<int>{1, 2})
      for (int m : distinct({1, p, p + 1, 2 * p}))
        cases.push_back({PipelineSchedule::gpipe, true, {p, v, m}});
  }
  return cases;
}

std::vector<PipeAction> build(const Case& c, int rank) {
  return c.forward_only ? build_forward_only_schedule(c.shape, rank)
                        : build_pipeline_schedule(c.kind, c.shape, rank);
}

// ---- the simulator -------------------------------------------------------------------------

enum class Carries { activation, gradient };

struct Label {  // what a message carries: (micro-batch, the receiving rank's chunk)
  int microbatch, chunk;
  bool operator==(const Label&) const = default;
};

using ChannelKey = std::tuple<int, int, Carries>;  // (source rank, destination rank, kind)

struct Channel {
  std::deque<Label> messages;  // sent, not yet matched
  std::deque<int> posted;      // destination's receive ids, not yet matched, in posting order
};

struct Receive {
  PipeAction action;
  int computes_before;  // compute actions the rank had run when it posted this receive
  bool matched = false;
};

struct RankState {
  std::vector<PipeAction> actions;
  size_t next = 0;
  int computes_done = 0;
  std::vector<Receive> receives = {};
  std::map<std::tuple<PipeOp, int, int>, int> unconsumed = {};  // (recv op, mb, chunk) -> id
  std::set<std::tuple<PipeOp, int, int>> done = {};             // computes and sends already run
};

class Simulator {
 public:
  Simulator(const PipelineShape& shape, std::vector<std::vector<PipeAction>> lists)
      : p_(shape.stages), last_stage_(shape.stages * shape.virtual_stages - 1) {
    for (auto& list : lists) ranks_.push_back({.actions = std::move(list)});
  }

  // Runs every rank to the end; returns "" or the first problem found.
  std::string run() {
    for (;;) {
      bool progress = false, finished = true;
      for (int r = 0; r < p_; ++r) {
        while (problem_.empty() && step(r)) progress = true;
        if (!problem_.empty()) return problem_;
        finished = finished && rank(r).next == rank(r).actions.size();
      }
      if (finished) return leftovers();
      if (!progress) {
        std::string stuck = "deadlock:";
        for (int r = 0; r < p_; ++r)
          if (rank(r).next < rank(r).actions.size())
            stuck += " rank " + std::to_string(r) + " waits at " +
                     describe(rank(r).actions[rank(r).next]) + ";";
        return stuck;
      }
    }
  }

 private:
  RankState& rank(int r) { return ranks_[static_cast<size_t>(r)]; }

  // Runs rank r's next action; false when it is finished or blocked (or a problem was found).
  bool step(int r) {
    RankState& me = rank(r);
    if (me.next == me.actions.size()) return false;
    const PipeAction a = me.actions[me.next];
    const int stage = a.chunk * p_ + r;
    const std::string where = "rank " + std::to_string(r) + " " + describe(a) + ": ";
    const auto key = std::make_tuple(a.op, a.microbatch, a.chunk);
    switch (a.op) {
      case PipeOp::recv_forward:
      case PipeOp::recv_backward: {
        const bool fwd = a.op == PipeOp::recv_forward;
        if (fwd ? stage == 0 : stage == last_stage_) return fail(where + "no peer to receive from");
        if (me.unconsumed.contains(key)) return fail(where + "posted twice");
        const int peer = stage + (fwd ? -1 : 1);
        const int id = static_cast<int>(me.receives.size());
        me.receives.push_back({a, me.computes_done});
        me.unconsumed[key] = id;
        Channel& ch = channels_[{peer % p_, r, fwd ? Carries::activation : Carries::gradient}];
        ch.posted.push_back(id);
        match(ch, peer % p_, r);
        break;
      }
      case PipeOp::send_forward:
      case PipeOp::send_backward: {
        const bool fwd = a.op == PipeOp::send_forward;
        if (fwd ? stage == last_stage_ : stage == 0) return fail(where + "no peer to send to");
        const PipeOp producer = fwd ? PipeOp::forward : PipeOp::backward;
        if (!me.done.contains({producer, a.microbatch, a.chunk}))
          return fail(where + "sent before its compute ran");
        if (me.done.contains(key)) return fail(where + "sent twice");
        const int peer = stage + (fwd ? 1 : -1);
        Channel& ch = channels_[{r, peer % p_, fwd ? Carries::activation : Carries::gradient}];
        ch.messages.push_back({a.microbatch, peer / p_});
        match(ch, r, peer % p_);
        break;
      }
      case PipeOp::forward:
      case PipeOp::backward: {
        const bool fwd = a.op == PipeOp::forward;
        if (fwd ? stage > 0 : stage < last_stage_) {
          const auto want = std::make_tuple(fwd ? PipeOp::recv_forward : PipeOp::recv_backward,
                                            a.microbatch, a.chunk);
          const auto it = me.unconsumed.find(want);
          if (it == me.unconsumed.end()) return fail(where + "no receive posted for it");
          const Receive& rx = me.receives[static_cast<size_t>(it->second)];
          if (!rx.matched) return false;  // blocked until the message arrives
          // One compute ahead: posted before compute j-1 ran (before compute 0 for j = 0).
          if (rx.computes_before != std::max(me.computes_done - 1, 0))
            return fail(where + "its receive was posted after " +
                        std::to_string(rx.computes_before) + " computes, expected " +
                        std::to_string(std::max(me.computes_done - 1, 0)));
          me.unconsumed.erase(it);
        }
        if (me.done.contains(key)) return fail(where + "computed twice");
        ++me.computes_done;
        break;
      }
    }
    me.done.insert(key);
    ++me.next;
    return true;
  }

  // Pairs the channel's oldest message with its oldest posted receive, as MPI does.
  void match(Channel& ch, int source, int destination) {
    while (!ch.messages.empty() && !ch.posted.empty()) {
      Receive& rx = rank(destination).receives[static_cast<size_t>(ch.posted.front())];
      const Label got = ch.messages.front();
      if (!(got == Label{rx.action.microbatch, rx.action.chunk}))
        fail("rank " + std::to_string(destination) + " " + describe(rx.action) + " from rank " +
             std::to_string(source) + " matched the message for (mb " +
             std::to_string(got.microbatch) + ", chunk " + std::to_string(got.chunk) + ")");
      rx.matched = true;
      ch.messages.pop_front();
      ch.posted.pop_front();
    }
  }

  std::string leftovers() {
    for (const auto& [key, ch] : channels_)
      if (!ch.messages.empty() || !ch.posted.empty())
        return "channel " + std::to_string(std::get<0>(key)) + " -> " +
               std::to_string(std::get<1>(key)) + " ends with " +
               std::to_string(ch.messages.size()) + " unreceived messages and " +
               std::to_string(ch.posted.size()) + " unmatched receives";
    for (int r = 0; r < p_; ++r)
      if (!rank(r).unconsumed.empty())
        return "rank " + std::to_string(r) + " ends with receive " +
               describe(rank(r)
                            .receives[static_cast<size_t>(rank(r).unconsumed.begin()->second)]
                            .action) +
               " never used by a compute";
    return "";
  }

  bool fail(const std::string& what) {
    if (problem_.empty()) problem_ = what;
    return false;
  }

  int p_, last_stage_;
  std::vector<RankState> ranks_;
  std::map<ChannelKey, Channel> channels_;
  std::string problem_;
};

// ---- per-rank properties -------------------------------------------------------------------

// Interleaved warm-up forwards as Megatron-LM counts them (the bound the activation test uses).
int interleaved_warmup(const PipelineShape& s, int rank) {
  const int total = s.microbatches * s.virtual_stages;
  if (s.microbatches == s.stages) return total;
  return std::min((s.stages - rank - 1) * 2 + (s.virtual_stages - 1) * s.stages, total);
}

// The checks shared by training and forward-only schedules.
void expect_all_ranks_run_to_the_end(const Case& c) {
  std::vector<std::vector<PipeAction>> lists;
  for (int r = 0; r < c.shape.stages; ++r) lists.push_back(build(c, r));
  EXPECT_EQ(Simulator(c.shape, lists).run(), "");
}

void expect_each_computed_once_backward_after_forward(const Case& c) {
  for (int r = 0; r < c.shape.stages; ++r) {
    std::map<std::pair<int, int>, int> forward_at, backward_at;  // (mb, chunk) -> compute index
    int index = 0;
    for (const PipeAction& a : build(c, r)) {
      if (!is_compute(a.op)) continue;
      auto& seen = a.op == PipeOp::forward ? forward_at : backward_at;
      EXPECT_TRUE(seen.emplace(std::make_pair(a.microbatch, a.chunk), index++).second)
          << "rank " << r << " computes " << describe(a) << " twice";
    }
    const size_t all = static_cast<size_t>(c.shape.microbatches * c.shape.virtual_stages);
    for (int i = 0; i < c.shape.microbatches; ++i)
      for (int ch = 0; ch < c.shape.virtual_stages; ++ch)
        EXPECT_TRUE(forward_at.contains({i, ch})) << "rank " << r << " mb " << i << " chunk " << ch;
    EXPECT_EQ(forward_at.size(), all) << "rank " << r;
    EXPECT_EQ(backward_at.size(), c.forward_only ? 0 : all) << "rank " << r;
    for (const auto& [mb_chunk, at] : backward_at)
      EXPECT_GT(at, forward_at[mb_chunk]) << "rank " << r << " backward of mb " << mb_chunk.first
                                          << " chunk " << mb_chunk.second << " before its forward";
  }
}

class TrainingSchedule : public testing::TestWithParam<Case> {};
class ForwardOnlySchedule : public testing::TestWithParam<Case> {};

TEST_P(TrainingSchedule, AllRanksRunToTheEndAndEveryReceiveGetsItsMessage) {
  expect_all_ranks_run_to_the_end(GetParam());
}
TEST_P(ForwardOnlySchedule, AllRanksRunToTheEndAndEveryReceiveGetsItsMessage) {
  expect_all_ranks_run_to_the_end(GetParam());
}
TEST_P(TrainingSchedule, EachMicrobatchOfEachChunkComputedOnceBackwardAfterForward) {
  expect_each_computed_once_backward_after_forward(GetParam());
}
TEST_P(ForwardOnlySchedule, EachMicrobatchOfEachChunkForwardedOnce) {
  expect_each_computed_once_backward_after_forward(GetParam());
}

// Activations alive: +1 at forward(i, c), -1 at backward(i, c).
TEST_P(TrainingSchedule, ActivationsHeldStayWithinTheScheduleBound) {
  const Case& c = GetParam();
  const int p = c.shape.stages, m = c.shape.microbatches;
  for (int r = 0; r < p; ++r) {
    int alive = 0, peak = 0;
    for (const PipeAction& a : build(c, r)) {
      if (a.op == PipeOp::forward) peak = std::max(peak, ++alive);
      if (a.op == PipeOp::backward) --alive;
    }
    EXPECT_EQ(alive, 0) << "rank " << r;
    switch (c.kind) {
      case PipelineSchedule::gpipe:
        EXPECT_EQ(peak, m) << "rank " << r;
        break;
      case PipelineSchedule::one_f_one_b:
        EXPECT_EQ(peak, std::min(p - r, m)) << "rank " << r;  // the bound, and that it is reached
        break;
      case PipelineSchedule::interleaved:
        RecordProperty("peak_activations_rank_" + std::to_string(r), peak);
        EXPECT_LE(peak, interleaved_warmup(c.shape, r) + 1) << "rank " << r;
        EXPECT_LE(peak, m * c.shape.virtual_stages) << "rank " << r;
        break;
    }
  }
}

std::vector<Case> cases_where(bool forward_only) {
  std::vector<Case> out;
  for (const Case& c : all_cases())
    if (c.forward_only == forward_only) out.push_back(c);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, TrainingSchedule, testing::ValuesIn(cases_where(false)),
                         param_name);
INSTANTIATE_TEST_SUITE_P(Shapes, ForwardOnlySchedule, testing::ValuesIn(cases_where(true)),
                         param_name);

// ---- exact lists, names, refusals ----------------------------------------------------------

// 1f1b, pp = 2, 3 micro-batches. Rank 0 warms up with one forward; each receive sits one compute
// action ahead of the compute that needs it.
TEST(PipelineSchedule, OneFOneBTwoStagesThreeMicrobatchesByHand) {
  using enum PipeOp;
  const PipelineShape shape{.stages = 2, .virtual_stages = 1, .microbatches = 3};
  // A line per compute action: the receive posted ahead for the *next* compute, the compute, its
  // send; the receive of compute 0 comes first on a line of its own.
  // clang-format off
  const std::vector<PipeAction> rank0 = {
                             {forward, 0, 0},  {send_forward, 0, 0},
      {recv_backward, 0, 0}, {forward, 1, 0},  {send_forward, 1, 0},
                             {backward, 0, 0},
      {recv_backward, 1, 0}, {forward, 2, 0},  {send_forward, 2, 0},
      {recv_backward, 2, 0}, {backward, 1, 0},
                             {backward, 2, 0},
  };
  const std::vector<PipeAction> rank1 = {
      {recv_forward, 0, 0},
                             {forward, 0, 0},
      {recv_forward, 1, 0},  {backward, 0, 0}, {send_backward, 0, 0},
                             {forward, 1, 0},
      {recv_forward, 2, 0},  {backward, 1, 0}, {send_backward, 1, 0},
                             {forward, 2, 0},
                             {backward, 2, 0}, {send_backward, 2, 0},
  };
  // clang-format on
  EXPECT_EQ(build_pipeline_schedule(PipelineSchedule::one_f_one_b, shape, 0), rank0);
  EXPECT_EQ(build_pipeline_schedule(PipelineSchedule::one_f_one_b, shape, 1), rank1);
}

// Forward-only, pp = 2, 2 chunks, 2 micro-batches: micro-batch-major on both ranks; rank 0's chunk
// 1 (virtual stage 2) receives from rank 1's chunk 0, rank 1's chunk 1 is the last and sends
// nothing.
TEST(PipelineSchedule, ForwardOnlyTwoStagesTwoChunksByHand) {
  using enum PipeOp;
  const PipelineShape shape{.stages = 2, .virtual_stages = 2, .microbatches = 2};
  // A line per compute action: the receive posted ahead for the *next* compute, the compute, its
  // send; the receive of compute 0 comes first on a line of its own.
  // clang-format off
  const std::vector<PipeAction> rank0 = {
      {recv_forward, 0, 1}, {forward, 0, 0}, {send_forward, 0, 0},
                            {forward, 0, 1}, {send_forward, 0, 1},
      {recv_forward, 1, 1}, {forward, 1, 0}, {send_forward, 1, 0},
                            {forward, 1, 1}, {send_forward, 1, 1},
  };
  const std::vector<PipeAction> rank1 = {
      {recv_forward, 0, 0},
      {recv_forward, 0, 1}, {forward, 0, 0}, {send_forward, 0, 0},
      {recv_forward, 1, 0}, {forward, 0, 1},
      {recv_forward, 1, 1}, {forward, 1, 0}, {send_forward, 1, 0},
                            {forward, 1, 1},
  };
  // clang-format on
  EXPECT_EQ(build_forward_only_schedule(shape, 0), rank0);
  EXPECT_EQ(build_forward_only_schedule(shape, 1), rank1);
}

// Interleaved, pp = 2, 2 chunks, 4 micro-batches, rank 1: the compute order alone (Megatron-LM's
// chunk and micro-batch sequence, warm-up (v-1) p = 2 forwards on the last rank).
TEST(PipelineSchedule, InterleavedComputeOrderByHand) {
  using enum PipeOp;
  const PipelineShape shape{.stages = 2, .virtual_stages = 2, .microbatches = 4};
  const std::vector<PipeAction> want = {
      {forward, 0, 0}, {forward, 1, 0},  {forward, 0, 1},  {backward, 0, 1},
      {forward, 1, 1}, {backward, 1, 1}, {forward, 2, 0},  {backward, 0, 0},
      {forward, 3, 0}, {backward, 1, 0}, {forward, 2, 1},  {backward, 2, 1},
      {forward, 3, 1}, {backward, 3, 1}, {backward, 2, 0}, {backward, 3, 0},
  };
  std::vector<PipeAction> got;
  for (const PipeAction& a : build_pipeline_schedule(PipelineSchedule::interleaved, shape, 1))
    if (is_compute(a.op)) got.push_back(a);
  EXPECT_EQ(got, want);
}

// Forwards before the first backward, per rank, worked out by hand: Megatron-LM's warm-up
// 2 (p-s-1) + (v-1) p, plus the forward that opens the steady phase; every forward when there are
// only p micro-batches.
TEST(PipelineSchedule, InterleavedWarmupByHand) {
  struct Row {
    PipelineShape shape;
    std::vector<int> forwards_per_rank;
  };
  const std::vector<Row> table = {
      {{.stages = 4, .virtual_stages = 2, .microbatches = 8}, {11, 9, 7, 5}},
      {{.stages = 4, .virtual_stages = 2, .microbatches = 4}, {8, 8, 8, 8}},
      {{.stages = 3, .virtual_stages = 3, .microbatches = 6}, {11, 9, 7}},
      {{.stages = 3, .virtual_stages = 2, .microbatches = 3}, {6, 6, 6}},
      {{.stages = 2, .virtual_stages = 3, .microbatches = 4}, {7, 5}},
  };
  for (const Row& row : table)
    for (int r = 0; r < row.shape.stages; ++r) {
      int forwards = 0;
      for (const PipeAction& a :
           build_pipeline_schedule(PipelineSchedule::interleaved, row.shape, r)) {
        if (a.op == PipeOp::backward) break;
        forwards += a.op == PipeOp::forward;
      }
      EXPECT_EQ(forwards, row.forwards_per_rank[static_cast<size_t>(r)])
          << "pp " << row.shape.stages << ", v " << row.shape.virtual_stages << ", m "
          << row.shape.microbatches << ", rank " << r;
    }
}

TEST(PipelineSchedule, NamesRoundTripAndUnknownNameIsRefused) {
  for (PipelineSchedule kind :
       {PipelineSchedule::gpipe, PipelineSchedule::one_f_one_b, PipelineSchedule::interleaved})
    EXPECT_EQ(parse_pipeline_schedule(pipeline_schedule_name(kind)), kind);
  try {
    parse_pipeline_schedule("zero_bubble");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const char* part : {"parallel.pp_schedule", "'zero_bubble'", "gpipe, 1f1b, interleaved"})
      EXPECT_NE(what.find(part), std::string::npos) << what;
  }
  EXPECT_STREQ(pipe_op_name(PipeOp::recv_forward), "recv_forward");
  EXPECT_STREQ(pipe_op_name(PipeOp::send_backward), "send_backward");
}

struct Refusal {
  Case c;
  int rank;
  std::vector<std::string> message_has;  // the config key, and the values
};

TEST(PipelineSchedule, RefusesShapesItCannotRun) {
  using enum PipelineSchedule;
  const std::vector<Refusal> table = {
      {{gpipe, false, {4, 1, 2}}, 0, {"parallel.pp = 4", "got 2", "train.global_batch"}},
      {{one_f_one_b, false, {4, 1, 2}},
       0,
       {"parallel.pp_schedule 1f1b", "parallel.pp = 4", "got 2"}},
      {{interleaved, false, {4, 2, 2}}, 0, {"parallel.pp = 4", "got 2", "train.micro_batch"}},
      {{gpipe, false, {2, 2, 4}}, 0, {"parallel.virtual_stages", "got 2"}},
      {{one_f_one_b, false, {2, 2, 4}}, 0, {"parallel.virtual_stages", "got 2", "interleaved"}},
      {{interleaved, false, {2, 1, 4}}, 0, {"parallel.virtual_stages", "got 1"}},
      {{interleaved, false, {2, 2, 5}}, 0, {"multiple of parallel.pp = 2", "(5)", "parallel.dp"}},
      {{one_f_one_b, false, {0, 1, 4}}, 0, {"parallel.pp", "got 0"}},
      {{one_f_one_b, false, {2, 1, 4}}, 2, {"rank 2", "parallel.pp = 2"}},
      {{interleaved, false, {2, 2, 4}}, -1, {"rank -1", "parallel.pp = 2"}},
      {{gpipe, true, {0, 1, 4}}, 0, {"parallel.pp", "got 0"}},
      {{gpipe, true, {2, 0, 4}}, 0, {"parallel.virtual_stages", "got 0"}},
      {{gpipe, true, {2, 1, 0}}, 0, {"micro-batch", "got 0"}},
      {{gpipe, true, {2, 1, 4}}, 3, {"rank 3", "parallel.pp = 2"}},
  };
  for (const Refusal& row : table) {
    const std::string name = case_name(row.c) + " rank " + std::to_string(row.rank);
    try {
      build(row.c, row.rank);
      ADD_FAILURE() << name << ": no error";
    } catch (const Error& e) {
      const std::string what = e.what();
      for (const std::string& part : row.message_has)
        EXPECT_NE(what.find(part), std::string::npos)
            << name << ": '" << part << "' not in: " << what;
    }
  }
}

}  // namespace
