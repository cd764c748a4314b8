#include "tools/convert.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "comm/process_grid.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "parallel/pipeline.h"
#include "parallel/zero.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace strata {

namespace {

std::string fnv_hex(const Tensor& t) { return hex64(fnv1a(kFnvBasis, t.raw(), t.nbytes())); }

// Every tensor of a checkpoint read whole, in its stored dtype.
std::map<std::string, Tensor> read_whole(const std::string& path, const std::vector<std::string>& names = {}) {
  const auto stored = checkpoint_tensors(path);
  std::map<std::string, Tensor> out;
  std::vector<CheckpointEntry> entries;
  for (const auto& [name, info] : stored) {
    if (!names.empty() && std::find(names.begin(), names.end(), name) == names.end()) continue;
    out[name] = Tensor::empty(info.global_shape, info.dtype);
  }
  for (auto& [name, tensor] : out)
    entries.push_back({name, tensor.shape(), std::vector<int64_t>(tensor.shape().size(), 0), &tensor, true});
  load_checkpoint(path, entries);
  return out;
}

// A 2-D tensor transposed (a new contiguous tensor), any dtype.
Tensor transpose2d(const Tensor& t) {
  STRATA_CHECK(t.ndim() == 2, "transpose of ", t.describe());
  const Tensor src = t.contiguous();
  const int64_t rows = t.size(0), cols = t.size(1);
  const size_t e = t.element_size();
  Tensor out = Tensor::empty({cols, rows}, t.dtype());
  const auto* in = static_cast<const char*>(src.raw());
  auto* o = static_cast<char*>(out.raw());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) std::memcpy(o + (c * rows + r) * e, in + (r * cols + c) * e, e);
  return out;
}

// Tensors of equal trailing shape stacked along dim 0, and the reverse.
Tensor concat0(const std::vector<Tensor>& parts) {
  Shape shape = parts.front().shape();
  shape[0] = 0;
  for (const Tensor& p : parts) shape[0] += p.size(0);
  Tensor out = Tensor::empty(shape, parts.front().dtype());
  int64_t at = 0;
  for (const Tensor& p : parts) {
    Tensor dst = out.slice(0, at, at + p.size(0));
    dst.copy_from(p.contiguous());
    at += p.size(0);
  }
  return out;
}

Tensor rows_of(const Tensor& t, int64_t begin, int64_t end) { return t.slice(0, begin, end).contiguous(); }

void write_json(const fs::path& path, const nlohmann::ordered_json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  STRATA_CHECK(out.good(), "cannot write '", path.string(), "'");
}

// A finished output folder appears only whole: written under a hidden name, renamed at the end.
struct StagedDir {
  fs::path final_path, partial;
  explicit StagedDir(const std::string& dir) : final_path(dir) {
    STRATA_CHECK(!fs::exists(final_path), "output '", dir, "' already exists; remove it or pick another");
    partial = final_path.parent_path() / ("." + final_path.filename().string() + ".partial");
    fs::remove_all(partial);
    fs::create_directories(partial);
  }
  void commit() const { fs::rename(partial, final_path); }
};

}  // namespace

Config checkpoint_config(const std::string& path) {
  return parse_config(read_manifest(path, false).config_yaml, "the config of checkpoint '" + path + "'");
}

std::string inspect_checkpoint(const std::string& path) {
  const Manifest m = read_manifest(path);
  const auto tensors = read_whole(path);
  const auto stored = checkpoint_tensors(path);
  std::ostringstream out;
  out << "checkpoint " << path << "\n";
  out << "format " << m.format << ", step " << m.step << "\nlayout";
  for (const auto& [k, v] : m.layout) out << " " << k << "=" << v;
  out << "\nfiles";
  int64_t bytes = 0;
  for (const auto& f : m.files) {
    out << " " << f.name << " (" << f.bytes << " bytes)";
    bytes += f.bytes;
  }
  out << "\n" << tensors.size() << " tensors, " << bytes << " bytes in files\n";
  for (const auto& [name, t] : tensors)
    out << "tensor " << name << " " << dtype_name(t.dtype()) << shape_string(t.shape()) << " " << t.nbytes()
        << " bytes fnv " << fnv_hex(t) << (stored.at(name).stored_elements > t.numel() ? " (slices overlap)" : "")
        << "\n";
  return out.str();
}

