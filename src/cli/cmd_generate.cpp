// `llmtune generate`: continue a prompt with the KV cache, streaming tokens to stdout.
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "model/generate.h"

namespace llmtune::cli {

namespace {

int run(const ResolvedOptions& o) {
  LoadedModel lm = load_for_cli(o);
  Model& m = lm.model;
  const Tokenizer& tok = lm.tokenizer;
  std::vector<int32_t> prompt = tok.encode(o.get_string("prompt"), true);
  if (prompt.empty()) {
    if (tok.bos_id() < 0) fail("the prompt is empty and the tokenizer has no BOS token to start from");
    prompt.push_back(tok.bos_id());
  }
  if (int64_t(prompt.size()) >= m.cfg.max_position_embeddings)
    fail("the prompt has ", prompt.size(), " tokens but the model's context is ", m.cfg.max_position_embeddings,
         " tokens: shorten the prompt");
  GenerateOptions g;
  g.max_new_tokens = o.get_int("max_new_tokens");
  g.sampling.do_sample = o.get_bool("do_sample");
  g.sampling.temperature = float(o.get_float("temperature"));
  g.sampling.top_k = int(o.get_int("top_k"));
  g.sampling.top_p = float(o.get_float("top_p"));
  g.sampling.repetition_penalty = float(o.get_float("repetition_penalty"));
  g.seed = uint64_t(o.get_int("seed"));
  validate_sampling_params(g.sampling);
  g.eos_ids = m.cfg.eos_token_ids;
  if (tok.eos_id() >= 0 && std::find(g.eos_ids.begin(), g.eos_ids.end(), tok.eos_id()) == g.eos_ids.end())
    g.eos_ids.push_back(tok.eos_id());
  if (o.get_bool("ignore_eos")) g.eos_ids.clear();

  const bool json = o.get_bool("json");
  // Streaming: decode the growing sequence and print only the new characters, so multi-byte
  // characters split across tokens come out whole.
  std::vector<int32_t> generated;
  std::string printed;
  auto on_token = [&](int64_t, int32_t t) {
    if (json) return;
    generated.push_back(t);
    std::string text = tok.decode(generated, true);
    // Hold back an incomplete UTF-8 tail (decoded as U+FFFD) until the next token completes it.
    if (text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0) return;
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::fwrite(text.data() + printed.size(), 1, text.size() - printed.size(), stdout);
      std::fflush(stdout);
    }
    printed = text;
  };
  auto out = generate(m, {prompt}, g, on_token);
  if (json) {
    nlohmann::json j;
    j["ids"] = out[0];
    j["text"] = tok.decode(out[0], true);
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::string text = tok.decode(out[0], true);
    if (text.size() > printed.size()) std::fwrite(text.data() + printed.size(), 1, text.size() - printed.size(), stdout);
    std::fputc('\n', stdout);
  }
  return 0;
}

}  // namespace

Command generate_command() {
  CommandSpec s;
  s.name = "generate";
  s.summary = "Continue a prompt (greedy by default; --do_sample for sampling), streamed to stdout";
  add_model_options(s);
  s.add_string("prompt", std::nullopt, "the text to continue").required = true;
  s.add_int("max_new_tokens", 64, "number of tokens to generate at most").min = 0;
  s.add_bool("do_sample", false, "sample instead of greedy decoding");
  s.add_float("temperature", 1.0, "sampling temperature (> 0)").min = 1e-6;
  s.add_int("top_k", 50, "keep the k most likely tokens when sampling (0 = off; HF default 50)").min = 0;
  auto& tp = s.add_float("top_p", 1.0, "nucleus sampling: keep the smallest set with this probability mass");
  tp.min = 1e-6;
  tp.max = 1.0;
  s.add_float("repetition_penalty", 1.0, "penalise tokens already in the prompt or output (> 0; 1 = off)").min = 1e-6;
  s.add_int("seed", 42, "random seed for sampling");
  s.add_bool("ignore_eos", false, "keep generating after an end-of-sequence token");
  s.add_bool("json", false, "print {\"ids\": [...], \"text\": \"...\"} instead of streaming text");
  return {s, run};
}

}  // namespace llmtune::cli
