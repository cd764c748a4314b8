#include "collective_checks.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/philox.h"

namespace strata::testing {

namespace {
Communicator* g_world = nullptr;  // test-process state only: set by the test main

// Integers in [-range, range] from the element's Philox words.
int64_t centred(uint64_t bits, int64_t range) {
  return static_cast<int64_t>(bits % static_cast<uint64_t>(2 * range + 1)) - range;
}

template <typename T>
void fill_as(Tensor& t, const std::vector<double>& values) {
  T* p = t.data<T>();
  for (size_t i = 0; i < values.size(); ++i) {
    if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
      p[i] = T::from_float(static_cast<float>(values[i]));
    } else {
      p[i] = static_cast<T>(values[i]);
    }
  }
}

template <typename T>
double value_at(const Tensor& t, int64_t i) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
    return t.data<T>()[i].to_float();
  } else {
    return static_cast<double>(t.data<T>()[i]);
  }
}

}  // namespace

Communicator& world() {
  STRATA_CHECK(g_world != nullptr, "the test main did not set the world communicator");
  return *g_world;
}
void set_world(Communicator* comm) {
  g_world = comm;
}

double input_value(DType dtype, uint64_t seed, uint64_t stream, int64_t index, int group_size) {
  const philox::Block b = philox::words(seed, stream, static_cast<uint64_t>(index));
  const uint64_t bits = (static_cast<uint64_t>(b.v[1]) << 32) | b.v[0];
  const int64_t p = group_size;
  // Each range keeps |sum over p ranks| within the dtype's exact integers (times a power of two).
  switch (dtype) {
    case DType::f64:
      return static_cast<double>(centred(bits, (int64_t{1} << 50) / p)) / 1024.0;
    case DType::f32:
      return static_cast<double>(centred(bits, (int64_t{1} << 23) / p)) / 256.0;
    case DType::bf16:
      return static_cast<double>(centred(bits, std::max<int64_t>(1, 256 / p))) / 16.0;
    case DType::f16:
      return static_cast<double>(centred(bits, std::max<int64_t>(1, 2048 / p))) / 64.0;
    case DType::i32:
      return static_cast<double>(centred(bits, (int64_t{1} << 30) / p));
    case DType::i64:
      return static_cast<double>(centred(bits, (int64_t{1} << 50) / p));
    case DType::u16:
      return static_cast<double>(bits % static_cast<uint64_t>(65535 / p + 1));
  }
  STRATA_FAIL("unknown dtype");
}

double round_to(DType dtype, double value) {
  switch (dtype) {
    case DType::f32:
      return static_cast<float>(value);
    case DType::bf16:
      return bf16::from_float(static_cast<float>(value)).to_float();
    case DType::f16:
      return f16::from_float(static_cast<float>(value)).to_float();
    default:
      return value;
  }
}

double reduce_expected(DType dtype, ReduceOp op, const std::vector<double>& per_rank) {
  if (op == ReduceOp::max) return *std::max_element(per_rank.begin(), per_rank.end());
  double sum = 0;
  for (double v : per_rank) sum += v;  // exact: the inputs are scaled for it
  if (op == ReduceOp::sum) return round_to(dtype, sum);
  const int p = static_cast<int>(per_rank.size());
  // avg: the sum divided in f32 (f64 for f64), rounded once to the dtype.
  if (dtype == DType::f64) return sum / p;
  return round_to(dtype, static_cast<double>(static_cast<float>(sum) / static_cast<float>(p)));
}

Tensor make_tensor(const std::vector<double>& values, DType dtype, Allocator& allocator) {
  Tensor cpu = Tensor::empty({static_cast<int64_t>(values.size())}, dtype);
  switch (dtype) {
    case DType::f32:
      fill_as<float>(cpu, values);
      break;
    case DType::f64:
      fill_as<double>(cpu, values);
      break;
    case DType::bf16:
      fill_as<bf16>(cpu, values);
      break;
    case DType::f16:
      fill_as<f16>(cpu, values);
      break;
    case DType::i32:
      fill_as<int32_t>(cpu, values);
      break;
    case DType::i64:
      fill_as<int64_t>(cpu, values);
      break;
    case DType::u16:
      fill_as<uint16_t>(cpu, values);
      break;
  }
  if (allocator.device().is_cpu()) return cpu;
  Tensor t = Tensor::empty(cpu.shape(), dtype, allocator);
  t.copy_from(cpu);
  return t;
}