std::string reshard_checkpoint(const std::string& path, const Config& target, const std::string& out_dir) {
  const Manifest source = read_manifest(path);
  const auto stored = checkpoint_tensors(path);
  const ParallelConfig& par = target.parallel;
  check_layout(target);
  const int world = static_cast<int>(par.dp * par.tp * par.pp * par.sp);
  const int pp = static_cast<int>(par.pp), v = static_cast<int>(par.virtual_stages);
  const DType dtype = precision_dtype(target.train.precision);
  const std::string partial = begin_checkpoint(out_dir, source.step);
  std::vector<std::string> lines;
  try {
    for (int rank = 0; rank < world; ++rank) {
      const ProcessGrid grid(world, rank,
                             GridSizes{static_cast<int>(par.dp), pp, static_cast<int>(par.sp),
                                       static_cast<int>(par.tp), static_cast<int>(par.ep)});
      const TensorParallel tp{nullptr, grid.coordinate(Axis::tp), par.tp, par.tp_sequence_parallel};
      const ExpertParallel ep{nullptr, grid.coordinate(Axis::ep), static_cast<int>(par.ep)};
      std::vector<ChunkSpec> chunks;
      if (pp > 1) chunks = pipeline_chunks(target.model.n_layers, pp, v, grid.coordinate(Axis::pp), par.pp_layers);
      // The parameters this rank holds, not allocated: only their names, shapes and slices.
      Transformer model(target.model, dtype, tp, chunks, {}, ep, ParamStorage{false, false});
      const bool sharded = par.zero >= 1 && par.dp > 1;
      std::vector<Tensor> tensors;
      std::vector<CheckpointEntry> entries;
      auto add = [&](const std::string& name, const Parameter& p, int64_t row_begin, int64_t rows, bool each_dp) {
        auto it = stored.find(name);
        STRATA_CHECK(it != stored.end(), "checkpoint '", path, "' has no tensor '", name, "'");
        std::vector<int64_t> offset = p.global_offset();
        if (!offset.empty()) offset[0] += row_begin;
        tensors.push_back(Tensor::empty(rows_shape(p.local, rows), it->second.dtype));
        entries.push_back({name, p.global_shape, offset, nullptr,
                           rows > 0 && writes_checkpoint_copy(p, grid, par, each_dp)});
      };
      tensors.reserve(model.params().all().size() * 4);
      for (auto& p : model.params().all()) {
        add(p->name, *p, 0, row_count(p->local), false);
        // Optimizer state, under ZeRO each dp rank's rows (parallel/zero.h).
        const auto [begin, end] = sharded ? zero_row_range(row_count(p->local), grid.coordinate(Axis::dp),
                                                           static_cast<int>(par.dp))
                                          : std::pair<int64_t, int64_t>{0, row_count(p->local)};
        for (const char* part : {"master", "exp_avg", "exp_avg_sq"}) {
          const std::string name = "optim/" + p->name + "/" + part;
          if (stored.count(name)) add(name, *p, begin, end - begin, sharded);
        }
      }
      for (size_t i = 0; i < entries.size(); ++i) entries[i].tensor = &tensors[i];
      std::vector<CheckpointEntry> reading;
      for (const auto& e : entries)
        if (e.write) reading.push_back(e);
      load_checkpoint(path, reading);
      lines.push_back(write_rank_file(partial, rank, entries));
    }
  } catch (...) {
    fs::remove_all(partial);
    throw;
  }
  Manifest m = source;
  m.config_yaml = config_to_yaml(target);
  m.layout = {{"world", world}, {"dp", par.dp}, {"tp", par.tp}, {"pp", par.pp}, {"sp", par.sp}, {"ep", par.ep}};
  return finish_checkpoint(out_dir, partial, m, lines);
}

