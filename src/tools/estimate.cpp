#include "tools/estimate.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "model/flops.h"
#include "parallel/pipeline.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/tensor_parallel.h"
#include "train/trainer.h"

namespace strata {

namespace {

bool is_moe(const ModelConfig& c, int64_t layer) {
  return c.moe.n_experts > 0 && layer % c.moe.every == c.moe.every - 1;
}

// Parameters of one layer: `global` the whole layer, `local` what one rank holds under tp and ep.
struct LayerParams {
  double global = 0, local = 0;
};

LayerParams layer_params(const ModelConfig& c, int64_t layer, double tp, double ep) {
  const double d = static_cast<double>(c.d_model), hd = static_cast<double>(c.head_dim());
  const double nh = static_cast<double>(c.n_heads), kvh = static_cast<double>(c.n_kv_heads);
  const double bias = c.bias ? 1 : 0, norm = c.norm == "layernorm" ? 2 * d : d;
  // kv heads are split when tp divides them; otherwise every rank holds the whole kv projections
  // (model/attention.cpp) and uses one head's window of them.
  const double kvh_local = std::fmod(kvh, tp) == 0 ? kvh / tp : kvh;
  const double n_mlp = c.activation == "swiglu" ? 3 : 2, ff = static_cast<double>(c.d_ff);
  const double ffn_global = n_mlp * d * ff + bias * ((n_mlp - 1) * ff + d);
  const double ffn_local = n_mlp * d * ff / tp + bias * ((n_mlp - 1) * ff / tp + d);
  LayerParams p;
  p.global = 2 * norm + 2 * d * nh * hd + 2 * d * kvh * hd + bias * (2 * d + 2 * kvh * hd);
  p.local = 2 * norm + 2 * d * nh * hd / tp + 2 * d * kvh_local * hd +
            bias * (nh * hd / tp + d + 2 * kvh_local * hd);
  if (is_moe(c, layer)) {
    const double experts = static_cast<double>(c.moe.n_experts);
    p.global += d * experts + experts * ffn_global;
    p.local += d * experts + experts / ep * ffn_local;
  } else {
    p.global += ffn_global;
    p.local += ffn_local;
  }
  return p;
}

double bytes_of(const std::string& precision) { return precision == "fp32" ? 4 : 2; }

// Ring collectives: bytes each rank sends.
double all_reduce_bytes(double bytes, double n) { return n > 1 ? 2 * (n - 1) / n * bytes : 0; }
double gather_bytes(double bytes, double n) { return n > 1 ? (n - 1) / n * bytes : 0; }

// The largest number of layers' worth of micro-batch activations pipeline rank `rank` holds at
// once under the config's schedule (each chunk's live micro-batches times its layers).
double layers_held(const Config& config, int rank, const std::vector<int64_t>& split, int64_t m) {
  const ParallelConfig& par = config.parallel;
  const int pp = static_cast<int>(par.pp), v = static_cast<int>(par.virtual_stages);
  if (pp == 1) return static_cast<double>(config.model.n_layers);
  const auto actions = build_pipeline_schedule(parse_pipeline_schedule(par.pp_schedule),
                                               {pp, v, static_cast<int>(m)}, rank);
  std::vector<int> live(static_cast<size_t>(v), 0);
  double held = 0;
  for (const PipeAction& a : actions) {
    if (a.op == PipeOp::forward) ++live[static_cast<size_t>(a.chunk)];
    if (a.op != PipeOp::forward && a.op != PipeOp::backward) continue;
    double now = 0;
    for (int c = 0; c < v; ++c)
      now += live[static_cast<size_t>(c)] * static_cast<double>(split[static_cast<size_t>(c * pp + rank)]);
    held = std::max(held, now);
    if (a.op == PipeOp::backward) --live[static_cast<size_t>(a.chunk)];
  }
  return held;
}

template <typename T>
T required(const YAML::Node& node, const std::string& path, const char* key) {
  const YAML::Node field = node[key];
  STRATA_CHECK(field.IsDefined() && !field.IsNull(), "hardware file '", path, "' lacks the field '",
               key, "'");
  try {
    return field.as<T>();
  } catch (const YAML::Exception&) {
    throw Error("hardware file '" + path + "': field '" + key + "' is not a number");
  }
}

}  // namespace

Hardware load_hardware(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw Error("cannot read hardware file '" + path + "'");
  } catch (const YAML::Exception& e) {
    throw Error("hardware file '" + path + "' is not valid YAML: " + e.what());
  }
  STRATA_CHECK(root.IsMap(), "hardware file '", path, "' is not a YAML map");
  Hardware h;
  h.name = root["name"] ? root["name"].as<std::string>() : path;
  h.peak_flops_bf16 = required<double>(root, path, "peak_flops_bf16");
  h.peak_flops_fp32 = required<double>(root, path, "peak_flops_fp32");
  h.memory_bytes = required<double>(root, path, "memory_gb") * 1e9;
  h.memory_bandwidth = required<double>(root, path, "memory_bandwidth_gbs") * 1e9;
  h.intra_node_bandwidth = required<double>(root, path, "intra_node_bandwidth_gbs") * 1e9;
  h.inter_node_bandwidth = required<double>(root, path, "inter_node_bandwidth_gbs") * 1e9;
  h.devices_per_node = required<int64_t>(root, path, "devices_per_node");
  h.flops_efficiency = required<double>(root, path, "flops_efficiency");
  for (auto [key, value] : {std::pair{"peak_flops_bf16", h.peak_flops_bf16},
                            std::pair{"peak_flops_fp32", h.peak_flops_fp32},
                            std::pair{"memory_gb", h.memory_bytes},
                            std::pair{"memory_bandwidth_gbs", h.memory_bandwidth},
                            std::pair{"intra_node_bandwidth_gbs", h.intra_node_bandwidth},
                            std::pair{"inter_node_bandwidth_gbs", h.inter_node_bandwidth}})
    STRATA_CHECK(value > 0, "hardware file '", path, "': field '", key, "' must be positive");
  STRATA_CHECK(h.devices_per_node >= 1, "hardware file '", path, "': field 'devices_per_node' must be >= 1");
  STRATA_CHECK(h.flops_efficiency > 0 && h.flops_efficiency <= 1, "hardware file '", path,
               "': field 'flops_efficiency' must be in (0, 1]");
  return h;
}