std::vector<double> read_values(const Tensor& t) {
  Tensor cpu = t.to_cpu();
  std::vector<double> out(static_cast<size_t>(cpu.numel()));
  for (int64_t i = 0; i < cpu.numel(); ++i) {
    double v = 0;
    switch (cpu.dtype()) {
      case DType::f32:
        v = value_at<float>(cpu, i);
        break;
      case DType::f64:
        v = value_at<double>(cpu, i);
        break;
      case DType::bf16:
        v = value_at<bf16>(cpu, i);
        break;
      case DType::f16:
        v = value_at<f16>(cpu, i);
        break;
      case DType::i32:
        v = value_at<int32_t>(cpu, i);
        break;
      case DType::i64:
        v = value_at<int64_t>(cpu, i);
        break;
      case DType::u16:
        v = value_at<uint16_t>(cpu, i);
        break;
    }
    out[static_cast<size_t>(i)] = v;
  }
  return out;
}

void expect_values(const Tensor& got, const std::vector<double>& want, const std::string& what) {
  const std::vector<double> values = read_values(got);
  ASSERT_EQ(values.size(), want.size()) << what;
  int64_t wrong = 0;
  std::ostringstream first;
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] == want[i]) continue;
    if (++wrong <= 5) first << "\n  [" << i << "] got " << values[i] << ", want " << want[i];
  }
  EXPECT_EQ(wrong, 0) << what << ": " << wrong << " of " << values.size()
                      << " elements wrong, first:" << first.str();
}

std::string case_name(const CollectiveCase& c) {
  std::ostringstream out;
  out << dtype_name(c.dtype) << "_" << reduce_op_name(c.op) << "_n" << c.n
      << (c.async ? "_async" : "") << (c.in_place ? "_inplace" : "");
  return out.str();
}

void PrintTo(const CollectiveCase& c, std::ostream* out) {
  *out << case_name(c);
}

void check_all_reduce(Communicator& comm, Allocator& allocator, const CollectiveCase& c,
                      uint64_t seed) {
  const int p = comm.size(), r = comm.rank();
  std::vector<double> mine(static_cast<size_t>(c.n)), want(static_cast<size_t>(c.n));
  std::vector<double> per_rank(static_cast<size_t>(p));
  for (int64_t i = 0; i < c.n; ++i) {
    for (int q = 0; q < p; ++q)
      per_rank[static_cast<size_t>(q)] = input_value(c.dtype, seed, static_cast<uint64_t>(q), i, p);
    mine[static_cast<size_t>(i)] = per_rank[static_cast<size_t>(r)];
    want[static_cast<size_t>(i)] = reduce_expected(c.dtype, c.op, per_rank);
  }
  Tensor x = make_tensor(mine, c.dtype, allocator);
  if (c.async) {
    CommHandle handle = comm.all_reduce_async(x, c.op);
    handle.wait();
    EXPECT_TRUE(handle.is_done());
  } else {
    comm.all_reduce(x, c.op);
  }
  expect_values(x, want, "all_reduce " + case_name(c) + " on " + comm.where());
}

void check_reduce_scatter(Communicator& comm, Allocator& allocator, const CollectiveCase& c,
                          uint64_t seed) {
  const int p = comm.size(), r = comm.rank();
  const int64_t total = c.n * p;
  std::vector<double> mine(static_cast<size_t>(total)), want(static_cast<size_t>(c.n));
  for (int64_t i = 0; i < total; ++i)
    mine[static_cast<size_t>(i)] = input_value(c.dtype, seed, static_cast<uint64_t>(r), i, p);
  std::vector<double> per_rank(static_cast<size_t>(p));
  for (int64_t i = 0; i < c.n; ++i) {
    for (int q = 0; q < p; ++q) {
      per_rank[static_cast<size_t>(q)] =
          input_value(c.dtype, seed, static_cast<uint64_t>(q), r * c.n + i, p);
    }
    want[static_cast<size_t>(i)] = reduce_expected(c.dtype, c.op, per_rank);
  }
  Tensor in = make_tensor(mine, c.dtype, allocator);
  Tensor out =
      c.in_place ? in.slice(0, r * c.n, (r + 1) * c.n) : Tensor::zeros({c.n}, c.dtype, allocator);
  if (c.async) {
    comm.reduce_scatter_async(in, out, c.op).wait();
  } else {
    comm.reduce_scatter(in, out, c.op);
  }
  expect_values(out, want, "reduce_scatter " + case_name(c) + " on " + comm.where());
}