void export_hf(const std::string& path, const std::string& out_dir, const std::string& tokenizer_dir,
               int64_t shard_bytes) {
  const Config config = checkpoint_config(path);
  const ModelConfig& c = config.model;
  STRATA_CHECK(c.moe.n_experts == 0, "--to-hf: mixture-of-experts models have no Hugging Face mapping here "
               "(model.moe.n_experts = ", c.moe.n_experts, ")");
  const bool gpt2 = c.arch == "gpt2";
  if (gpt2) {
    STRATA_CHECK(c.norm == "layernorm" && c.activation == "gelu" && c.position == "learned" && c.tie_embeddings &&
                     c.bias && c.n_kv_heads == c.n_heads,
                 "--to-hf: GPT2LMHeadModel needs layernorm, gelu, learned positions, tied embeddings, biases "
                 "and n_kv_heads = n_heads; this model has norm ", c.norm, ", activation ", c.activation,
                 ", position ", c.position, ", tie_embeddings ", c.tie_embeddings, ", bias ", c.bias,
                 ", n_kv_heads ", c.n_kv_heads);
  } else {
    STRATA_CHECK(c.norm == "rmsnorm" && c.activation == "swiglu" && c.position == "rope", "--to-hf: "
                 "LlamaForCausalLM needs rmsnorm, swiglu and rope; this model has norm ", c.norm, ", activation ",
                 c.activation, ", position ", c.position);
  }
  // The model's parameters (names and global shapes from a one-process model), read whole.
  Transformer names_only(c, precision_dtype(config.train.precision), {}, {}, {}, {}, ParamStorage{false, false});
  std::vector<std::string> wanted;
  for (auto& p : names_only.params().all()) wanted.push_back(p->name);
  std::map<std::string, Tensor> w = read_whole(path, wanted);
  auto take = [&](const std::string& name) {
    auto it = w.find(name);
    STRATA_CHECK(it != w.end(), "checkpoint '", path, "' has no tensor '", name, "'");
    return it->second;
  };
  std::vector<std::pair<std::string, Tensor>> out;
  const std::string dtype_name_hf = take("embed.tokens.weight").dtype() == DType::bf16   ? "bfloat16"
                                    : take("embed.tokens.weight").dtype() == DType::f16 ? "float16"
                                                                                        : "float32";
  nlohmann::ordered_json cfg;
  if (gpt2) {
    // Conv1D weights are [in, out]: Strata's [out, in] transposed; q, k, v side by side in c_attn.
    out.push_back({"transformer.wte.weight", take("embed.tokens.weight")});
    out.push_back({"transformer.wpe.weight", take("embed.positions.weight")});
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string s = "layers." + std::to_string(i) + ".", h = "transformer.h." + std::to_string(i) + ".";
      out.push_back({h + "ln_1.weight", take(s + "attn_norm.weight")});
      out.push_back({h + "ln_1.bias", take(s + "attn_norm.bias")});
      out.push_back({h + "attn.c_attn.weight", transpose2d(concat0({take(s + "attn.wq.weight"), take(s + "attn.wk.weight"),
                                                                   take(s + "attn.wv.weight")}))});
      out.push_back({h + "attn.c_attn.bias",
                     concat0({take(s + "attn.wq.bias"), take(s + "attn.wk.bias"), take(s + "attn.wv.bias")})});
      out.push_back({h + "attn.c_proj.weight", transpose2d(take(s + "attn.wo.weight"))});
      out.push_back({h + "attn.c_proj.bias", take(s + "attn.wo.bias")});
      out.push_back({h + "ln_2.weight", take(s + "mlp_norm.weight")});
      out.push_back({h + "ln_2.bias", take(s + "mlp_norm.bias")});
      out.push_back({h + "mlp.c_fc.weight", transpose2d(take(s + "mlp.fc.weight"))});
      out.push_back({h + "mlp.c_fc.bias", take(s + "mlp.fc.bias")});
      out.push_back({h + "mlp.c_proj.weight", transpose2d(take(s + "mlp.proj.weight"))});
      out.push_back({h + "mlp.c_proj.bias", take(s + "mlp.proj.bias")});
    }
    out.push_back({"transformer.ln_f.weight", take("final_norm.weight")});
    out.push_back({"transformer.ln_f.bias", take("final_norm.bias")});
    cfg = {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"vocab_size", c.vocab_size},
           {"n_positions", c.max_seq_len}, {"n_ctx", c.max_seq_len}, {"n_embd", c.d_model},
           {"n_layer", c.n_layers}, {"n_head", c.n_heads}, {"n_inner", c.d_ff},
           {"activation_function", "gelu_new"}, {"layer_norm_epsilon", c.norm_eps},
           {"resid_pdrop", 0.0}, {"embd_pdrop", 0.0}, {"attn_pdrop", 0.0}, {"tie_word_embeddings", true},
           {"bos_token_id", 50256}, {"eos_token_id", 50256}, {"torch_dtype", dtype_name_hf}};
  } else {
    // Linear weights are [out, in] in both. Strata's RoPE rotates the pairs (j, j + head_dim / 2)
    // of each head, as Hugging Face's rotate_half does, so q and k need no permutation.
    out.push_back({"model.embed_tokens.weight", take("embed.tokens.weight")});
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string s = "layers." + std::to_string(i) + ".", h = "model.layers." + std::to_string(i) + ".";
      out.push_back({h + "input_layernorm.weight", take(s + "attn_norm.weight")});
      for (const auto& [ours, theirs] : {std::pair{"wq", "q_proj"}, {"wk", "k_proj"}, {"wv", "v_proj"}, {"wo", "o_proj"}}) {
        out.push_back({h + "self_attn." + theirs + ".weight", take(s + "attn." + ours + ".weight")});
        if (c.bias) out.push_back({h + "self_attn." + theirs + ".bias", take(s + "attn." + ours + ".bias")});
      }
      out.push_back({h + "post_attention_layernorm.weight", take(s + "mlp_norm.weight")});
      for (const auto& [ours, theirs] : {std::pair{"gate", "gate_proj"}, {"up", "up_proj"}, {"down", "down_proj"}}) {
        out.push_back({h + "mlp." + theirs + ".weight", take(s + "mlp." + ours + ".weight")});
        if (c.bias) out.push_back({h + "mlp." + theirs + ".bias", take(s + "mlp." + ours + ".bias")});
      }
    }
    out.push_back({"model.norm.weight", take("final_norm.weight")});
    if (!c.tie_embeddings) out.push_back({"lm_head.weight", take("head.weight")});
    cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", c.vocab_size},
           {"hidden_size", c.d_model}, {"intermediate_size", c.d_ff}, {"num_hidden_layers", c.n_layers},
           {"num_attention_heads", c.n_heads}, {"num_key_value_heads", c.n_kv_heads},
           {"head_dim", c.head_dim()}, {"max_position_embeddings", c.max_seq_len}, {"rms_norm_eps", c.norm_eps},
           {"rope_theta", c.rope_theta}, {"hidden_act", "silu"}, {"attention_bias", c.bias}, {"mlp_bias", c.bias},
           {"tie_word_embeddings", c.tie_embeddings}, {"bos_token_id", 50256}, {"eos_token_id", 50256},
           {"torch_dtype", dtype_name_hf}};
  }

  StagedDir dir(out_dir);
  // Shards of at most shard_bytes (a tensor larger than that alone), with an index when several.
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  int64_t in_shard = 0;
  for (auto& entry : out) {
    const auto bytes = static_cast<int64_t>(entry.second.nbytes());
    if (in_shard > 0 && in_shard + bytes > shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(entry);
    in_shard += bytes;
  }
  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  if (shards.size() == 1) {
    write_safetensors((dir.partial / "model.safetensors").string(), shards[0], metadata);
  } else {
    nlohmann::ordered_json index;
    int64_t total = 0;
    for (size_t i = 0; i < shards.size(); ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      write_safetensors((dir.partial / name).string(), shards[i], metadata);
      for (const auto& [tensor_name, t] : shards[i]) {
        index["weight_map"][tensor_name] = name;
        total += static_cast<int64_t>(t.nbytes());
      }
    }
    index["metadata"] = {{"total_size", total}};
    write_json(dir.partial / "model.safetensors.index.json", index);
  }
  write_json(dir.partial / "config.json", cfg);
  if (!tokenizer_dir.empty()) {
    // The GPT-2 BPE files under the names Hugging Face's GPT2Tokenizer reads.
    const fs::path t(tokenizer_dir);
    for (const auto& [from, to] : {std::pair{"encoder.json", "vocab.json"}, {"vocab.bpe", "merges.txt"}}) {
      STRATA_CHECK(fs::exists(t / from), "tokenizer folder '", tokenizer_dir, "' has no ", from);
      fs::copy_file(t / from, dir.partial / to);
    }
    write_json(dir.partial / "tokenizer_config.json",
               {{"tokenizer_class", "GPT2Tokenizer"}, {"model_max_length", c.max_seq_len},
                {"bos_token", "<|endoftext|>"}, {"eos_token", "<|endoftext|>"}, {"unk_token", "<|endoftext|>"}});
  }
  dir.commit();
}