double zero_paper_state_bytes(double psi, int stage, double n_d, double k) {
  const double p = 2 * psi, g = 2 * psi, o = k * psi;
  switch (stage) {
    case 0: return p + g + o;
    case 1: return p + g + o / n_d;
    case 2: return p + (g + o) / n_d;
    default: return (p + g + o) / n_d;
  }
}

double korthikanti_layer_bytes(double s, double b, double h, double a, double t, bool sequence_parallel,
                               Recompute recompute) {
  const double sbh = s * b * h;
  if (recompute == Recompute::full) return sequence_parallel ? 2 * sbh / t : 2 * sbh;
  const double core = recompute == Recompute::selective ? 0 : 5 * a * s / (h * t);
  return sequence_parallel ? sbh * (34 / t + core) : sbh * (10 + 24 / t + core);
}

Estimate estimate_run(const Config& config, const Hardware& hw) {
  check_layout(config);
  const ModelConfig& c = config.model;
  const ParallelConfig& par = config.parallel;
  const TrainConfig& t = config.train;
  const double tp = static_cast<double>(par.tp), pp = static_cast<double>(par.pp);
  const double sp = static_cast<double>(par.sp), dp = static_cast<double>(par.dp);
  const double ep = static_cast<double>(par.ep), world = dp * tp * pp * sp;
  const double d = static_cast<double>(c.d_model), hd = static_cast<double>(c.head_dim());
  const double vocab = static_cast<double>(c.vocab_size), w = bytes_of(t.precision);
  const int64_t m = t.global_batch / (t.micro_batch * par.dp);
  const Recompute recompute = parse_recompute(t.recompute);
  const int pp_ranks = static_cast<int>(par.pp), v = static_cast<int>(par.virtual_stages);
  const std::vector<int64_t> split = pipeline_layer_split(c.n_layers, pp_ranks, v, par.pp_layers);

  Estimate e;
  const ModelCounts counts = count_model(c);
  e.params = counts.params;
  e.embedding_params = counts.embedding_params;
  e.active_params_per_token = counts.active_matmul_params;

  // Parameters per pipeline rank (global, and local after tp and ep), layer by layer.
  const double tokens_table = vocab * d, positions = c.position == "learned" ? static_cast<double>(c.max_seq_len) * d : 0;
  const double norm = c.norm == "layernorm" ? 2 * d : d;
  // Tensor parallelism pads the vocabulary to a multiple of 128 x tp: rank 0 holds the most rows.
  const double vocab_local = static_cast<double>(vocab_shard(c.vocab_size, 0, par.tp).rows) * d;
  std::vector<double> local(static_cast<size_t>(pp_ranks), 0), layers_on(static_cast<size_t>(pp_ranks), 0);
  e.params_by_stage.assign(static_cast<size_t>(pp_ranks), 0);
  int64_t layer = 0;
  for (size_t vs = 0; vs < split.size(); ++vs) {
    const size_t rank = vs % static_cast<size_t>(pp_ranks);
    for (int64_t i = 0; i < split[vs]; ++i, ++layer) {
      const LayerParams lp = layer_params(c, layer, tp, ep);
      e.params_by_stage[rank] += static_cast<int64_t>(lp.global);
      local[rank] += lp.local;
      layers_on[rank] += 1;
    }
  }
  e.params_by_stage.front() += static_cast<int64_t>(tokens_table + positions);
  local.front() += vocab_local + positions;
  const bool mirror = c.tie_embeddings && pp_ranks > 1;
  // A tied head on another stage is a mirror of the token table: held there, counted once.
  e.params_by_stage.back() += static_cast<int64_t>(norm + (c.tie_embeddings ? 0 : tokens_table));
  local.back() += norm + (c.tie_embeddings && !mirror ? 0 : vocab_local);

  // FLOPs per token: 2 per active matmul weight forward, 4 backward; causal attention's two
  // products 2 * d per (query, key) pair over seq/2 keys on average, forward.
  const double attention_fwd = 2.0 * static_cast<double>(c.n_layers) * d * static_cast<double>(t.seq_len);
  const double matmul = static_cast<double>(counts.active_matmul_params);
  e.forward_flops_per_token = 2 * matmul + attention_fwd;
  e.backward_flops_per_token = 2 * e.forward_flops_per_token;
  e.recompute_flops_per_token = recompute == Recompute::full        ? e.forward_flops_per_token - 2 * vocab * d
                                : recompute == Recompute::selective ? attention_fwd
                                                                    : 0;
  const double tokens_per_step = static_cast<double>(t.global_batch * t.seq_len);
  e.model_flops_per_step = counts.train_flops_per_token(t.seq_len) * tokens_per_step;
  e.hardware_flops_per_step = e.model_flops_per_step + e.recompute_flops_per_token * tokens_per_step;

  // Activations of one micro-batch and layer, as Strata's blocks keep them (model/block.h): the
  // block input and the residual after attention (this rank's rows), both norms' outputs (all
  // rows), q, k, v and the attention output, the FFN's hidden activations, f32 statistics.
  const double tokens = static_cast<double>(t.micro_batch * t.seq_len) / sp;
  const double rows = par.tp_sequence_parallel ? tokens / tp : tokens;
  const double nh_local = static_cast<double>(c.n_heads) / tp;
  const double kvh_local = c.n_kv_heads % par.tp == 0 ? static_cast<double>(c.n_kv_heads) / tp : 1;
  const double n_mlp = c.activation == "swiglu" ? 3 : 2, ff_local = static_cast<double>(c.d_ff) / tp;
  const double moe_factor = c.moe.n_experts > 0 ? static_cast<double>(c.moe.top_k) : 1;
  const double stats = 4;  // statistics are f32 for 16-bit and f32 activations alike
  const double core = w * tokens * nh_local * hd + stats * tokens * nh_local;  // output + lse
  const double layer_none = w * (2 * rows * d + 2 * tokens * d + tokens * nh_local * hd +
                                 2 * tokens * kvh_local * hd + n_mlp * tokens * ff_local * moe_factor) +
                            core + stats * rows * 2 * (c.norm == "layernorm" ? 2 : 1);
  e.memory.activations_per_layer = recompute == Recompute::full        ? w * rows * d
                                   : recompute == Recompute::selective ? layer_none - core
                                                                       : layer_none;

  // Model states (docs/zero.md), per rank, for each pipeline rank; the fullest one is reported.
  const double n = par.zero >= 1 ? dp : 1;
  const bool offload_opt = par.offload.optimizer, offload_params = par.offload.params;
  double best_total = -1;
  for (int rank = 0; rank < pp_ranks; ++rank) {
    const double psi = local[static_cast<size_t>(rank)];
    MemoryBreakdown mem;
    const double params = par.zero == 3 ? w * psi / n : w * psi;
    const double grads = par.zero >= 2 ? 4 * psi / n : w * psi + (w == 2 ? 4 * psi : 0);
    const double optimizer = (8 + (w == 2 || offload_opt ? 4 : 0)) * psi / n;
    (offload_params ? mem.offloaded : mem.params) += params;
    (par.zero >= 2 && offload_opt ? mem.offloaded : mem.grads) += grads;
    (offload_opt ? mem.offloaded : mem.optimizer) += optimizer;
    mem.activations_per_layer = e.memory.activations_per_layer;
    mem.korthikanti_per_layer = korthikanti_layer_bytes(
        static_cast<double>(t.seq_len) / sp, static_cast<double>(t.micro_batch), d,
        static_cast<double>(c.n_heads), tp, par.tp_sequence_parallel, recompute);
    const double held = layers_held(config, rank, split, m);
    mem.microbatches_held = held / std::max(1.0, layers_on[static_cast<size_t>(rank)]);
    mem.activations = held * mem.activations_per_layer;
    // Temporary buffers at the peak. During a backward: one layer's gradients of activations (and
    // under full recompute the recomputed layer), or on the last stage the logits with the head's
    // inputs; under ZeRO 2 and 3 the gradients waiting in the open bucket, the packed bucket and
    // its reduced run (f32), a tied table's full gradient (alive from the head's backward to the
    // embedding's); under ZeRO 3 the gathered values with their gather buffers (the head's table,
    // or this layer and the next). After the backward, when the activations are gone: the gather
    // of the updated parameters (ZeRO 1 and 2) or the host copy of a gradient (offload), whose
    // size is set by the largest tensor when it exceeds the bucket.
    const double layers_here = std::max(1.0, layers_on[static_cast<size_t>(rank)]);
    const bool embedding_here = rank == 0, head_here = rank == pp_ranks - 1;
    const double layer_local = (psi - (embedding_here ? vocab_local + positions : 0) -
                                (head_here ? norm + (c.tie_embeddings && !mirror ? 0 : vocab_local) : 0)) /
                               layers_here;
    double largest = std::max({d * ff_local, d * nh_local * hd, d * kvh_local * hd});
    if (embedding_here || (head_here && !(c.tie_embeddings && !mirror))) largest = std::max(largest, vocab_local);
    if (embedding_here) largest = std::max(largest, positions);
    const double bucket = par.bucket_mb * 1024 * 1024;
    const bool sharded = par.zero >= 1 && dp > 1;
    double during = recompute == Recompute::full ? 2 * layer_none : layer_none;
    if (head_here) {
      // The logits buffer stays from the forward's head through the backward (it becomes the
      // logits' gradient, then the next forward's logits).
      const double logits = w * tokens * sp * static_cast<double>(vocab_shard(c.vocab_size, 0, par.tp).rows);
      during = logits + std::max(during, 2 * w * tokens * sp * d + 16 * tokens * sp);
    }
    if (sharded && par.zero >= 2) {
      // A layer's gradients (allocated for its backward) and the buckets in flight (ZeroEngine
      // keeps at most two: one may hold the largest tensor, the other a bucket's worth), each
      // packed rank-major in f32 with its reduced run.
      double zero_extra = w * layer_local + (std::max(bucket, 4 * largest) + bucket) * (1 + 1 / dp);
      if (c.tie_embeddings && pp_ranks == 1) zero_extra += w * vocab_local;
      if (par.zero == 3) {
        // The values of the group in use (the largest: the table, or a layer) and the next layer
        // being gathered, with its all-gather buffer and run.
        const double group = std::max(embedding_here || head_here ? vocab_local : 0.0, layer_local);
        zero_extra += w * group + w * (2 + 1 / dp) * layer_local;
      }
      during += zero_extra;
    }
    double after = 0;
    if (sharded && par.zero <= 2) after = std::max(bucket, w * largest) * (1 + 1 / dp);
    if (offload_opt && par.zero <= 1) after = std::max(after, 4 * largest);
    mem.temporary = std::max(during, after - mem.activations);
    if (mem.total() > best_total) {
      best_total = mem.total();
      e.memory = mem;
      e.fullest_stage = rank;
      e.params_per_rank = static_cast<int64_t>(psi);
    }
  }
  e.kv_cache_bytes = 2 * static_cast<double>(c.n_layers) / pp * static_cast<double>(t.micro_batch) *
                     static_cast<double>(t.seq_len) * kvh_local * hd * w;
  e.headroom = hw.memory_bytes - e.memory.total();
  e.fits = e.headroom >= 0;

  // Time: compute at the sustained rate, the fullest stage's share; the bubble; communication.
  const double peak = w == 2 ? hw.peak_flops_bf16 : hw.peak_flops_fp32;
  const double max_layers = *std::max_element(layers_on.begin(), layers_on.end());
  const double imbalance = max_layers / (static_cast<double>(c.n_layers) / pp);
  const double rank_flops = e.hardware_flops_per_step / world * imbalance;
  e.compute_s = rank_flops / (peak * hw.flops_efficiency);
  e.bubble = pp > 1 ? (pp - 1) / (static_cast<double>(v) * static_cast<double>(m)) : 0;
  const double psi = static_cast<double>(e.params_per_rank), mb = static_cast<double>(m);
  const double layers = max_layers, act = tokens * d * w;
  const double dp_group = par.zero >= 2 ? dp : dp * sp;
  const double grad_bytes = 4 * psi;
  switch (par.zero) {
    case 0: e.comm.dp = all_reduce_bytes(grad_bytes, dp_group); break;
    case 1: e.comm.dp = all_reduce_bytes(grad_bytes, dp_group) + gather_bytes(w * psi, dp); break;
    case 2: e.comm.dp = mb * gather_bytes(grad_bytes, dp) + gather_bytes(w * psi, dp); break;
    default: e.comm.dp = mb * gather_bytes(grad_bytes, dp) + 2 * mb * gather_bytes(w * psi, dp); break;
  }
  e.comm.tp = mb * (layers * (4 + (recompute == Recompute::full ? 2 : 0)) + 2) * all_reduce_bytes(act, tp);
  e.comm.pp = pp > 1 ? mb * static_cast<double>(v) * 2 * act : 0;
  e.comm.sp = sp > 1 ? mb * layers * 3 * (sp - 1) * tokens * 2 * kvh_local * hd * w : 0;
  double moe_layers = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) moe_layers += is_moe(c, l);
  e.comm.ep = ep > 1 ? mb * moe_layers / pp * 4 * gather_bytes(tokens * static_cast<double>(c.moe.top_k) * d * w, ep) : 0;
  // Ranks are ordered tp fastest, then sp, dp, pp: a group within one node uses the node's links.
  const double node = static_cast<double>(hw.devices_per_node);
  auto bandwidth = [&](double span) { return span <= node ? hw.intra_node_bandwidth : hw.inter_node_bandwidth; };
  const double t_dp = e.comm.dp / bandwidth(tp * sp * dp), t_tp = e.comm.tp / bandwidth(tp);
  const double t_sp = e.comm.sp / bandwidth(tp * sp), t_ep = e.comm.ep / bandwidth(tp * sp * dp);
  // dp's reductions overlap backward (two thirds of the compute); tp, sp and ep sit on the
  // critical path; pipeline transfers overlap the compute around them (the bubble is separate).
  e.comm_exposed_s = std::max(0.0, t_dp - 2.0 / 3.0 * e.compute_s) + t_tp + t_sp + t_ep;
  e.step_s = e.compute_s * (1 + e.bubble) + e.comm_exposed_s;
  e.mfu = e.model_flops_per_step / (e.step_s * world * peak);
  return e;
}