void check_all_gather(Communicator& comm, Allocator& allocator, const CollectiveCase& c,
                      uint64_t seed) {
  const int p = comm.size(), r = comm.rank();
  std::vector<double> want(static_cast<size_t>(c.n * p));
  for (int q = 0; q < p; ++q) {
    for (int64_t i = 0; i < c.n; ++i) {
      want[static_cast<size_t>(q * c.n + i)] =
          input_value(c.dtype, seed, static_cast<uint64_t>(q), i, p);
    }
  }
  std::vector<double> mine(want.begin() + r * c.n, want.begin() + (r + 1) * c.n);
  Tensor in, out;
  if (c.in_place) {
    // Only this rank's slot holds data beforehand; the rest is zero until the gather fills it.
    std::vector<double> start(want.size(), 0.0);
    std::copy(mine.begin(), mine.end(), start.begin() + r * c.n);
    out = make_tensor(start, c.dtype, allocator);
    in = out.slice(0, r * c.n, (r + 1) * c.n);
  } else {
    in = make_tensor(mine, c.dtype, allocator);
    out = Tensor::zeros({c.n * p}, c.dtype, allocator);
  }
  if (c.async) {
    comm.all_gather_async(in, out).wait();
  } else {
    comm.all_gather(in, out);
  }
  expect_values(out, want, "all_gather " + case_name(c) + " on " + comm.where());
}

void check_broadcast(Communicator& comm, Allocator& allocator, const CollectiveCase& c, int root,
                     uint64_t seed) {
  const int p = comm.size(), r = comm.rank();
  std::vector<double> mine(static_cast<size_t>(c.n)), want(static_cast<size_t>(c.n));
  for (int64_t i = 0; i < c.n; ++i) {
    mine[static_cast<size_t>(i)] = input_value(c.dtype, seed, static_cast<uint64_t>(r), i, p);
    want[static_cast<size_t>(i)] = input_value(c.dtype, seed, static_cast<uint64_t>(root), i, p);
  }
  Tensor x = make_tensor(mine, c.dtype, allocator);
  if (c.async) {
    comm.broadcast_async(x, root).wait();
  } else {
    comm.broadcast(x, root);
  }
  expect_values(
      x, want,
      "broadcast from " + std::to_string(root) + " " + case_name(c) + " on " + comm.where());
}

void check_ring(Communicator& comm, Allocator& allocator, const CollectiveCase& c, bool use_handles,
                uint64_t seed) {
  const int p = comm.size(), r = comm.rank();
  const int next = (r + 1) % p, prev = (r + p - 1) % p;
  std::vector<double> mine(static_cast<size_t>(c.n)), want(static_cast<size_t>(c.n));
  for (int64_t i = 0; i < c.n; ++i) {
    mine[static_cast<size_t>(i)] = input_value(c.dtype, seed, static_cast<uint64_t>(r), i, p);
    want[static_cast<size_t>(i)] = input_value(c.dtype, seed, static_cast<uint64_t>(prev), i, p);
  }
  Tensor send = make_tensor(mine, c.dtype, allocator);
  Tensor recv = Tensor::zeros({c.n}, c.dtype, allocator);
  if (use_handles) {
    CommHandle receiving = comm.recv_async(recv, prev);
    CommHandle sending = comm.send_async(send, next);
    receiving.wait();
    sending.wait();
  } else if (c.async) {
    comm.send_recv_async(send, next, recv, prev).wait();
  } else {
    comm.send_recv(send, next, recv, prev);
  }
  expect_values(recv, want,
                std::string("ring ") + (use_handles ? "send_async/recv_async " : "send_recv ") +
                    case_name(c) + " on " + comm.where());
}

void check_all_to_all(Communicator& comm, Allocator& allocator, const CollectiveCase& c,
                      int64_t unit, uint64_t seed) {
  const int p = comm.size(), r = comm.rank();
  auto count = [&](int from, int to) {
    return static_cast<int64_t>((3 * from + 5 * to + static_cast<int>(seed % 7)) % 7) * unit;
  };
  auto stream = [&](int from, int to) { return static_cast<uint64_t>(from * p + to); };
  std::vector<int64_t> send_counts, recv_counts;
  std::vector<double> mine, want;
  for (int j = 0; j < p; ++j) {
    send_counts.push_back(count(r, j));
    recv_counts.push_back(count(j, r));
    for (int64_t t = 0; t < count(r, j); ++t)
      mine.push_back(input_value(c.dtype, seed, stream(r, j), t, p));
    for (int64_t t = 0; t < count(j, r); ++t)
      want.push_back(input_value(c.dtype, seed, stream(j, r), t, p));
  }
  Tensor in = make_tensor(mine, c.dtype, allocator);
  Tensor out = Tensor::zeros({static_cast<int64_t>(want.size())}, c.dtype, allocator);
  if (c.async) {
    comm.all_to_all_async(in, send_counts, out, recv_counts).wait();
  } else {
    comm.all_to_all(in, send_counts, out, recv_counts);
  }
  expect_values(
      out, want,
      "all_to_all unit " + std::to_string(unit) + " " + case_name(c) + " on " + comm.where());
}

void expect_contains(const std::string& message, const std::string& part) {
  EXPECT_NE(message.find(part), std::string::npos)
      << "the message\n  " << message << "\ndoes not contain\n  " << part;
}

}  // namespace strata::testing