std::string import_hf(const std::string& hf_dir, const std::string& out_dir) {
  const fs::path dir(hf_dir);
  STRATA_CHECK(fs::exists(dir / "config.json"), "'", hf_dir, "' has no config.json (not a Hugging Face model folder)");
  nlohmann::json cfg;
  try {
    std::ifstream in(dir / "config.json");
    cfg = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    STRATA_FAIL("'", (dir / "config.json").string(), "' is not valid JSON: ", e.what());
  }
  const std::string type = cfg.value("model_type", "");
  Config config;
  ModelConfig& c = config.model;
  try {
    if (type == "gpt2") {
      c.arch = "gpt2";
      c.vocab_size = cfg.at("vocab_size");
      c.max_seq_len = cfg.at("n_positions");
      c.d_model = cfg.at("n_embd");
      c.n_layers = cfg.at("n_layer");
      c.n_heads = c.n_kv_heads = cfg.at("n_head");
      c.d_ff = cfg.contains("n_inner") && !cfg["n_inner"].is_null() ? cfg["n_inner"].get<int64_t>() : 4 * c.d_model;
      c.norm = "layernorm";
      c.activation = "gelu";
      c.position = "learned";
      c.tie_embeddings = true;
      c.bias = true;
      c.norm_eps = cfg.value("layer_norm_epsilon", 1e-5);
    } else if (type == "llama") {
      c.arch = "llama";
      c.vocab_size = cfg.at("vocab_size");
      c.max_seq_len = cfg.at("max_position_embeddings");
      c.d_model = cfg.at("hidden_size");
      c.n_layers = cfg.at("num_hidden_layers");
      c.n_heads = cfg.at("num_attention_heads");
      c.n_kv_heads = cfg.value("num_key_value_heads", c.n_heads);
      c.d_ff = cfg.at("intermediate_size");
      c.norm = "rmsnorm";
      c.activation = "swiglu";
      c.position = "rope";
      c.tie_embeddings = cfg.value("tie_word_embeddings", false);
      c.bias = cfg.value("attention_bias", false);
      c.norm_eps = cfg.value("rms_norm_eps", 1e-5);
      c.rope_theta = cfg.value("rope_theta", 10000.0);
    } else {
      STRATA_FAIL("'", (dir / "config.json").string(), "': model_type '", type,
                  "' is not one Strata imports (gpt2, llama)");
    }
  } catch (const nlohmann::json::exception& e) {
    STRATA_FAIL("'", (dir / "config.json").string(), "' lacks a field Strata needs: ", e.what());
  }
  // The safetensors files: one, or those an index lists.
  std::vector<SafetensorsFile> files;
  if (fs::exists(dir / "model.safetensors.index.json")) {
    std::ifstream in(dir / "model.safetensors.index.json");
    std::vector<std::string> names;
    try {
      const nlohmann::json index = nlohmann::json::parse(in);  // kept: the loop below iterates into it
      for (const auto& [tensor, file] : index.at("weight_map").items())
        if (std::find(names.begin(), names.end(), file.get<std::string>()) == names.end())
          names.push_back(file.get<std::string>());
    } catch (const nlohmann::json::exception& e) {
      STRATA_FAIL("'", (dir / "model.safetensors.index.json").string(), "' is not a valid index: ", e.what());
    }
    for (const auto& n : names) files.push_back(SafetensorsFile::open((dir / n).string()));
  } else {
    STRATA_CHECK(fs::exists(dir / "model.safetensors"), "'", hf_dir, "' has no model.safetensors");
    files.push_back(SafetensorsFile::open((dir / "model.safetensors").string()));
  }
  auto find = [&](std::initializer_list<std::string> names) -> Tensor {
    for (const auto& n : names)
      for (const auto& f : files)
        if (f.contains(n)) return f.read(n);
    STRATA_FAIL("'", hf_dir, "' has no tensor '", *names.begin(), "'");
  };
  std::map<std::string, Tensor> w;
  const int64_t d = c.d_model;
  if (c.arch == "gpt2") {
    // The "transformer." prefix is absent in some GPT-2 files (the original "gpt2" repository).
    auto g = [&](const std::string& n) { return find({"transformer." + n, n}); };
    w["embed.tokens.weight"] = g("wte.weight");
    w["embed.positions.weight"] = g("wpe.weight");
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string s = "layers." + std::to_string(i) + ".", h = "h." + std::to_string(i) + ".";
      w[s + "attn_norm.weight"] = g(h + "ln_1.weight");
      w[s + "attn_norm.bias"] = g(h + "ln_1.bias");
      const Tensor qkv = transpose2d(g(h + "attn.c_attn.weight"));  // [3d, d]
      const Tensor qkv_bias = g(h + "attn.c_attn.bias");
      STRATA_CHECK(qkv.size(0) == 3 * d, "'", hf_dir, "': ", h, "attn.c_attn.weight is not [", d, ", ", 3 * d, "]");
      const char* parts[3] = {"wq", "wk", "wv"};
      for (int k = 0; k < 3; ++k) {
        w[s + "attn." + parts[k] + ".weight"] = rows_of(qkv, k * d, (k + 1) * d);
        w[s + "attn." + parts[k] + ".bias"] = rows_of(qkv_bias, k * d, (k + 1) * d);
      }
      w[s + "attn.wo.weight"] = transpose2d(g(h + "attn.c_proj.weight"));
      w[s + "attn.wo.bias"] = g(h + "attn.c_proj.bias");
      w[s + "mlp_norm.weight"] = g(h + "ln_2.weight");
      w[s + "mlp_norm.bias"] = g(h + "ln_2.bias");
      w[s + "mlp.fc.weight"] = transpose2d(g(h + "mlp.c_fc.weight"));
      w[s + "mlp.fc.bias"] = g(h + "mlp.c_fc.bias");
      w[s + "mlp.proj.weight"] = transpose2d(g(h + "mlp.c_proj.weight"));
      w[s + "mlp.proj.bias"] = g(h + "mlp.c_proj.bias");
    }
    w["final_norm.weight"] = g("ln_f.weight");
    w["final_norm.bias"] = g("ln_f.bias");
  } else {
    w["embed.tokens.weight"] = find({"model.embed_tokens.weight"});
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string s = "layers." + std::to_string(i) + ".", h = "model.layers." + std::to_string(i) + ".";
      w[s + "attn_norm.weight"] = find({h + "input_layernorm.weight"});
      for (const auto& [ours, theirs] : {std::pair{"wq", "q_proj"}, {"wk", "k_proj"}, {"wv", "v_proj"}, {"wo", "o_proj"}}) {
        w[s + "attn." + ours + ".weight"] = find({h + "self_attn." + theirs + ".weight"});
        if (c.bias) w[s + "attn." + ours + ".bias"] = find({h + "self_attn." + theirs + ".bias"});
      }
      w[s + "mlp_norm.weight"] = find({h + "post_attention_layernorm.weight"});
      for (const auto& [ours, theirs] : {std::pair{"gate", "gate_proj"}, {"up", "up_proj"}, {"down", "down_proj"}}) {
        w[s + "mlp." + ours + ".weight"] = find({h + "mlp." + theirs + ".weight"});
        if (c.bias) w[s + "mlp." + ours + ".bias"] = find({h + "mlp." + theirs + ".bias"});
      }
    }
    w["final_norm.weight"] = find({"model.norm.weight"});
    if (!c.tie_embeddings) w["head.weight"] = find({"lm_head.weight"});
  }
  // Every parameter the model has, with the shape it expects; precision from the weights.
  const DType dtype = w.at("embed.tokens.weight").dtype();
  config.train.precision = dtype == DType::bf16 ? "bf16" : dtype == DType::f16 ? "fp16" : "fp32";
  config.train.seq_len = std::min(config.train.seq_len, c.max_seq_len);
  validate_config(config);
  Transformer model(c, dtype, {}, {}, {}, {}, ParamStorage{false, false});
  std::vector<CheckpointEntry> entries;
  for (auto& p : model.params().all()) {
    auto it = w.find(p->name);
    STRATA_CHECK(it != w.end(), "'", hf_dir, "': nothing maps to parameter '", p->name, "'");
    STRATA_CHECK(it->second.shape() == p->global_shape, "'", hf_dir, "': ", p->name, " is ",
                 shape_string(it->second.shape()), " but config.json implies ", shape_string(p->global_shape));
    STRATA_CHECK(it->second.dtype() == dtype, "'", hf_dir, "': ", p->name, " is ", dtype_name(it->second.dtype()),
                 ", the embedding ", dtype_name(dtype), " (mixed dtypes are not imported)");
    entries.push_back({p->name, p->global_shape, std::vector<int64_t>(p->global_shape.size(), 0), &it->second, true});
  }
  Manifest m;
  m.step = 0;
  m.config_yaml = config_to_yaml(config);
  m.layout = {{"world", 1}, {"dp", 1}, {"tp", 1}, {"pp", 1}, {"sp", 1}, {"ep", 1}};
  m.state = {{"source", fs::absolute(dir).string()}};
  const std::string partial = begin_checkpoint(out_dir, 0);
  std::vector<std::string> lines;
  try {
    lines.push_back(write_rank_file(partial, 0, entries));
  } catch (...) {
    fs::remove_all(partial);
    throw;
  }
  return finish_checkpoint(out_dir, partial, m, lines);
}

}  // namespace strata
