// `strata tokenize`: text files to the HDF5 train and val token datasets.
#include <memory>

#include "cli/commands.h"
#include "core/log.h"
#include "data/corpus.h"

namespace strata::cli {

Command add_tokenize(CLI::App& app) {
  struct Options {
    std::vector<std::string> inputs;
    std::string output;
    std::string val_output;
    std::string tokenizer = "data/gpt2";
    double val_fraction = 0.01;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Tokenize text files into HDF5 token datasets");
  cmd->add_option("--input", o->inputs, "Text files or folders (searched recursively)")->required();
  cmd->add_option("--output", o->output, "Train dataset to write, e.g. data/brown/train.h5")->required();
  cmd->add_option("--val-output", o->val_output,
                  "Validation dataset to write (default: 'val.h5' beside --output)");
  cmd->add_option("--tokenizer", o->tokenizer, "Folder with encoder.json and vocab.bpe")
      ->capture_default_str();
  cmd->add_option("--val-fraction", o->val_fraction, "Fraction of documents held out for validation")
      ->capture_default_str();
  return {cmd, [o] {
            TokenizeOptions t;
            for (const auto& i : o->inputs) t.inputs.emplace_back(i);
            t.tokenizer_dir = o->tokenizer;
            t.train_path = o->output;
            t.val_path = o->val_output.empty()
                             ? std::filesystem::path(o->output).parent_path() / "val.h5"
                             : std::filesystem::path(o->val_output);
            t.val_fraction = o->val_fraction;
            const TokenizeSummary s = tokenize_corpus(t);
            log::info("tokenized ", s.n_documents, " documents (", s.n_text_bytes, " bytes): ",
                      s.n_train_tokens, " train tokens in ", t.train_path.string(), ", ",
                      s.n_val_tokens, " val tokens in ", t.val_path.string());
            return 0;
          }};
}

}  // namespace strata::cli
