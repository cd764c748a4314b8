// `strata convert`: inspect a checkpoint, write it under another layout or as one file, export it
// as a Hugging Face model directory, or import one (tools/convert.h).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "io/config.h"
#include "tools/convert.h"

namespace strata::cli {

Command add_convert(CLI::App& app) {
  struct Options {
    std::string checkpoint;
    bool inspect = false, consolidate = false, layout = false;
    std::string to_hf, from_hf, out, tokenizer;
    std::vector<std::string> overrides;
    double shard_mb = 5 * 1024;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Inspect a checkpoint, reshard it, consolidate it, or convert to and from Hugging Face");
  cmd->add_option("checkpoint", o->checkpoint, "Checkpoint folder (step-NNNNNN)");
  cmd->add_flag("--inspect", o->inspect, "Print step, layout, files and every tensor (shape, dtype, checksum)");
  cmd->add_flag("--consolidate", o->consolidate, "Write one file of whole tensors (one process's layout) to --out");
  cmd->add_flag("--layout", o->layout, "Write under the layout the --set parallel.* keys give, to --out");
  cmd->add_option("--set", o->overrides, "With --layout: parallel.dp=2, parallel.tp=2, ... (repeatable)");
  cmd->add_option("--to-hf", o->to_hf, "Write a Hugging Face model directory (GPT2LMHeadModel or LlamaForCausalLM)");
  cmd->add_option("--shard-mb", o->shard_mb, "With --to-hf: largest safetensors file in MiB (default 5120)");
  cmd->add_option("--tokenizer", o->tokenizer, "With --to-hf: GPT-2 tokenizer folder to include (default: the run's data.tokenizer)");
  cmd->add_option("--from-hf", o->from_hf, "Make a Strata checkpoint in --out from a Hugging Face model directory");
  cmd->add_option("--out", o->out, "Where --consolidate, --layout and --from-hf write (a checkpoints folder)");
  return {cmd, [o] {
            const int actions = o->inspect + o->consolidate + o->layout + !o->to_hf.empty() + !o->from_hf.empty();
            STRATA_CHECK(actions == 1, "strata convert: give exactly one of --inspect, --consolidate, --layout, "
                         "--to-hf, --from-hf (got ", actions, ")");
            STRATA_CHECK(!o->layout || !o->overrides.empty(), "--layout needs the new layout as --set parallel.*=N");
            STRATA_CHECK(o->layout || o->overrides.empty(), "--set is only for --layout");
            for (const auto& kv : o->overrides)
              STRATA_CHECK(kv.rfind("parallel.", 0) == 0, "--layout --set '", kv,
                           "': only parallel.* keys change a checkpoint's layout");
            if (!o->from_hf.empty()) {
              STRATA_CHECK(!o->out.empty(), "--from-hf needs --out (the checkpoints folder to write into)");
              std::printf("%s\n", import_hf(o->from_hf, o->out).c_str());
              return 0;
            }
            STRATA_CHECK(!o->checkpoint.empty(), "strata convert: which checkpoint? (a step-NNNNNN folder)");
            if (o->inspect) {
              std::fputs(inspect_checkpoint(o->checkpoint).c_str(), stdout);
              return 0;
            }
            if (!o->to_hf.empty()) {
              const std::string tokenizer =
                  o->tokenizer.empty() ? checkpoint_config(o->checkpoint).data.tokenizer : o->tokenizer;
              STRATA_CHECK(o->shard_mb > 0, "--shard-mb must be positive, got ", o->shard_mb);
              export_hf(o->checkpoint, o->to_hf, tokenizer, static_cast<int64_t>(o->shard_mb * 1024 * 1024));
              std::printf("%s\n", o->to_hf.c_str());
              return 0;
            }
            STRATA_CHECK(!o->out.empty(), "--consolidate and --layout need --out (the checkpoints folder to write into)");
            Config target = checkpoint_config(o->checkpoint);
            if (o->consolidate) {
              target.parallel.dp = target.parallel.tp = target.parallel.pp = target.parallel.sp = target.parallel.ep = 1;
              target.parallel.virtual_stages = 1;
              target.parallel.pp_layers.clear();
            }
            for (const auto& kv : o->overrides) apply_override(target, kv);
            validate_config(target);
            std::printf("%s\n", reshard_checkpoint(o->checkpoint, target, o->out).c_str());
            return 0;
          }};
}

}  // namespace strata::cli
