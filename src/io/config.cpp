#include "io/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"

namespace strata {

std::string Config::checkpoint_dir() const {
  return checkpoint.dir.empty() ? train.out_dir + "/checkpoints" : checkpoint.dir;
}

namespace {

// ---- value conversion ---------------------------------------------------------------------

std::string node_text(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

template <typename T>
const char* type_name();
template <> const char* type_name<int64_t>() { return "int"; }
template <> const char* type_name<double>() { return "float"; }
template <> const char* type_name<bool>() { return "bool"; }
template <> const char* type_name<std::string>() { return "string"; }
template <> const char* type_name<std::array<double, 2>>() { return "[float, float]"; }
template <> const char* type_name<std::vector<int64_t>>() { return "[int, ...]"; }

template <typename T>
T convert(const std::string& path, const YAML::Node& node) {
  STRATA_CHECK(node.IsScalar(), "key '", path, "': expected ", type_name<T>(), ", got '",
               node_text(node), "'");
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    STRATA_FAIL("key '", path, "': expected ", type_name<T>(), ", got '", node.Scalar(), "'");
  }
}

template <>
std::array<double, 2> convert<std::array<double, 2>>(const std::string& path, const YAML::Node& node) {
  STRATA_CHECK(node.IsSequence() && node.size() == 2, "key '", path,
               "': expected a list of two floats, got '", node_text(node), "'");
  return {convert<double>(path + "[0]", node[0]), convert<double>(path + "[1]", node[1])};
}

template <>
std::vector<int64_t> convert<std::vector<int64_t>>(const std::string& path, const YAML::Node& node) {
  STRATA_CHECK(node.IsSequence(), "key '", path, "': expected a list of ints, got '",
               node_text(node), "'");
  std::vector<int64_t> out;
  for (size_t i = 0; i < node.size(); ++i)
    out.push_back(convert<int64_t>(path + "[" + std::to_string(i) + "]", node[i]));
  return out;
}

template <typename T>
std::string to_text(const T& value) {
  YAML::Emitter out;
  out << YAML::Flow;
  if constexpr (std::is_same_v<T, std::array<double, 2>>) {
    out << YAML::BeginSeq << value[0] << value[1] << YAML::EndSeq;
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    out << YAML::BeginSeq;
    for (int64_t v : value) out << v;
    out << YAML::EndSeq;
  } else if constexpr (std::is_same_v<T, std::string>) {
    out << YAML::DoubleQuoted << value;
  } else {
    out << value;
  }
  return out.c_str();
}

// A field bound to a member through an accessor that returns a reference into the Config.
template <typename T, typename Access>
ConfigField field(std::string path, Access access, std::string doc,
                  std::vector<std::string> choices = {}) {
  ConfigField f;
  f.path = path;
  f.type = type_name<T>();
  f.doc = std::move(doc);
  f.choices = choices;
  f.set = [path, access, choices](Config& c, const YAML::Node& node) {
    T value = convert<T>(path, node);
    if constexpr (std::is_same_v<T, std::string>) {
      if (!choices.empty() && std::find(choices.begin(), choices.end(), value) == choices.end()) {
        std::string list;
        for (const auto& ch : choices) list += (list.empty() ? "" : ", ") + ch;
        STRATA_FAIL("key '", path, "': '", value, "' is not one of ", list);
      }
    }
    access(c) = value;
  };
  f.get = [access](const Config& c) { return to_text(access(const_cast<Config&>(c))); };
  return f;
}

std::vector<ConfigField> make_schema() {
  using S = std::string;
  using I = int64_t;
  using F = double;
  using B = bool;
  return {
      // model
      field<S>("model.arch", [](Config& c) -> S& { return c.model.arch; },
               "Model family; names the family, the keys below choose the pieces.", {"gpt2", "llama"}),
      field<I>("model.vocab_size", [](Config& c) -> I& { return c.model.vocab_size; },
               "Vocabulary size (rows of the embedding and the output head)."),
      field<I>("model.n_layers", [](Config& c) -> I& { return c.model.n_layers; },
               "Number of transformer blocks."),
      field<I>("model.d_model", [](Config& c) -> I& { return c.model.d_model; },
               "Width of the residual stream."),
      field<I>("model.n_heads", [](Config& c) -> I& { return c.model.n_heads; },
               "Attention query heads; must divide d_model."),
      field<I>("model.n_kv_heads", [](Config& c) -> I& { return c.model.n_kv_heads; },
               "Key/value heads (GQA; 1 is MQA, n_heads is MHA); must divide n_heads."),
      field<I>("model.d_ff", [](Config& c) -> I& { return c.model.d_ff; },
               "Hidden width of the feed-forward block."),
      field<I>("model.max_seq_len", [](Config& c) -> I& { return c.model.max_seq_len; },
               "Longest sequence the model accepts (size of learned position tables)."),
      field<S>("model.norm", [](Config& c) -> S& { return c.model.norm; }, "Normalisation layer.",
               {"layernorm", "rmsnorm"}),
      field<S>("model.activation", [](Config& c) -> S& { return c.model.activation; },
               "Feed-forward activation: tanh-GELU MLP or SwiGLU (gate, up, down).", {"gelu", "swiglu"}),
      field<S>("model.position", [](Config& c) -> S& { return c.model.position; },
               "Position encoding: learned absolute table or rotary.", {"learned", "rope"}),
      field<F>("model.rope_theta", [](Config& c) -> F& { return c.model.rope_theta; },
               "RoPE base frequency."),
      field<B>("model.tie_embeddings", [](Config& c) -> B& { return c.model.tie_embeddings; },
               "Share the token embedding with the output head."),
      field<F>("model.norm_eps", [](Config& c) -> F& { return c.model.norm_eps; },
               "Epsilon inside the norms."),
      field<B>("model.bias", [](Config& c) -> B& { return c.model.bias; },
               "Biases in the linear layers (GPT-2 has them, Llama does not)."),
      field<I>("model.moe.n_experts", [](Config& c) -> I& { return c.model.moe.n_experts; },
               "Experts per MoE layer; 0 makes every FFN dense."),
      field<I>("model.moe.top_k", [](Config& c) -> I& { return c.model.moe.top_k; },
               "Experts each token is routed to."),
      field<F>("model.moe.capacity_factor", [](Config& c) -> F& { return c.model.moe.capacity_factor; },
               "Expert capacity as a multiple of the even share of token-choices; 0: dropless."),
      field<F>("model.moe.aux_loss_coef", [](Config& c) -> F& { return c.model.moe.aux_loss_coef; },
               "Weight of the load-balancing loss."),
      field<F>("model.moe.z_loss_coef", [](Config& c) -> F& { return c.model.moe.z_loss_coef; },
               "Weight of the router z-loss."),
      field<I>("model.moe.every", [](Config& c) -> I& { return c.model.moe.every; },
               "An MoE FFN in every `every`-th layer (the others dense)."),
      // parallel
      field<I>("parallel.dp", [](Config& c) -> I& { return c.parallel.dp; }, "Data-parallel size."),
      field<I>("parallel.tp", [](Config& c) -> I& { return c.parallel.tp; },
               "Tensor-parallel size (column/row split)."),
      field<I>("parallel.pp", [](Config& c) -> I& { return c.parallel.pp; },
               "Pipeline-parallel stages."),
      field<I>("parallel.sp", [](Config& c) -> I& { return c.parallel.sp; },
               "Sequence (context) parallel size, ring attention."),
      field<I>("parallel.ep", [](Config& c) -> I& { return c.parallel.ep; },
               "Expert-parallel size; divides dp*sp."),
      field<I>("parallel.zero", [](Config& c) -> I& { return c.parallel.zero; },
               "ZeRO stage over dp: 0 none, 1 optimizer state, 2 + gradients, 3 + parameters "
               "(docs/zero.md)."),
      field<B>("parallel.tp_sequence_parallel",
               [](Config& c) -> B& { return c.parallel.tp_sequence_parallel; },
               "Split norm/dropout regions over tp (reduce-scatter/all-gather)."),
      field<S>("parallel.pp_schedule", [](Config& c) -> S& { return c.parallel.pp_schedule; },
               "Pipeline schedule.", {"gpipe", "1f1b", "interleaved"}),
      field<I>("parallel.virtual_stages", [](Config& c) -> I& { return c.parallel.virtual_stages; },
               "Model chunks per pipeline rank (interleaved schedule)."),
      field<std::vector<int64_t>>(
          "parallel.pp_layers", [](Config& c) -> std::vector<int64_t>& { return c.parallel.pp_layers; },
          "Layers per virtual stage, in model order (pp x virtual_stages entries summing to "
          "model.n_layers); empty: an even split, the remainder to the earliest stages."),
      field<B>("parallel.offload.optimizer", [](Config& c) -> B& { return c.parallel.offload.optimizer; },
               "Keep master weights, optimizer state (and under ZeRO 2/3 the gradient shards) in "
               "host memory; AdamW runs there."),
      field<B>("parallel.offload.params", [](Config& c) -> B& { return c.parallel.offload.params; },
               "Keep the parameter shards in host memory between uses; needs parallel.zero 3."),
      field<S>("parallel.backend", [](Config& c) -> S& { return c.parallel.backend; },
               "Communication backend; auto: nccl when training on CUDA with a GPU for each rank, mpi otherwise (CUDA tensors staged through host memory).",
               {"auto", "nccl", "mpi"}),
      field<F>("parallel.timeout_s", [](Config& c) -> F& { return c.parallel.timeout_s; },
               "Seconds a rank may wait in one communication before the run ends, naming it (0: never)."),
      field<F>("parallel.bucket_mb", [](Config& c) -> F& { return c.parallel.bucket_mb; },
               "Gradient bucket size in MiB (the dp all-reduce; ZeRO 2/3's reduce-scatter)."),
      // train
      field<S>("train.device", [](Config& c) -> S& { return c.train.device; },
               "Where to train; auto: cuda when a GPU is visible.", {"auto", "cpu", "cuda"}),
      field<S>("train.precision", [](Config& c) -> S& { return c.train.precision; },
               "Compute precision; bf16/fp16 keep fp32 master weights.", {"fp32", "bf16", "fp16"}),
      field<I>("train.seq_len", [](Config& c) -> I& { return c.train.seq_len; },
               "Tokens per training sequence; at most model.max_seq_len."),
      field<I>("train.micro_batch", [](Config& c) -> I& { return c.train.micro_batch; },
               "Sequences per forward/backward on one data-parallel rank."),
      field<I>("train.global_batch", [](Config& c) -> I& { return c.train.global_batch; },
               "Sequences per optimizer step over all ranks (= micro_batch x accumulation x dp)."),
      field<I>("train.steps", [](Config& c) -> I& { return c.train.steps; },
               "Optimizer steps to run."),
      field<S>("train.recompute", [](Config& c) -> S& { return c.train.recompute; },
               "Activation recomputation: none, the attention core, or whole layers.",
               {"none", "selective", "full"}),
      field<F>("train.grad_clip", [](Config& c) -> F& { return c.train.grad_clip; },
               "Clip the global gradient norm to this; 0 disables."),
      field<I>("train.seed", [](Config& c) -> I& { return c.train.seed; },
               "Seed of initialisation and data order."),
      field<I>("train.log_every", [](Config& c) -> I& { return c.train.log_every; },
               "Steps between metrics lines."),
      field<I>("train.eval_every", [](Config& c) -> I& { return c.train.eval_every; },
               "Steps between validation passes; 0 disables."),
      field<I>("train.max_bad_steps", [](Config& c) -> I& { return c.train.max_bad_steps; },
               "Steps in a row with a non-finite loss or gradient (each skipped) before the run aborts."),
      field<I>("train.eval_batches", [](Config& c) -> I& { return c.train.eval_batches; },
               "Global batches in one validation pass."),
      field<S>("train.out_dir", [](Config& c) -> S& { return c.train.out_dir; },
               "Run directory: metrics.jsonl, log, checkpoints."),
      // optim
      field<F>("optim.lr", [](Config& c) -> F& { return c.optim.lr; }, "Peak learning rate."),
      field<F>("optim.min_lr", [](Config& c) -> F& { return c.optim.min_lr; },
               "Learning rate at the end of the decay."),
      field<I>("optim.warmup_steps", [](Config& c) -> I& { return c.optim.warmup_steps; },
               "Linear warmup steps from 0 to lr."),
      field<S>("optim.schedule", [](Config& c) -> S& { return c.optim.schedule; },
               "Decay after warmup, from lr to min_lr over the remaining steps.",
               {"cosine", "linear", "constant"}),
      field<std::array<double, 2>>("optim.betas",
                                   [](Config& c) -> std::array<double, 2>& { return c.optim.betas; },
                                   "AdamW beta1, beta2."),
      field<F>("optim.eps", [](Config& c) -> F& { return c.optim.eps; }, "AdamW epsilon."),
      field<F>("optim.weight_decay", [](Config& c) -> F& { return c.optim.weight_decay; },
               "Decoupled weight decay (not applied to norms, biases and embeddings unless decay_all)."),
      field<B>("optim.decay_all", [](Config& c) -> B& { return c.optim.decay_all; },
               "Apply weight decay to norms, biases and embeddings too."),
      // data
      field<S>("data.train", [](Config& c) -> S& { return c.data.train; },
               "HDF5 token dataset for training (strata tokenize makes it)."),
      field<S>("data.val", [](Config& c) -> S& { return c.data.val; },
               "HDF5 token dataset for validation."),
      field<S>("data.tokenizer", [](Config& c) -> S& { return c.data.tokenizer; },
               "Folder with the GPT-2 encoder.json and vocab.bpe."),
      // checkpoint
      field<S>("checkpoint.dir", [](Config& c) -> S& { return c.checkpoint.dir; },
               "Checkpoint folder; empty means <train.out_dir>/checkpoints."),
      field<I>("checkpoint.every", [](Config& c) -> I& { return c.checkpoint.every; },
               "Steps between checkpoints; 0 saves only at the end."),
      field<I>("checkpoint.keep", [](Config& c) -> I& { return c.checkpoint.keep; },
               "Newest checkpoints kept; 0 keeps all."),
  };
}

// Levenshtein distance, for "did you mean".
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

const ConfigField& find_field(const std::string& path, const std::string& source) {
  const auto& schema = config_schema();
  for (const auto& f : schema)
    if (f.path == path) return f;
  const ConfigField* nearest = &schema.front();
  size_t best = SIZE_MAX;
  for (const auto& f : schema) {
    size_t d = edit_distance(path, f.path);
    if (d < best) {
      best = d;
      nearest = &f;
    }
  }
  STRATA_FAIL(source, ": unknown key '", path, "' (did you mean '", nearest->path, "'?)");
}

// Walks a mapping, setting every leaf (scalar or list) through the schema.
void apply_node(Config& config, const YAML::Node& node, const std::string& prefix,
                const std::string& source) {
  for (const auto& item : node) {
    // A key must be a plain name: YAML also allows a mapping or a list as a key ("{a: 1}: 2").
    STRATA_CHECK(item.first.IsScalar(), source, ": a key ", prefix.empty() ? "at the top level" : "under '" + prefix + "'",
                 " is not a name: '", node_text(item.first), "'");
    const std::string key = item.first.as<std::string>();
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    const YAML::Node& value = item.second;
    bool is_section = false;  // some key lives under this path
    for (const auto& f : config_schema()) is_section |= f.path.rfind(path + ".", 0) == 0;
    if (is_section) {
      STRATA_CHECK(value.IsMap() || value.IsNull(), source, ": '", path,
                   "' is a section and takes a mapping of keys, got '", node_text(value), "'");
      if (value.IsMap()) apply_node(config, value, path, source);
    } else if (value.IsMap() && value.size() > 0 &&
               std::none_of(config_schema().begin(), config_schema().end(),
                            [&](const ConfigField& f) { return f.path == path; })) {
      // A misspelt section: report its first key's full path ("trian.steps"), whose nearest
      // valid name points at the right section and key.
      apply_node(config, value, path, source);
    } else {
      const ConfigField& f = find_field(path, source);
      try {
        f.set(config, value);
      } catch (const Error& e) {
        throw Error(source + ": " + e.what());
      }
    }
  }
}

}  // namespace

const std::vector<ConfigField>& config_schema() {
  static const std::vector<ConfigField> schema = make_schema();
  return schema;
}

void apply_override(Config& config, const std::string& assignment) {
  const auto eq = assignment.find('=');
  STRATA_CHECK(eq != std::string::npos && eq > 0, "--set '", assignment,
               "': expected key.path=value");
  const std::string path = assignment.substr(0, eq);
  const std::string source = "--set " + assignment;
  const ConfigField& f = find_field(path, source);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    STRATA_FAIL(source, ": value is not valid YAML: ", e.msg);
  }
  if (!value.IsDefined() || value.IsNull()) value = YAML::Node(std::string());
  try {
    f.set(config, value);
  } catch (const Error& e) {
    throw Error(source + ": " + e.what());
  }
}

Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  Config config;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    STRATA_FAIL(source, ": not valid YAML at line ", e.mark.line + 1, ", column ",
                e.mark.column + 1, ": ", e.msg);
  }
  if (root.IsDefined() && !root.IsNull()) {
    STRATA_CHECK(root.IsMap(), source, ": the top level must be a mapping of sections (model, "
                                       "parallel, train, optim, data, checkpoint)");
    try {
      apply_node(config, root, "", source);
    } catch (const YAML::Exception& e) {  // a conversion the checks above did not foresee
      STRATA_FAIL(source, ": cannot read it at line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg);
    }
  }
  for (const auto& o : overrides) apply_override(config, o);
  validate_config(config);
  return config;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  STRATA_CHECK(in.good(), "config file '", path, "' cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path, overrides);
}

void validate_config(const Config& c) {
  auto positive = [](const char* key, double v) {
    STRATA_CHECK(v > 0, "key '", key, "' must be positive, got ", v);
  };
  const ModelConfig& m = c.model;
  for (auto [key, v] : {std::pair{"model.vocab_size", m.vocab_size}, {"model.n_layers", m.n_layers},
                        {"model.d_model", m.d_model}, {"model.n_heads", m.n_heads},
                        {"model.n_kv_heads", m.n_kv_heads}, {"model.d_ff", m.d_ff},
                        {"model.max_seq_len", m.max_seq_len}})
    positive(key, static_cast<double>(v));
  STRATA_CHECK(m.d_model % m.n_heads == 0, "key 'model.n_heads': ", m.n_heads,
               " heads do not divide model.d_model = ", m.d_model);
  STRATA_CHECK(m.n_heads % m.n_kv_heads == 0, "key 'model.n_kv_heads': ", m.n_kv_heads,
               " kv heads do not divide model.n_heads = ", m.n_heads);
  STRATA_CHECK(m.position != "rope" || m.head_dim() % 2 == 0, "key 'model.position': rope needs an "
               "even head dimension, but d_model / n_heads = ", m.head_dim());
  positive("model.rope_theta", m.rope_theta);
  positive("model.norm_eps", m.norm_eps);
  STRATA_CHECK(m.moe.n_experts >= 0, "key 'model.moe.n_experts' must be >= 0, got ", m.moe.n_experts);
  if (m.moe.n_experts > 0) {
    STRATA_CHECK(m.moe.top_k >= 1 && m.moe.top_k <= m.moe.n_experts, "key 'model.moe.top_k': ",
                 m.moe.top_k, " must be between 1 and model.moe.n_experts = ", m.moe.n_experts);
    STRATA_CHECK(m.moe.capacity_factor >= 0, "key 'model.moe.capacity_factor' must be >= 0 (0: dropless), got ",
                 m.moe.capacity_factor);
    positive("model.moe.every", static_cast<double>(m.moe.every));
    STRATA_CHECK(m.moe.aux_loss_coef >= 0, "key 'model.moe.aux_loss_coef' must be >= 0");
    STRATA_CHECK(m.moe.z_loss_coef >= 0, "key 'model.moe.z_loss_coef' must be >= 0");
  }

  const ParallelConfig& p = c.parallel;
  for (auto [key, v] : {std::pair{"parallel.dp", p.dp}, {"parallel.tp", p.tp}, {"parallel.pp", p.pp},
                        {"parallel.sp", p.sp}, {"parallel.ep", p.ep},
                        {"parallel.virtual_stages", p.virtual_stages}})
    positive(key, static_cast<double>(v));
  STRATA_CHECK(p.zero >= 0 && p.zero <= 3, "key 'parallel.zero' must be 0, 1, 2 or 3, got ", p.zero);
  STRATA_CHECK((p.dp * p.sp) % p.ep == 0, "key 'parallel.ep': ep=", p.ep, " does not divide dp*sp=",
               p.dp * p.sp);
  STRATA_CHECK(p.ep == 1 || (m.moe.n_experts > 0 && m.moe.n_experts % p.ep == 0),
               "key 'parallel.ep': ep=", p.ep, " needs model.moe.n_experts divisible by it, got ",
               m.moe.n_experts);
  positive("parallel.bucket_mb", p.bucket_mb);
  STRATA_CHECK(p.timeout_s >= 0, "key 'parallel.timeout_s' must be >= 0, got ", p.timeout_s);

  const TrainConfig& t = c.train;
  positive("train.seq_len", static_cast<double>(t.seq_len));
  STRATA_CHECK(t.seq_len <= m.max_seq_len, "key 'train.seq_len': ", t.seq_len,
               " exceeds model.max_seq_len = ", m.max_seq_len);
  positive("train.micro_batch", static_cast<double>(t.micro_batch));
  positive("train.global_batch", static_cast<double>(t.global_batch));
  STRATA_CHECK(t.global_batch % (t.micro_batch * p.dp) == 0, "key 'train.global_batch': ",
               t.global_batch, " is not a multiple of train.micro_batch x parallel.dp = ",
               t.micro_batch, " x ", p.dp);
  STRATA_CHECK(t.steps >= 0, "key 'train.steps' must be >= 0, got ", t.steps);
  STRATA_CHECK(t.grad_clip >= 0, "key 'train.grad_clip' must be >= 0, got ", t.grad_clip);
  STRATA_CHECK(t.max_bad_steps >= 1, "key 'train.max_bad_steps' must be >= 1, got ", t.max_bad_steps);
  positive("train.log_every", static_cast<double>(t.log_every));
  STRATA_CHECK(t.eval_every >= 0, "key 'train.eval_every' must be >= 0, got ", t.eval_every);
  positive("train.eval_batches", static_cast<double>(t.eval_batches));
  STRATA_CHECK(!t.out_dir.empty(), "key 'train.out_dir' must not be empty");

  const OptimConfig& o = c.optim;
  positive("optim.lr", o.lr);
  STRATA_CHECK(o.min_lr >= 0 && o.min_lr <= o.lr, "key 'optim.min_lr': ", o.min_lr,
               " must be between 0 and optim.lr = ", o.lr);
  STRATA_CHECK(o.warmup_steps >= 0, "key 'optim.warmup_steps' must be >= 0, got ", o.warmup_steps);
  for (int i = 0; i < 2; ++i)
    STRATA_CHECK(o.betas[i] >= 0 && o.betas[i] < 1, "key 'optim.betas': beta", i + 1, " = ",
                 o.betas[i], " must be in [0, 1)");
  positive("optim.eps", o.eps);
  STRATA_CHECK(o.weight_decay >= 0, "key 'optim.weight_decay' must be >= 0, got ", o.weight_decay);

  STRATA_CHECK(c.checkpoint.every >= 0, "key 'checkpoint.every' must be >= 0");
  STRATA_CHECK(c.checkpoint.keep >= 0, "key 'checkpoint.keep' must be >= 0");
}

std::string config_to_yaml(const Config& config) {
  // Nested mappings in schema order: "model.moe.top_k" goes under model: moe:.
  std::ostringstream out;
  std::vector<std::string> open;  // the sections currently open
  for (const auto& f : config_schema()) {
    std::vector<std::string> parts;
    std::stringstream ss(f.path);
    for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
    size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() && open[common] == parts[common])
      ++common;
    open.resize(common);
    for (size_t i = common; i + 1 < parts.size(); ++i) {
      out << std::string(2 * i, ' ') << parts[i] << ":\n";
      open.push_back(parts[i]);
    }
    out << std::string(2 * (parts.size() - 1), ' ') << parts.back() << ": " << f.get(config) << "\n";
  }
  return out.str();
}

std::string config_reference_markdown() {
  const Config defaults;
  std::ostringstream out;
  out << "# Configuration reference\n\n"
      << "A run is configured by one YAML file with the sections below; every key has the default\n"
      << "shown, and `--set key.path=value` overrides any key on the command line (the value is\n"
      << "read as YAML). Unknown keys are refused with the nearest valid name.\n\n"
      << "This page is generated from the schema in `src/io/config.cpp` by\n"
      << "`strata config --reference`; a test keeps the two in step.\n";
  std::string section;
  for (const auto& f : config_schema()) {
    std::string top = f.path.substr(0, f.path.find('.'));
    if (top != section) {
      section = top;
      out << "\n## " << section << "\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n";
    }
    std::string doc = f.doc;
    if (!f.choices.empty()) {
      doc += " One of:";
      for (size_t i = 0; i < f.choices.size(); ++i) doc += (i ? ", `" : " `") + f.choices[i] + "`";
      doc += ".";
    }
    out << "| `" << f.path << "` | " << f.type << " | `" << f.get(defaults) << "` | " << doc << " |\n";
  }
  return out.str();
}

}  // namespace strata
