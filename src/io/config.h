// The run's configuration: typed structs with defaults, read from one YAML file plus `--set`
// overrides. The schema (config_schema()) is the one list of keys: the parser, the error messages
// ("unknown key ... did you mean ..."), the YAML written into checkpoints and docs/config.md all
// come from it. Nothing below src/train sees YAML: layers get these structs.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"

namespace YAML {
class Node;
}

namespace strata {

struct OffloadConfig {
  bool optimizer = false;
  bool params = false;
};

struct ParallelConfig {
  int64_t dp = 1, tp = 1, pp = 1, sp = 1, ep = 1;
  int64_t zero = 0;  // 0..3
  bool tp_sequence_parallel = false;
  std::string pp_schedule = "1f1b";  // gpipe | 1f1b | interleaved
  int64_t virtual_stages = 1;
  std::vector<int64_t> pp_layers;  // layers per virtual stage; empty: an even split
  OffloadConfig offload;
  std::string backend = "auto";  // auto | nccl | mpi
  double bucket_mb = 25.0;
  double timeout_s = 1800;  // a communication operation waiting longer ends the run (0: never)
};

struct TrainConfig {
  std::string device = "auto";     // auto | cpu | cuda
  std::string precision = "bf16";  // fp32 | bf16 | fp16
  int64_t seq_len = 1024;
  int64_t micro_batch = 8;
  int64_t global_batch = 256;  // sequences per optimizer step
  int64_t steps = 1000;
  std::string recompute = "none";  // none | selective | full
  double grad_clip = 1.0;          // 0 disables clipping
  int64_t max_bad_steps = 25;      // abort after this many steps in a row with a non-finite loss or gradient
  int64_t seed = 1234;
  int64_t log_every = 10;
  int64_t eval_every = 200;  // 0 disables evaluation
  int64_t eval_batches = 20;
  std::string out_dir = "runs/default";
};

struct OptimConfig {
  double lr = 6.0e-4;
  double min_lr = 6.0e-5;
  int64_t warmup_steps = 100;
  std::string schedule = "cosine";  // cosine | linear | constant
  std::array<double, 2> betas = {0.9, 0.95};
  double eps = 1.0e-8;
  double weight_decay = 0.1;
  bool decay_all = false;  // also decay norms, biases and embeddings
};

struct DataConfig {
  std::string train = "data/brown/train.h5";
  std::string val = "data/brown/val.h5";
  std::string tokenizer = "data/gpt2";
};

struct CheckpointConfig {
  std::string dir;  // "" means <train.out_dir>/checkpoints
  int64_t every = 500;
  int64_t keep = 3;  // newest checkpoints kept; 0 keeps all
};

struct Config {
  ModelConfig model;
  ParallelConfig parallel;
  TrainConfig train;
  OptimConfig optim;
  DataConfig data;
  CheckpointConfig checkpoint;

  std::string checkpoint_dir() const;  // checkpoint.dir, or <train.out_dir>/checkpoints
};

// One key of the schema.
struct ConfigField {
  std::string path;                  // "model.n_layers"
  std::string type;                  // "int", "float", "bool", "string", "[float, float]"
  std::string doc;                   // one sentence
  std::vector<std::string> choices;  // allowed values of a string key; empty: any
  std::function<void(Config&, const YAML::Node&)> set;  // throws Error naming the key on a bad value
  std::function<std::string(const Config&)> get;        // the value as YAML text
};
const std::vector<ConfigField>& config_schema();

// Reads `path` (YAML), applies `overrides` ("key.path=value", value in YAML syntax) in order, and
// validates. Every problem throws an Error that names the file or override and the key.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from YAML text (`source` names it in messages).
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});
void apply_override(Config& config, const std::string& assignment);
// Range and consistency checks; throws an Error naming the first offending key.
void validate_config(const Config& config);

// The whole config as YAML (every key, in schema order): read back by parse_config it gives the
// same Config.
std::string config_to_yaml(const Config& config);
// docs/config.md's text: every key, its type, default and meaning.
std::string config_reference_markdown();

}  // namespace strata
