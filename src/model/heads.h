// Sequence-classification / reward head (`score`, HF *ForSequenceClassification, hf-semantics §7.6, §5.5):
// pooling of the final hidden states at each row's last real token, logits, and the CE / MSE /
// Bradley–Terry losses whose backward fills Workspace::d_final so that decoder_backward can follow.
//
// Deliberate difference from Hugging Face — the pooled position:
//  * HF pools at the rightmost token whose id != pad_token_id (argmax(arange(T)·(ids != pad))). When
//    pad == eos and an EOS is appended to every text (TRL's reward trainer does this), HF therefore pools at
//    the token BEFORE the trailing EOS, and a row of text ending in a real EOS loses that EOS too; an
//    all-pad row gives position 0.
//  * We pool at the last REAL token from the segment ids / attention mask (segment >= 0, i.e. mask 1),
//    never looking at ids. This is right for left and right padding, and with pad == eos the appended EOS
//    itself is pooled (a real EOS is never mistaken for padding). With pad != eos and right padding (or
//    left padding) both rules give the same position. A row with no real token is an error.
//    hf_pooled_positions() gives HF's index for comparison.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/decoder.h"
#include "model/model.h"

namespace llmtune {

struct ClassificationHead {
  Param* weight = nullptr;  // "score.weight" [num_labels, E], no bias (HF nn.Linear layout)
  int64_t num_labels = 0;
};

struct SeqClsOptions {
  int64_t num_labels = 0;             // 0: id2label's size, else 2 (HF default); a seq-cls folder's own count
  std::vector<std::string> id2label;  // empty → "LABEL_i" (HF default names)
  std::string problem_type;           // "" (HF infers: 1 label → regression), "regression",
                                      // "single_label_classification"
  int32_t pad_token_id = -1;          // written to config.json when >= 0 (HF needs it for batches > 1)
  float init_std = 0.02f;             // score.weight ~ N(0, init_std) (HF initializer_range)
  uint64_t seed = 0;
};

// The head of a model built or loaded as *ForSequenceClassification (fails when it has none).
ClassificationHead classification_head(Model& m);

// Rewrites a causal-LM config as its *ForSequenceClassification counterpart: architectures
// (e.g. "LlamaForSequenceClassification"), num_labels, id2label/label2id, problem_type, pad_token_id —
// both the parsed fields and cfg.raw (what save_model writes).
void set_seq_cls_config(ModelConfig& cfg, const SeqClsOptions& opt);

// Turns a causal-LM model into the seq-cls one, as AutoModelForSequenceClassification.from_pretrained on
// a causal checkpoint does: the LM head is dropped (a tied head simply stops being used), score.weight is
// added ~ N(0, init_std). Call it before adapters are attached.
ClassificationHead add_classification_head(Model& m, const SeqClsOptions& opt);

// A HF folder for classification: a *ForSequenceClassification folder is loaded as is (opt.num_labels,
// when > 0, must match it; opt's other fields are ignored); a causal-LM folder is converted with
// add_classification_head.
Model load_model_for_classification(const std::string& dir, const SeqClsOptions& opt);

// "" → what HF infers for integer labels: "regression" for 1 label, else "single_label_classification".
std::string resolve_problem_type(const ModelConfig& cfg);

// ---- pooling ----
// Per row, the position of its last real token: the largest t with segments[b·T + t] >= 0 (-1 = padding,
// as DecoderInput::segments; an attention mask converts as mask ? 0 : -1). Null segments → T − 1.
std::vector<int64_t> last_token_positions(const int32_t* segments, int64_t B, int64_t T);
// HF's rule (documentation / comparison only): rightmost t with ids != pad_id; pad_id < 0 → T − 1;
// a row of only pad ids → 0 (argmax of zeros), as HF.
std::vector<int64_t> hf_pooled_positions(const int32_t* ids, int64_t B, int64_t T, int32_t pad_id);

// ---- forward / backward ----
struct HeadOutput {
  int64_t B = 0, T = 0, num_labels = 0;
  std::vector<float> logits;    // [B, num_labels]
  std::vector<int64_t> pooled;  // [B]: position t (within the row) whose hidden state was scored
};

// Logits of each row's pooled hidden state; ws holds decoder_forward's output for the same input.
HeadOutput head_forward(const ClassificationHead& head, const Workspace& ws, const int32_t* segments);

// From ∂loss/∂logits [B, num_labels]: OVERWRITES ws.d_final (zero except at the pooled rows) and
// accumulates score.weight's gradient when it is trainable. decoder_backward can run next.
void head_backward(const ClassificationHead& head, Workspace& ws, const HeadOutput& out, const float* d_logits);

// ---- losses: each returns the loss; with backward=true it runs head_backward with the gradient of
// grad_scale · loss (HF divides by gradient_accumulation_steps for these losses: pass 1/GA). ----

// Cross-entropy over num_labels, mean over rows whose label != -100 (PyTorch ignore_index). A label
// outside [0, num_labels) is an error. log-softmax in double.
double classification_ce_loss(const ClassificationHead& head, Workspace& ws, const HeadOutput& out,
                              const int32_t* labels, float grad_scale = 1.f, bool backward = true);

// Mean squared error over all B·num_labels entries (HF problem_type "regression"; targets [B, num_labels]).
double regression_mse_loss(const ClassificationHead& head, Workspace& ws, const HeadOutput& out,
                           const float* targets, float grad_scale = 1.f, bool backward = true);

// Reward-model pairs: rewards of rows chosen[i] and rejected[i] (num_labels must be 1).
struct RewardPairs {
  std::vector<int64_t> chosen, rejected;
  std::vector<float> margin;  // empty, or one per pair (TRL's optional "margin" column)
};
// Rows 0..P−1 chosen, P..2P−1 rejected (how a reward batch is laid out): B must be even.
RewardPairs split_halves_pairs(int64_t B);

struct RewardLoss {
  double loss = 0;
  double accuracy = 0;     // mean(r_c > r_r), TRL's logged metric
  double mean_margin = 0;  // mean(r_c − r_r)
};

// Bradley–Terry on plain rewards (TRL RewardTrainer, §5.5):
//   L = mean_i −log σ(r_c − r_r − margin_i)  +  center_coef · mean_i (r_c + r_r)²   (center term when coef ≠ 0)
// −log σ(x) = softplus(−x), evaluated stably in double. d_rewards (nullable, [num rows]) is OVERWRITTEN
// with ∂L/∂r (rows in no pair get 0).
RewardLoss bradley_terry_loss(const float* rewards, int64_t num_rows, const RewardPairs& pairs,
                              double center_coef = 0.0, double* d_rewards = nullptr);

// The same on a head's output (its logits are the rewards), with head_backward for grad_scale · L.
RewardLoss reward_bt_loss(const ClassificationHead& head, Workspace& ws, const HeadOutput& out,
                          const RewardPairs& pairs, double center_coef = 0.0, float grad_scale = 1.f,
                          bool backward = true);

}  // namespace llmtune
