// `strata generate`: text from a checkpoint (any layout, or one imported from Hugging Face) with a
// KV cache; one process, or tensor-parallel over the ranks of mpirun (tp = the number of ranks).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "comm/launch_env.h"
#include "comm/mpi_session.h"
#include "comm/process_groups.h"
#include "core/compute_device.h"
#include "core/error.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "infer/generate.h"
#include "kernels/ops.h"
#include "tools/convert.h"
#include "train/trainer.h"

namespace strata::cli {

namespace {

// A 2-D f32 tensor as a NumPy .npy file (format 1.0: magic, header dict padded to 64 bytes, data).
void write_npy_f32(const std::string& path, const Tensor& t) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(t.size(0)) + ", " +
                       std::to_string(t.size(1)) + "), }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const auto n = static_cast<uint16_t>(header.size());
  out.put(static_cast<char>(n & 0xff));
  out.put(static_cast<char>(n >> 8));
  out << header;
  out.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
  STRATA_CHECK(out.good(), "cannot write '", path, "'");
}

}  // namespace

Command add_generate(CLI::App& app) {
  struct Options {
    std::string checkpoint, prompt_file, tokenizer, draft, quantize, eval, dump_logits, device = "auto";
    int64_t draft_tokens = 4;
    bool interactive = false;
    std::vector<std::string> prompts;
    int64_t max_tokens = 64;
    SamplingConfig sampling;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a checkpoint");
  cmd->add_option("--checkpoint", o->checkpoint, "Checkpoint folder (step-NNNNNN), any layout")->required();
  cmd->add_option("--prompt", o->prompts, "A prompt (repeatable: a batch); none: --prompt-file or stdin, a line each");
  cmd->add_option("--prompt-file", o->prompt_file, "Prompts, one a line");
  cmd->add_option("--max-tokens", o->max_tokens, "New tokens per prompt at most (default 64)");
  cmd->add_option("--temperature", o->sampling.temperature, "0 (default): greedy; else sample at this temperature");
  cmd->add_option("--top-k", o->sampling.top_k, "Sample from the k most likely tokens (0: all)");
  cmd->add_option("--top-p", o->sampling.top_p, "Sample from the smallest set holding this much mass (1: all)");
  cmd->add_option("--repetition-penalty", o->sampling.repetition_penalty, "Penalise tokens already seen (1: none)");
  cmd->add_option("--seed", o->sampling.seed, "Sampling seed: the same seed gives the same text");
  cmd->add_option("--device", o->device, "cpu, cuda, or auto (default): cuda when a GPU is visible")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  cmd->add_option("--quantize", o->quantize, "int8: weight-only int8 for the blocks' linear layers")
      ->check(CLI::IsMember({"int8"}));
  cmd->add_option("--eval", o->eval, "Print the perplexity of a text file (or a tokenized .h5) instead of generating");
  cmd->add_option("--dump-logits", o->dump_logits,
                  "Write the first prompt's logits (every position, f32) to FILE.npy and its token ids to "
                  "FILE.npy.tokens, instead of generating");
  cmd->add_flag("--interactive", o->interactive,
                "A conversation: each line on stdin gets a reply, earlier turns kept in the cache");
  cmd->add_option("--draft", o->draft, "Speculative decoding: a small model's checkpoint proposes tokens");
  cmd->add_option("--draft-tokens", o->draft_tokens, "Tokens the draft proposes per target forward (default 4)");
  cmd->add_option("--tokenizer", o->tokenizer, "GPT-2 tokenizer folder (default: the checkpoint's data.tokenizer)");
  return {cmd, [o] {
            STRATA_CHECK(o->max_tokens >= 1, "--max-tokens must be at least 1, got ", o->max_tokens);
            STRATA_CHECK(o->sampling.temperature >= 0, "--temperature must be >= 0, got ", o->sampling.temperature);
            STRATA_CHECK(o->sampling.top_k >= 0, "--top-k must be >= 0, got ", o->sampling.top_k);
            STRATA_CHECK(o->sampling.top_p > 0 && o->sampling.top_p <= 1, "--top-p must be in (0, 1], got ",
                         o->sampling.top_p);
            STRATA_CHECK(o->sampling.repetition_penalty > 0, "--repetition-penalty must be positive, got ",
                         o->sampling.repetition_penalty);
            const Config config = checkpoint_config(o->checkpoint);
            Tokenizer tokenizer = Tokenizer::from_directory(o->tokenizer.empty() ? config.data.tokenizer : o->tokenizer);
            std::vector<std::string> texts = o->prompts;
            if (texts.empty() && o->eval.empty() && !o->interactive) {
              std::ifstream file(o->prompt_file);
              STRATA_CHECK(o->prompt_file.empty() || file.good(), "cannot read --prompt-file '", o->prompt_file, "'");
              std::istream& in = o->prompt_file.empty() ? std::cin : file;
              for (std::string line; std::getline(in, line);)
                if (!line.empty()) texts.push_back(line);
            }
            STRATA_CHECK(!texts.empty() || !o->eval.empty() || o->interactive,
                         "no prompt: give --prompt, --prompt-file, or lines on stdin");
            std::vector<std::vector<int32_t>> prompts;
            for (const auto& t : texts) {
              prompts.push_back(tokenizer.encode(t));
              STRATA_CHECK(!prompts.back().empty(), "prompt '", t, "' encodes to no tokens");
            }
            // Under mpirun the ranks split the model tensor-parallel.
            std::unique_ptr<MpiSession> mpi;
            std::unique_ptr<ProcessGrid> grid;
            std::unique_ptr<ProcessGroups> groups;
            TensorParallel tp;
            if (read_launch_env().world_size > 1) {
              mpi = std::make_unique<MpiSession>(nullptr, nullptr);
              grid = std::make_unique<ProcessGrid>(mpi->world_size(), mpi->world_rank(),
                                                   GridSizes{1, 1, 1, mpi->world_size(), 1});
              groups = std::make_unique<ProcessGroups>(*grid, Backend::mpi);
              tp = {&groups->tp(), grid->coordinate(Axis::tp), groups->tp().size()};
            }
            const bool printer = !grid || grid->rank() == 0;
            auto run = [&] {
              const DType dtype = precision_dtype(config.train.precision);
              // What generation on a GPU does not cover yet.
              std::string missing;
              if (grid) missing = "tensor-parallel generation under mpirun";
              const std::shared_ptr<Allocator> device = select_device("--device", o->device, missing);
              const ParamStorage storage{.allocator = device.get()};
              Transformer model(config.model, dtype, tp, {}, {}, {}, storage);
              load_weights(model, o->checkpoint);
              if (o->quantize == "int8") {
                const auto [before, after] = model.quantize_int8();
                if (printer)
                  std::fprintf(stderr, "int8: the blocks' linear weights take %.2f MiB instead of %.2f MiB on this rank\n",
                               static_cast<double>(after) / 1048576, static_cast<double>(before) / 1048576);
              }
              if (!o->eval.empty()) {
                std::vector<int32_t> tokens;
                if (o->eval.ends_with(".h5")) {
                  const TokenDataset set = TokenDataset::read(o->eval);
                  tokens.assign(set.tokens().begin(), set.tokens().end());
                } else {
                  std::ifstream in(o->eval, std::ios::binary);
                  STRATA_CHECK(in.good(), "cannot read --eval file '", o->eval, "'");
                  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
                  tokens = tokenizer.encode(text);
                }
                const auto [ppl, scored] = perplexity(model, tokens, std::min(config.train.seq_len, config.model.max_seq_len));
                if (printer)
                  std::printf("perplexity %.4f over %lld tokens of %s%s\n", ppl, static_cast<long long>(scored),
                              o->eval.c_str(), o->quantize.empty() ? "" : " (int8 weights)");
                return 0;
              }
              GenerateOptions options;
              options.max_new_tokens = o->max_tokens;
              options.stop_token = tokenizer.eot_id();
              options.sampling = o->sampling;
              if (!o->dump_logits.empty()) {
                // The logits of every prompt position, as a NumPy .npy file of [n, vocab] f32.
                const auto n = static_cast<int64_t>(prompts[0].size());
                KvCache cache = model.make_kv_cache(1, n);
                const std::vector<CacheSegment> seg = {{0, n, 0}};
                const Tensor logits = model.forward_cached(Tensor::from_vector(prompts[0], {n}), seg, cache, false);
                const Tensor f32 = host_f32(logits);
                if (printer) {
                  write_npy_f32(o->dump_logits, f32);
                  std::ofstream ids(o->dump_logits + ".tokens");
                  for (int32_t t : prompts[0]) ids << t << "\n";
                  STRATA_CHECK(ids.good(), "cannot write '", o->dump_logits, ".tokens'");
                }
                return 0;
              }
              if (o->interactive) {
                // mpirun gives stdin to rank 0 only: a conversation runs on one process.
                STRATA_CHECK(!grid, "--interactive runs on one process (not under mpirun)");
                Conversation chat(model);
                for (std::string line; std::getline(std::cin, line);) {
                  if (line.empty()) continue;
                  std::vector<int32_t> mine;
                  std::string shown;
                  const std::vector<int32_t> prompt = tokenizer.encode(line + "\n");
                  if (static_cast<int64_t>(prompt.size()) >= chat.room()) {
                    std::fputs("[the conversation fills model.max_seq_len; ending it]\n", stdout);
                    break;
                  }
                  chat.turn(prompt, options, [&](int32_t token) {
                    if (token == options.stop_token) return;
                    mine.push_back(token);
                    const std::string text = tokenizer.decode(mine);
                    std::fputs(text.substr(shown.size()).c_str(), stdout);
                    std::fflush(stdout);
                    shown = text;
                  });
                  std::fputs("\n", stdout);
                  std::fflush(stdout);
                }
                return 0;
              }
              // One prompt streams its text as the tokens come; a batch prints each when done.
              const bool stream = prompts.size() == 1 && printer;
              std::string shown;
              std::vector<int32_t> so_far;
              if (stream) std::fputs(texts[0].c_str(), stdout);
              auto show = [&](size_t, int32_t token) {
                if (!stream || token == options.stop_token) return;
                so_far.push_back(token);
                const std::string text = tokenizer.decode(so_far);
                std::fputs(text.substr(shown.size()).c_str(), stdout);
                std::fflush(stdout);
                shown = text;
              };
              std::vector<std::vector<int32_t>> out;
              if (o->draft.empty()) {
                out = generate(model, prompts, options, show);
              } else {
                // The draft runs whole on every rank (it is small); the target may be split.
                const Config draft_config = checkpoint_config(o->draft);
                Transformer draft(draft_config.model, dtype, {}, {}, {}, {}, storage);
                load_weights(draft, o->draft);
                SpeculativeStats stats;
                for (const auto& prompt : prompts)
                  out.push_back(generate_speculative(model, draft, prompt, options, o->draft_tokens, &stats,
                                                     [&](int32_t token) { show(0, token); }));
                if (stream) std::fputs("\n", stdout);
                std::fflush(stdout);
                if (printer)
                  std::fprintf(stderr, "speculative decoding: %lld of %lld drafted tokens accepted (%.1f%%), %lld target forwards\n",
                               static_cast<long long>(stats.accepted), static_cast<long long>(stats.proposed),
                               100 * stats.acceptance_rate(), static_cast<long long>(stats.target_forwards));
                if (stream) return 0;
              }
              if (stream) std::fputs("\n", stdout);
              if (printer && !stream) {
                for (size_t i = 0; i < out.size(); ++i) {
                  std::vector<int32_t> tokens = out[i];
                  if (!tokens.empty() && tokens.back() == options.stop_token) tokens.pop_back();
                  std::printf("%s%s%s\n", i > 0 ? "\n" : "", texts[i].c_str(), tokenizer.decode(tokens).c_str());
                }
              }
              return 0;
            };
            if (mpi) return run_or_abort(run);
            return run();
          }};
}

}  // namespace strata::cli