std::vector<SearchResult> search_layouts(const Config& base, const Hardware& hw, int64_t world) {
  STRATA_CHECK(world >= 1, "--world must be at least 1, got ", world);
  const ModelConfig& c = base.model;
  std::vector<SearchResult> out;
  auto divisors = [](int64_t x) {
    std::vector<int64_t> ds;
    for (int64_t i = 1; i <= x; ++i)
      if (x % i == 0) ds.push_back(i);
    return ds;
  };
  for (int64_t tp : divisors(world)) {
    if (c.n_heads % tp != 0 || (c.n_kv_heads % tp != 0 && tp % c.n_kv_heads != 0) || c.d_ff % tp != 0) continue;
    for (int64_t pp : divisors(world / tp)) {
      if (pp > c.n_layers) continue;
      for (int64_t sp : divisors(world / tp / pp)) {
        if (base.train.seq_len % (2 * sp) != 0 && sp > 1) continue;
        const int64_t dp = world / tp / pp / sp;
        if (base.train.global_batch % dp != 0) continue;
        for (int64_t ep : divisors(dp * sp)) {
          if (ep > 1 && (c.moe.n_experts == 0 || c.moe.n_experts % ep != 0)) continue;
          for (int64_t zero = 0; zero <= 3; ++zero) {
            if (zero >= 1 && (dp == 1 || ep > 1)) continue;
            if (zero >= 2 && sp > 1) continue;
            for (const char* recompute : {"none", "selective", "full"}) {
              for (int64_t micro : divisors(base.train.global_batch / dp)) {
                const int64_t m = base.train.global_batch / (micro * dp);
                if (pp > 1 && m < pp) continue;
                Config cfg = base;
                cfg.parallel.dp = dp;
                cfg.parallel.tp = tp;
                cfg.parallel.pp = pp;
                cfg.parallel.sp = sp;
                cfg.parallel.ep = ep;
                cfg.parallel.zero = zero;
                cfg.parallel.virtual_stages = 1;
                cfg.parallel.pp_schedule = "1f1b";
                cfg.parallel.pp_layers.clear();
                cfg.parallel.offload = {};
                cfg.train.recompute = recompute;
                cfg.train.micro_batch = micro;
                Estimate e;
                try {
                  e = estimate_run(cfg, hw);  // refuses what the trainer would refuse
                } catch (const Error&) {
                  continue;
                }
                if (e.fits) out.push_back({cfg, e});
              }
            }
          }
        }
      }
    }
  }
  // Fastest first; among equally fast ones, the one that sends less, then the one that needs less
  // memory.
  auto sent = [](const Estimate& e) { return e.comm.dp + e.comm.tp + e.comm.pp + e.comm.sp + e.comm.ep; };
  std::stable_sort(out.begin(), out.end(), [&](const SearchResult& a, const SearchResult& b) {
    const Estimate &x = a.estimate, &y = b.estimate;
    if (x.step_s != y.step_s) return x.step_s < y.step_s;
    if (sent(x) != sent(y)) return sent(x) < sent(y);
    return x.memory.total() < y.memory.total();
  });
  return out;
}

