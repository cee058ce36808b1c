// Full and partial ("freeze") fine-tuning: which params are trainable.
#include "peft/freeze.h"

#include "core/error.h"

namespace llmtune {

namespace {

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v), out;
  for (size_t i = 0; i < s.size(); i++) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

void mark(Param* p) {
  if (p) p->trainable = true;
}

void mark_norm(const NormModule& n) {
  mark(n.weight);
  mark(n.bias);
}

}  // namespace

std::string apply_freeze_policy(Model& m, const FreezeOptions& opt) {
  const int64_t L = int64_t(m.blocks.size());
  std::string what;
  if (opt.method == "full") {
    for (Param& p : m.params) p.trainable = true;
    what = "full: every parameter trainable";
  } else if (opt.method == "freeze") {
    if (opt.trainable_layers < 0 || opt.trainable_layers > L)
      fail("freeze_trainable_layers must be between 0 and the model's ", L, " layers (got ", opt.trainable_layers, ")");
    for (Param& p : m.params) p.trainable = false;
    for (int64_t i = L - opt.trainable_layers; i < L; i++) {
      Block& b = m.blocks[size_t(i)];
      mark_norm(b.ln1);
      mark_norm(b.ln2);
      for (LinearModule* l : b.linears()) {
        mark(l->weight);
        mark(l->bias);
      }
    }
    if (opt.train_final_norm) mark_norm(m.final_norm);
    if (opt.train_lm_head) mark(m.lm_head.weight);
    what = opt.trainable_layers ? cat("freeze: trainable = blocks ", L - opt.trainable_layers, "..", L - 1, " of ", L)
                                : cat("freeze: trainable = no block of ", L);
    if (opt.train_final_norm) what += ", final norm";
    if (opt.train_lm_head) what += m.lm_head.weight == m.embed ? ", LM head (tied: the embedding)" : ", LM head";
  } else {
    fail("unknown finetuning method '", opt.method, "' (expected full, freeze or lora)");
  }
  m.sync_grad_buffers();
  int64_t n = 0, tensors = 0;
  for (const Param& p : m.params)
    if (p.trainable) {
      n += p.value.numel();
      tensors++;
    }
  return cat(what, " (", tensors, " tensors, ", with_commas(n), " of ", with_commas(m.num_params()), " params)");
}

}  // namespace llmtune
