// NCCL emulated over MPI for the simulated GPU (nccl.h): each process of an mpirun holds its own
// simulated GPU, and a communicator is an MPI communicator over its ranks.
//
// Streams. A real NCCL call queues a kernel on its stream that runs by itself once the stream gets
// there. Here each operation is two pieces of stream work:
//   - posting, when the call is made: the stream is run up to the call (so the inputs are what
//     the work queued before it, and the events it waits for, leave there), the inputs are copied
//     to host buffers and a nonblocking MPI operation is posted;
//   - completion, queued and run when the stream is synchronised (or an event after it is waited
//     for): the MPI operation is waited for and the outputs are written to device memory.
// So a rank never blocks at a call (posting does not wait for the peers, as a queued kernel does
// not), a missing event before a call reads stale inputs, and results land only when the stream
// runs, as on a GPU. Inside ncclGroupStart/End the calls post together at ncclGroupEnd, before
// any of them completes (a group's sends and receives pair up in any order). A send completes as
// soon as it has posted (its data is copied); its MPI request is left to the communicator, tested
// at later calls and waited for when it is destroyed. That is more permissive than NCCL, whose
// send waits for its receiver: the emulation can miss a deadlock of unmatched sends, never make
// one up.
//
// Reductions convert every element to f64 (integers to i64), reduce in MPI and round once to the
// type: exact where NCCL's f32/bf16/f16 sums are exact (the collective tests' values), within a
// rounding otherwise. Avg is the sum divided by the rank count.
//
// Bootstrap: ncclGetUniqueId writes the caller's world rank and a fresh tag; ncclCommInitRank's
// rank 0 (which must be that caller) collects every member's world rank over MPI_COMM_WORLD
// point-to-point messages with that tag, sends the list back, and the members make their
// communicator with MPI_Comm_create_group, which involves them alone.
#include <atomic>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mpi.h>
#include <nccl.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine.h"

struct Transfer;

struct ncclComm {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  // Set by ncclCommAbort, which may come from another thread (the watchdog's).
  std::atomic<bool> aborted{false};
  // Sends whose stream work is done (their data was copied when they posted) but whose MPI
  // request may still wait for the receiver: tested at every call, waited for at destroy.
  std::vector<std::shared_ptr<Transfer>> sending;
};

namespace {

using gpusim::Engine;
using gpusim::Op;

constexpr uint32_t kIdMagic = 0x4e43434c;  // "NCCL"
constexpr int kFirstBootstrapTag = 27000;

struct IdFields {
  uint32_t magic;
  int root;  // world rank of the id's maker
  int tag;
};

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
      return 8;
    default:
      return 0;
  }
}

bool is_floating(ncclDataType_t t) {
  return t == ncclFloat16 || t == ncclBfloat16 || t == ncclFloat32 || t == ncclFloat64;
}

double load_f(const void* p, ncclDataType_t t, size_t i) {
  switch (t) {
    case ncclFloat16:
      return __half2float(static_cast<const __half*>(p)[i]);
    case ncclBfloat16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ncclFloat32:
      return static_cast<const float*>(p)[i];
    default:
      return static_cast<const double*>(p)[i];
  }
}

void store_f(void* p, ncclDataType_t t, size_t i, double v) {
  switch (t) {
    case ncclFloat16:
      static_cast<__half*>(p)[i] = __float2half(static_cast<float>(v));
      break;
    case ncclBfloat16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(static_cast<float>(v));
      break;
    case ncclFloat32:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      break;
    default:
      static_cast<double*>(p)[i] = v;
  }
}

int64_t load_i(const void* p, ncclDataType_t t, size_t i) {
  switch (t) {
    case ncclInt8:
      return static_cast<const int8_t*>(p)[i];
    case ncclUint8:
      return static_cast<const uint8_t*>(p)[i];
    case ncclInt32:
      return static_cast<const int32_t*>(p)[i];
    case ncclUint32:
      return static_cast<const uint32_t*>(p)[i];
    default:
      return static_cast<const int64_t*>(p)[i];
  }
}