namespace {

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return text;
}

std::string count(double x) {
  char text[32];
  if (x >= 1e9)
    std::snprintf(text, sizeof(text), "%.3f B", x / 1e9);
  else if (x >= 1e6)
    std::snprintf(text, sizeof(text), "%.2f M", x / 1e6);
  else
    std::snprintf(text, sizeof(text), "%.0f", x);
  return text;
}

std::string layout_text(const Config& config) {
  const ParallelConfig& p = config.parallel;
  std::ostringstream s;
  s << "dp " << p.dp << " x tp " << p.tp << " x pp " << p.pp << " x sp " << p.sp << ", ep " << p.ep
    << ", zero " << p.zero << (p.offload.optimizer ? ", offload optimizer" : "")
    << (p.offload.params ? ", offload params" : "") << ", recompute " << config.train.recompute
    << ", micro-batch " << config.train.micro_batch;
  return s.str();
}

}  // namespace

std::string format_estimate(const Config& config, const Hardware& hw, const Estimate& e) {
  std::ostringstream s;
  char line[160];
  auto row = [&](const char* label, const std::string& value) {
    std::snprintf(line, sizeof(line), "  %-34s %s\n", label, value.c_str());
    s << line;
  };
  const MemoryBreakdown& mem = e.memory;
  s << "model      " << config.model.arch << ", " << count(static_cast<double>(e.params)) << " parameters ("
    << count(static_cast<double>(e.embedding_params)) << " embedding, "
    << count(static_cast<double>(e.active_params_per_token)) << " matmul weights active per token)\n";
  s << "layout     " << layout_text(config) << "\n";
  s << "hardware   " << hw.name << "\n\n";
  s << "parameters per pipeline rank:";
  for (int64_t p : e.params_by_stage) s << " " << count(static_cast<double>(p));
  s << "\n";
  row("held by the fullest rank", count(static_cast<double>(e.params_per_rank)) + " (pipeline rank " +
                                      std::to_string(e.fullest_stage) + ")");
  s << "\nFLOPs per token\n";
  row("forward", count(e.forward_flops_per_token));
  row("backward", count(e.backward_flops_per_token));
  row("recompute", count(e.recompute_flops_per_token));
  std::snprintf(line, sizeof(line), "%.4g (model), %.4g (with recompute)", e.model_flops_per_step,
                e.hardware_flops_per_step);
  row("per step", line);
  s << "\nmemory per rank (pipeline rank " << e.fullest_stage << ")\n";
  row("parameters", gib(mem.params));
  row("gradients", gib(mem.grads));
  row("optimizer state", gib(mem.optimizer));
  std::snprintf(line, sizeof(line), "%s (%s a layer and micro-batch, %.2f micro-batches held)",
                gib(mem.activations).c_str(), gib(mem.activations_per_layer).c_str(), mem.microbatches_held);
  row("activations", line);
  row("  Korthikanti et al. a layer", gib(mem.korthikanti_per_layer) + " (16-bit GPT layer, for comparison)");
  row("temporary buffers", gib(mem.temporary));
  row("total on the device", gib(mem.total()));
  if (mem.offloaded > 0) row("offloaded to host memory", gib(mem.offloaded));
  row("device memory", gib(hw.memory_bytes));
  row(e.fits ? "fits, with headroom" : "DOES NOT FIT, short by", gib(std::abs(e.headroom)));
  row("KV cache (inference, this batch)", gib(e.kv_cache_bytes));
  s << "\ntime per step\n";
  std::snprintf(line, sizeof(line), "%.1f%%", 100 * e.bubble);
  row("pipeline bubble", line);
  std::snprintf(line, sizeof(line), "dp %s, tp %s, pp %s, sp %s, ep %s", gib(e.comm.dp).c_str(),
                gib(e.comm.tp).c_str(), gib(e.comm.pp).c_str(), gib(e.comm.sp).c_str(), gib(e.comm.ep).c_str());
  row("sent per rank", line);
  std::snprintf(line, sizeof(line), "%.4g s", e.compute_s);
  row("compute", line);
  std::snprintf(line, sizeof(line), "%.4g s", e.comm_exposed_s);
  row("exposed communication", line);
  std::snprintf(line, sizeof(line), "%.4g s, MFU %.1f%%", e.step_s, 100 * e.mfu);
  row("predicted step", line);
  return s.str();
}

