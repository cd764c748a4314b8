// `strata convert`: checkpoints between parallel layouts, into one file, and to and from Hugging
// Face model directories. Every function reads a checkpoint through load_checkpoint (which checks
// the manifest's format, every file's size and checksum, and each tensor's shape) and writes
// through a partial folder or file renamed when complete, so a refused input leaves nothing.
#pragma once

#include <string>

#include "io/config.h"

namespace strata {

// The checkpoint's step, layout, files, and every tensor with shape, dtype, size and a checksum
// of its assembled global values (FNV-1a 64 of the bytes): two checkpoints hold the same tensors
// exactly when these lines agree, whatever their layouts.
std::string inspect_checkpoint(const std::string& path);

// Writes the checkpoint at `path` again under the layout of `target` (its parallel section; its
// model must be the checkpoint's) into `out_dir`/step-N; returns that folder. One process's
// layout (dp = tp = pp = sp = ep = 1) gives one file of whole tensors.
std::string reshard_checkpoint(const std::string& path, const Config& target, const std::string& out_dir);

// The config a checkpoint was written with (its manifest's copy).
Config checkpoint_config(const std::string& path);

// A Hugging Face model directory from a checkpoint's weights: GPT2LMHeadModel for arch gpt2,
// LlamaForCausalLM for arch llama (model.safetensors, sharded with model.safetensors.index.json
// past `shard_bytes`; config.json; the GPT-2 tokenizer files from `tokenizer_dir` when given).
void export_hf(const std::string& path, const std::string& out_dir, const std::string& tokenizer_dir,
               int64_t shard_bytes = int64_t{5} << 30);

// A Strata checkpoint (step 0, weights only, one file) in `out_dir`/step-000000 from a Hugging Face
// GPT-2 or Llama directory: its config.json gives the model, safetensors its weights. Train from it
// with `strata train --init-from`.
std::string import_hf(const std::string& hf_dir, const std::string& out_dir);

}  // namespace strata