void store_i(void* p, ncclDataType_t t, size_t i, int64_t v) {
  switch (t) {
    case ncclInt8:
      static_cast<int8_t*>(p)[i] = static_cast<int8_t>(v);
      break;
    case ncclUint8:
      static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v);
      break;
    case ncclInt32:
      static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v);
      break;
    case ncclUint32:
      static_cast<uint32_t*>(p)[i] = static_cast<uint32_t>(v);
      break;
    default:
      static_cast<int64_t*>(p)[i] = v;
  }
}

std::string& last_error() {
  static std::string message;
  return message;
}

ncclResult_t complain(const char* call, const char* what, ncclResult_t rc = ncclInvalidArgument) {
  last_error() = std::string("gpusim nccl: ") + call + ": " + what;
  std::fprintf(stderr, "%s\n", last_error().c_str());
  return rc;
}

// Whether [p, p + bytes) lies in one live allocation of simulated device memory.
bool on_device(Engine& e, const void* p, size_t bytes) {
  return bytes == 0 || (e.memory.in_arena(p) && e.memory.find(p, bytes));
}

}  // namespace

// The host side of one operation, shared by its posting and its completion.
struct Transfer {
  std::vector<MPI_Request> requests;
  std::vector<char> in, out;  // bytes, or f64/i64 elements for reductions
};