std::string estimate_json(const Config& config, const Hardware& hw, const Estimate& e) {
  const MemoryBreakdown& mem = e.memory;
  nlohmann::json j;
  j["hardware"] = hw.name;
  j["layout"] = {{"dp", config.parallel.dp}, {"tp", config.parallel.tp}, {"pp", config.parallel.pp},
                 {"sp", config.parallel.sp}, {"ep", config.parallel.ep}, {"zero", config.parallel.zero},
                 {"recompute", config.train.recompute}, {"micro_batch", config.train.micro_batch},
                 {"offload_optimizer", config.parallel.offload.optimizer},
                 {"offload_params", config.parallel.offload.params}};
  j["params"] = {{"total", e.params}, {"embedding", e.embedding_params},
                 {"active_matmul_per_token", e.active_params_per_token}, {"by_stage", e.params_by_stage},
                 {"per_rank", e.params_per_rank}};
  j["flops"] = {{"forward_per_token", e.forward_flops_per_token}, {"backward_per_token", e.backward_flops_per_token},
                {"recompute_per_token", e.recompute_flops_per_token}, {"model_per_step", e.model_flops_per_step},
                {"hardware_per_step", e.hardware_flops_per_step}};
  j["memory_bytes"] = {{"stage", e.fullest_stage}, {"params", mem.params}, {"grads", mem.grads},
                       {"optimizer", mem.optimizer}, {"activations", mem.activations},
                       {"activations_per_layer", mem.activations_per_layer},
                       {"korthikanti_per_layer", mem.korthikanti_per_layer},
                       {"microbatches_held", mem.microbatches_held}, {"temporary", mem.temporary},
                       {"total", mem.total()}, {"offloaded", mem.offloaded}, {"device", hw.memory_bytes},
                       {"fits", e.fits}, {"headroom", e.headroom}, {"kv_cache", e.kv_cache_bytes}};
  j["comm_bytes"] = {{"dp", e.comm.dp}, {"tp", e.comm.tp}, {"pp", e.comm.pp}, {"sp", e.comm.sp}, {"ep", e.comm.ep}};
  j["time"] = {{"bubble", e.bubble}, {"compute_s", e.compute_s}, {"comm_exposed_s", e.comm_exposed_s},
               {"step_s", e.step_s}, {"mfu", e.mfu}};
  return j.dump(2);
}

}  // namespace strata