namespace {

// One call: what it does when it posts and when its stream completes it. A send completes at
// once (its data is already copied) and leaves its request to the communicator.
struct Call {
  const char* name;
  ncclComm_t comm;
  cudaStream_t stream;
  std::function<void(Transfer&)> post, complete;
  bool is_send = false;
};

int group_depth = 0;
std::vector<Call> grouped;  // the calls of the open group, launched by its ncclGroupEnd

void reap(ncclComm& comm, bool wait) {
  auto& sending = comm.sending;
  for (size_t i = 0; i < sending.size();) {
    auto& r = sending[i]->requests;
    int done = 0;
    if (wait)
      MPI_Waitall(static_cast<int>(r.size()), r.data(), MPI_STATUSES_IGNORE), done = 1;
    else
      MPI_Testall(static_cast<int>(r.size()), r.data(), &done, MPI_STATUSES_IGNORE);
    if (done)
      sending.erase(sending.begin() + static_cast<std::ptrdiff_t>(i));
    else
      ++i;
  }
}

// Posts the calls as the file's opening comment says, all of them before any completes (a group
// posts its sends and receives together): each stream is run up to its last posting, then each
// call's completion is queued behind it.
ncclResult_t launch(std::vector<Call> calls) {
  Engine& engine = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(engine.mutex);
  if (engine.faulted()) return ncclUnhandledCudaError;
  std::vector<std::shared_ptr<gpusim::StreamState>> streams;
  std::vector<std::pair<gpusim::StreamState*, uint64_t>> last;  // stream, its last posting
  std::vector<std::shared_ptr<Transfer>> transfers;
  for (Call& c : calls) {
    if (!c.comm) return complain(c.name, "no communicator");
    if (c.comm->aborted) return complain(c.name, "the communicator was aborted", ncclInvalidUsage);
    auto s = engine.stream(c.stream);
    if (!s) return complain(c.name, "not a stream");
    reap(*c.comm, false);
    auto transfer = std::make_shared<Transfer>();
    Op posting;
    posting.kind = Op::Kind::device;
    posting.run = [transfer, post = c.post] { post(*transfer); };
    const uint64_t seq = engine.enqueue(s, std::move(posting));
    bool seen = false;
    for (auto& [stream, at] : last)
      if (stream == s.get()) at = seq, seen = true;
    if (!seen) last.emplace_back(s.get(), seq);
    streams.push_back(s);
    transfers.push_back(transfer);
  }
  for (auto& [stream, at] : last) engine.drain(*stream, at);
  for (size_t i = 0; i < calls.size(); ++i) {
    Op completion;
    completion.kind = Op::Kind::device;
    ncclComm_t comm = calls[i].comm;
    completion.run = [transfer = transfers[i], complete = calls[i].complete, comm, send = calls[i].is_send] {
      if (send) {
        comm->sending.push_back(transfer);
        return;
      }
      if (!transfer->requests.empty())
        MPI_Waitall(static_cast<int>(transfer->requests.size()), transfer->requests.data(), MPI_STATUSES_IGNORE);
      complete(*transfer);
    };
    engine.enqueue(streams[i], std::move(completion));
  }
  return engine.faulted() ? ncclUnhandledCudaError : ncclSuccess;
}

// One call: launched at once, or with its group.
ncclResult_t submit(const char* name, ncclComm_t comm, cudaStream_t stream, std::function<void(Transfer&)> post,
                    std::function<void(Transfer&)> complete, bool is_send = false) {
  Call c{name, comm, stream, std::move(post), std::move(complete), is_send};
  if (group_depth > 0) {
    grouped.push_back(std::move(c));
    return ncclSuccess;
  }
  std::vector<Call> one;
  one.push_back(std::move(c));
  return launch(std::move(one));
}

MPI_Op mpi_op(ncclRedOp_t op) {
  switch (op) {
    case ncclProd:
      return MPI_PROD;
    case ncclMax:
      return MPI_MAX;
    case ncclMin:
      return MPI_MIN;
    default:
      return MPI_SUM;  // sum, and avg before its division
  }
}

// Checks a reduction's arguments; nullptr when they are fine, else why not.
const char* bad_reduction(ncclDataType_t t, ncclRedOp_t op) {
  if (type_size(t) == 0) return "unknown data type";
  if (op < ncclSum || op >= ncclNumOps) return "unknown reduction";
  if (op == ncclAvg && !is_floating(t)) return "avg of an integer type";
  return nullptr;
}

// Elements of `src` as the reduction's f64 or i64 values, into `dst` (8 bytes each).
void widen(const void* src, ncclDataType_t t, size_t n, std::vector<char>& dst) {
  dst.resize(n * 8);
  for (size_t i = 0; i < n; ++i) {
    if (is_floating(t)) {
      const double v = load_f(src, t, i);
      std::memcpy(dst.data() + i * 8, &v, 8);
    } else {
      const int64_t v = load_i(src, t, i);
      std::memcpy(dst.data() + i * 8, &v, 8);
    }
  }
}

void narrow(const std::vector<char>& src, ncclDataType_t t, size_t n, double divide, void* dst) {
  for (size_t i = 0; i < n; ++i) {
    if (is_floating(t)) {
      double v = 0;
      std::memcpy(&v, src.data() + i * 8, 8);
      store_f(dst, t, i, v / divide);
    } else {
      int64_t v = 0;
      std::memcpy(&v, src.data() + i * 8, 8);
      store_i(dst, t, i, v);
    }
  }
}

MPI_Datatype wide_type(ncclDataType_t t) { return is_floating(t) ? MPI_DOUBLE : MPI_INT64_T; }

}  // namespace

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error (the simulated GPU faulted)";
    case ncclSystemError:
      return "unhandled system error";
    case ncclInternalError:
      return "internal error";
    case ncclInvalidArgument:
      return "invalid argument";
    case ncclInvalidUsage:
      return "invalid usage";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    default:
      return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t) { return last_error().c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return complain("ncclGetUniqueId", "null id");
  static int made = 0;
  IdFields f{kIdMagic, 0, kFirstBootstrapTag + (made++ % 4000)};
  MPI_Comm_rank(MPI_COMM_WORLD, &f.root);
  std::memset(id, 0, sizeof(*id));
  std::memcpy(id->internal, &f, sizeof(f));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  constexpr const char* call = "ncclCommInitRank";
  IdFields f{};
  std::memcpy(&f, id.internal, sizeof(f));
  if (!comm || f.magic != kIdMagic) return complain(call, "not an id from ncclGetUniqueId");
  if (nranks < 1 || rank < 0 || rank >= nranks) return complain(call, "rank outside the communicator");
  int me = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (rank == 0 && me != f.root) return complain(call, "rank 0 must be the process that made the id", ncclInvalidUsage);
  std::vector<int> members(static_cast<size_t>(nranks), -1);
  if (rank == 0) {
    members[0] = me;
    for (int i = 1; i < nranks; ++i) {
      int joined[2];  // its rank in the communicator, its world rank
      MPI_Recv(joined, 2, MPI_INT, MPI_ANY_SOURCE, f.tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (joined[0] <= 0 || joined[0] >= nranks || members[static_cast<size_t>(joined[0])] != -1)
        return complain(call, "two processes joined as the same rank", ncclInvalidUsage);
      members[static_cast<size_t>(joined[0])] = joined[1];
    }
    for (int i = 1; i < nranks; ++i)
      MPI_Send(members.data(), nranks, MPI_INT, members[static_cast<size_t>(i)], f.tag, MPI_COMM_WORLD);
  } else {
    const int joined[2] = {rank, me};
    MPI_Send(joined, 2, MPI_INT, f.root, f.tag, MPI_COMM_WORLD);
    MPI_Recv(members.data(), nranks, MPI_INT, f.root, f.tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  MPI_Group world = MPI_GROUP_NULL, group = MPI_GROUP_NULL;
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  MPI_Group_incl(world, nranks, members.data(), &group);
  auto made = std::make_unique<ncclComm>();
  MPI_Comm_create_group(MPI_COMM_WORLD, group, f.tag, &made->comm);
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  made->rank = rank;
  made->size = nranks;
  *comm = made.release();
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return complain("ncclCommDestroy", "no communicator");
  reap(*comm, true);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm->comm != MPI_COMM_NULL) MPI_Comm_free(&comm->comm);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return complain("ncclCommAbort", "no communicator");
  comm->aborted = true;  // the MPI communicator is left: a peer may be gone
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (!comm || !async_error) return complain("ncclCommGetAsyncError", "null argument");
  *async_error = comm->aborted ? ncclInvalidUsage : ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  constexpr const char* call = "ncclAllReduce";
  if (const char* why = bad_reduction(datatype, op)) return complain(call, why);
  Engine& engine = Engine::get();
  const size_t bytes = count * type_size(datatype);
  if (!on_device(engine, sendbuff, bytes) || !on_device(engine, recvbuff, bytes))
    return complain(call, "a buffer is not simulated device memory");
  const int size = comm ? comm->size : 1;
  return submit(
      call, comm, stream,
      [=](Transfer& t) {
        widen(sendbuff, datatype, count, t.in);
        t.out.resize(t.in.size());
        t.requests.resize(1);
        MPI_Iallreduce(t.in.data(), t.out.data(), static_cast<int>(count), wide_type(datatype), mpi_op(op),
                       comm->comm, t.requests.data());
      },
      [=](Transfer& t) { narrow(t.out, datatype, count, op == ncclAvg ? size : 1.0, recvbuff); });
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  constexpr const char* call = "ncclReduceScatter";
  if (const char* why = bad_reduction(datatype, op)) return complain(call, why);
  Engine& engine = Engine::get();
  const int size = comm ? comm->size : 1;
  const size_t element = type_size(datatype);
  if (!on_device(engine, sendbuff, recvcount * static_cast<size_t>(size) * element) ||
      !on_device(engine, recvbuff, recvcount * element))
    return complain(call, "a buffer is not simulated device memory");
  return submit(
      call, comm, stream,
      [=](Transfer& t) {
        widen(sendbuff, datatype, recvcount * static_cast<size_t>(size), t.in);
        t.out.resize(recvcount * 8);
        t.requests.resize(1);
        MPI_Ireduce_scatter_block(t.in.data(), t.out.data(), static_cast<int>(recvcount), wide_type(datatype),
                                  mpi_op(op), comm->comm, t.requests.data());
      },
      [=](Transfer& t) { narrow(t.out, datatype, recvcount, op == ncclAvg ? size : 1.0, recvbuff); });
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  constexpr const char* call = "ncclAllGather";
  Engine& engine = Engine::get();
  const int size = comm ? comm->size : 1;
  const size_t bytes = sendcount * type_size(datatype);
  if (type_size(datatype) == 0) return complain(call, "unknown data type");
  if (!on_device(engine, sendbuff, bytes) || !on_device(engine, recvbuff, bytes * static_cast<size_t>(size)))
    return complain(call, "a buffer is not simulated device memory");
  return submit(
      call, comm, stream,
      [=](Transfer& t) {
        t.in.assign(static_cast<const char*>(sendbuff), static_cast<const char*>(sendbuff) + bytes);
        t.out.resize(bytes * static_cast<size_t>(size));
        t.requests.resize(1);
        MPI_Iallgather(t.in.data(), static_cast<int>(bytes), MPI_BYTE, t.out.data(), static_cast<int>(bytes),
                       MPI_BYTE, comm->comm, t.requests.data());
      },
      [=](Transfer& t) {
        if (!t.out.empty()) std::memcpy(recvbuff, t.out.data(), t.out.size());
      });
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  constexpr const char* call = "ncclBroadcast";
  Engine& engine = Engine::get();
  const size_t bytes = count * type_size(datatype);
  if (type_size(datatype) == 0) return complain(call, "unknown data type");
  if (comm && (root < 0 || root >= comm->size)) return complain(call, "root outside the communicator");
  const bool is_root = comm && comm->rank == root;
  if ((is_root && !on_device(engine, sendbuff, bytes)) || !on_device(engine, recvbuff, bytes))
    return complain(call, "a buffer is not simulated device memory");
  return submit(
      call, comm, stream,
      [=](Transfer& t) {
        if (is_root)
          t.out.assign(static_cast<const char*>(sendbuff), static_cast<const char*>(sendbuff) + bytes);
        else
          t.out.resize(bytes);
        t.requests.resize(1);
        MPI_Ibcast(t.out.data(), static_cast<int>(bytes), MPI_BYTE, root, comm->comm, t.requests.data());
      },
      [=](Transfer& t) {
        if (!t.out.empty()) std::memcpy(recvbuff, t.out.data(), t.out.size());
      });
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  constexpr const char* call = "ncclSend";
  Engine& engine = Engine::get();
  const size_t bytes = count * type_size(datatype);
  if (type_size(datatype) == 0) return complain(call, "unknown data type");
  if (comm && (peer < 0 || peer >= comm->size)) return complain(call, "peer outside the communicator");
  if (!on_device(engine, sendbuff, bytes)) return complain(call, "the buffer is not simulated device memory");
  return submit(
      call, comm, stream,
      [=](Transfer& t) {
        t.in.assign(static_cast<const char*>(sendbuff), static_cast<const char*>(sendbuff) + bytes);
        t.requests.resize(1);
        MPI_Isend(t.in.data(), static_cast<int>(bytes), MPI_BYTE, peer, 0, comm->comm, t.requests.data());
      },
      [](Transfer&) {}, /*is_send=*/true);
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  constexpr const char* call = "ncclRecv";
  Engine& engine = Engine::get();
  const size_t bytes = count * type_size(datatype);
  if (type_size(datatype) == 0) return complain(call, "unknown data type");
  if (comm && (peer < 0 || peer >= comm->size)) return complain(call, "peer outside the communicator");
  if (!on_device(engine, recvbuff, bytes)) return complain(call, "the buffer is not simulated device memory");
  return submit(
      call, comm, stream,
      [=](Transfer& t) {
        t.out.resize(bytes);
        t.requests.resize(1);
        MPI_Irecv(t.out.data(), static_cast<int>(bytes), MPI_BYTE, peer, 0, comm->comm, t.requests.data());
      },
      [=](Transfer& t) {
        if (!t.out.empty()) std::memcpy(recvbuff, t.out.data(), t.out.size());
      });
}

ncclResult_t ncclGroupStart() {
  ++group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (group_depth == 0) return complain("ncclGroupEnd", "without ncclGroupStart", ncclInvalidUsage);
  if (--group_depth > 0) return ncclSuccess;
  std::vector<Call> calls;
  calls.swap(grouped);
  return launch(std::move(calls));
}
