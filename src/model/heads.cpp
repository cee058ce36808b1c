// Sequence-classification / reward head: pooling, score logits, CE / MSE / Bradley–Terry losses and
// their backward into Workspace::d_final. The head is tiny ([num_labels, E]), so plain loops in double.
#include "model/heads.h"

#include <cmath>
#include <cstring>
#include <set>

#include "core/error.h"

namespace llmtune {

namespace {

float* grad_of(Param* p) { return (p && p->trainable && p->grad.defined()) ? p->grad.f32() : nullptr; }

std::string seq_cls_architecture(const std::string& model_type) {
  if (model_type == "gpt_neox") return "GPTNeoXForSequenceClassification";
  if (model_type == "llama") return "LlamaForSequenceClassification";
  if (model_type == "mistral") return "MistralForSequenceClassification";
  if (model_type == "qwen2") return "Qwen2ForSequenceClassification";
  if (model_type == "gpt2") return "GPT2ForSequenceClassification";
  fail("model_type '", model_type, "' has no sequence-classification variant (supported: ", supported_architectures(),
       ")");
}

// −log σ(x) = softplus(−x), without overflow for large |x|.
double neg_log_sigmoid(double x) { return x >= 0 ? std::log1p(std::exp(-x)) : -x + std::log1p(std::exp(x)); }
double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  double e = std::exp(x);
  return e / (1.0 + e);
}

void check_output(const ClassificationHead& head, const Workspace& ws, const HeadOutput& out) {
  if (!head.weight) fail("internal: classification head without score.weight");
  if (out.num_labels != head.num_labels || out.B != ws.B || out.T != ws.T ||
      int64_t(out.logits.size()) != out.B * out.num_labels || int64_t(out.pooled.size()) != out.B)
    fail("internal: head output does not belong to this head / workspace");
}

}  // namespace

ClassificationHead classification_head(Model& m) {
  Param* w = m.find("score.weight");
  if (!m.cfg.is_seq_cls || !w)
    fail(m.cfg.architecture.empty() ? m.cfg.model_type : m.cfg.architecture,
         " has no classification head (score.weight): load it as a sequence-classification model");
  return ClassificationHead{w, m.cfg.num_labels};
}

void set_seq_cls_config(ModelConfig& c, const SeqClsOptions& opt) {
  const int64_t n = opt.num_labels > 0 ? opt.num_labels : !opt.id2label.empty() ? int64_t(opt.id2label.size()) : 2;
  if (opt.num_labels < 0) fail("num_labels must be at least 1, got ", opt.num_labels);
  if (!opt.id2label.empty() && int64_t(opt.id2label.size()) != n)
    fail("num_labels is ", n, " but ", opt.id2label.size(), " label names were given");
  if (!opt.problem_type.empty() && opt.problem_type != "regression" &&
      opt.problem_type != "single_label_classification")
    fail("problem_type '", opt.problem_type, "' is not supported (supported: regression, single_label_classification)");
  std::vector<std::string> names = opt.id2label;
  if (names.empty())
    for (int64_t i = 0; i < n; i++) names.push_back(cat("LABEL_", i));
  std::set<std::string> seen;
  for (auto& n : names)
    if (!seen.insert(n).second) fail("label name '", n, "' appears twice: label names must be distinct");

  c.is_seq_cls = true;
  c.num_labels = n;
  c.id2label = names;
  c.problem_type = opt.problem_type;
  c.architecture = seq_cls_architecture(c.model_type);
  if (opt.pad_token_id >= 0) c.pad_token_id = opt.pad_token_id;

  nlohmann::json& j = c.raw;
  j["architectures"] = nlohmann::json::array({c.architecture});
  nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
  for (size_t i = 0; i < names.size(); i++) {
    id2label[std::to_string(i)] = names[i];
    label2id[names[i]] = int64_t(i);
  }
  j["id2label"] = id2label;
  j["label2id"] = label2id;
  j.erase("num_labels");  // HF derives it from id2label
  if (c.problem_type.empty()) j.erase("problem_type");
  else j["problem_type"] = c.problem_type;
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
}

ClassificationHead add_classification_head(Model& m, const SeqClsOptions& opt) {
  if (m.cfg.is_seq_cls || m.find("score.weight"))
    fail("the model already has a classification head (", m.cfg.architecture, ")");
  // Drop the LM head. An untied head is the last parameter right after loading; removing it from the
  // deque's end keeps every other Param* valid.
  if (m.lm_head.weight && m.lm_head.weight != m.embed) {
    if (m.params.empty() || &m.params.back() != m.lm_head.weight)
      fail("internal: add the classification head before attaching adapters");
    m.by_name.erase(m.params.back().name);
    m.params.pop_back();
  }
  m.lm_head = LinearModule{};
  set_seq_cls_config(m.cfg, opt);
  Tensor w = Tensor::zeros({m.cfg.num_labels, m.cfg.hidden_size});
  Rng rng(opt.seed);
  for (int64_t i = 0; i < w.numel(); i++) w.f32()[i] = opt.init_std * rng.normal();
  Param& p = m.add_param("score.weight", std::move(w));
  return ClassificationHead{&p, m.cfg.num_labels};
}

Model load_model_for_classification(const std::string& dir, const SeqClsOptions& opt) {
  ModelConfig cfg = load_model_config(dir);
  if (cfg.is_seq_cls) {
    if (opt.num_labels > 0 && opt.num_labels != cfg.num_labels)
      fail(dir, "/config.json: the checkpoint's score head has ", cfg.num_labels, " labels but ", opt.num_labels,
           " were asked for: use a matching num_labels or start from the base (causal-LM) model");
    return load_model(dir);
  }
  Model m = load_model(dir);
  add_classification_head(m, opt);
  return m;
}

std::string resolve_problem_type(const ModelConfig& cfg) {
  if (!cfg.problem_type.empty()) return cfg.problem_type;
  return cfg.num_labels == 1 ? "regression" : "single_label_classification";
}

std::vector<int64_t> last_token_positions(const int32_t* segments, int64_t B, int64_t T) {
  std::vector<int64_t> pos(size_t(B), T - 1);
  if (!segments) return pos;
  for (int64_t b = 0; b < B; b++) {
    int64_t t = T - 1;
    while (t >= 0 && segments[b * T + t] < 0) t--;
    if (t < 0) fail("batch row ", b, " has no real token (all padding): it cannot be classified");
    pos[size_t(b)] = t;
  }
  return pos;
}

std::vector<int64_t> hf_pooled_positions(const int32_t* ids, int64_t B, int64_t T, int32_t pad_id) {
  std::vector<int64_t> pos(size_t(B), T - 1);
  if (pad_id < 0) return pos;
  for (int64_t b = 0; b < B; b++) {
    int64_t best = 0;
    for (int64_t t = 0; t < T; t++)
      if (ids[b * T + t] != pad_id) best = t;
    pos[size_t(b)] = best;
  }
  return pos;
}

HeadOutput head_forward(const ClassificationHead& head, const Workspace& ws, const int32_t* segments) {
  if (!head.weight) fail("internal: classification head without score.weight");
  const int64_t B = ws.B, T = ws.T, L = head.num_labels, E = head.weight->value.shape[1];
  if (ws.h_final.numel() < B * T * E) fail("internal: head_forward before decoder_forward");
  HeadOutput out;
  out.B = B;
  out.T = T;
  out.num_labels = L;
  out.pooled = last_token_positions(segments, B, T);
  out.logits.assign(size_t(B * L), 0.f);
  const float* W = head.weight->value.f32();
  for (int64_t b = 0; b < B; b++) {
    const float* h = ws.h_final.f32() + (b * T + out.pooled[size_t(b)]) * E;
    for (int64_t l = 0; l < L; l++) {
      double s = 0;
      for (int64_t e = 0; e < E; e++) s += double(W[l * E + e]) * double(h[e]);
      out.logits[size_t(b * L + l)] = float(s);
    }
  }
  return out;
}

void head_backward(const ClassificationHead& head, Workspace& ws, const HeadOutput& out, const float* d_logits) {
  check_output(head, ws, out);
  const int64_t B = out.B, T = out.T, L = out.num_labels, E = head.weight->value.shape[1];
  std::memset(ws.d_final.data, 0, ws.d_final.nbytes());
  const float* W = head.weight->value.f32();
  float* dW = grad_of(head.weight);
  for (int64_t b = 0; b < B; b++) {
    const int64_t row = b * T + out.pooled[size_t(b)];
    const float* h = ws.h_final.f32() + row * E;
    float* dh = ws.d_final.f32() + row * E;
    const float* g = d_logits + b * L;
    for (int64_t e = 0; e < E; e++) {
      double s = 0;
      for (int64_t l = 0; l < L; l++) s += double(g[l]) * double(W[l * E + e]);
      dh[e] = float(s);
    }
    if (dW)
      for (int64_t l = 0; l < L; l++)
        for (int64_t e = 0; e < E; e++) dW[l * E + e] += g[l] * h[e];
  }
}

double classification_ce_loss(const ClassificationHead& head, Workspace& ws, const HeadOutput& out,
                              const int32_t* labels, float grad_scale, bool backward) {
  check_output(head, ws, out);
  const int64_t B = out.B, L = out.num_labels;
  int64_t count = 0;
  for (int64_t b = 0; b < B; b++) {
    if (labels[b] == kIgnoreIndex) continue;
    if (labels[b] < 0 || labels[b] >= L)
      fail("label ", labels[b], " of batch row ", b, " is outside [0, ", L, "): the model has ", L, " labels");
    count++;
  }
  if (count == 0) fail("every label in the batch is -100 (ignored): nothing to compute a loss on");
  double total = 0;
  std::vector<float> d(size_t(B * L), 0.f);
  for (int64_t b = 0; b < B; b++) {
    if (labels[b] == kIgnoreIndex) continue;
    const float* z = out.logits.data() + b * L;
    double mx = z[0];
    for (int64_t l = 1; l < L; l++) mx = std::max(mx, double(z[l]));
    double se = 0;
    for (int64_t l = 0; l < L; l++) se += std::exp(double(z[l]) - mx);
    const double lse = mx + std::log(se);
    total += lse - double(z[labels[b]]);
    for (int64_t l = 0; l < L; l++) {
      double p = std::exp(double(z[l]) - lse);
      d[size_t(b * L + l)] = float((p - (l == labels[b] ? 1.0 : 0.0)) * grad_scale / double(count));
    }
  }
  if (backward) head_backward(head, ws, out, d.data());
  return total / double(count);
}

double regression_mse_loss(const ClassificationHead& head, Workspace& ws, const HeadOutput& out,
                           const float* targets, float grad_scale, bool backward) {
  check_output(head, ws, out);
  const int64_t n = out.B * out.num_labels;
  double total = 0;
  std::vector<float> d(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) {
    double diff = double(out.logits[size_t(i)]) - double(targets[i]);
    total += diff * diff;
    d[size_t(i)] = float(2.0 * diff * grad_scale / double(n));
  }
  if (backward) head_backward(head, ws, out, d.data());
  return total / double(n);
}

RewardPairs split_halves_pairs(int64_t B) {
  if (B <= 0 || B % 2) fail("a reward batch needs an even number of rows (chosen then rejected), got ", B);
  RewardPairs p;
  for (int64_t i = 0; i < B / 2; i++) {
    p.chosen.push_back(i);
    p.rejected.push_back(B / 2 + i);
  }
  return p;
}

RewardLoss bradley_terry_loss(const float* rewards, int64_t num_rows, const RewardPairs& pairs, double center_coef,
                              double* d_rewards) {
  const int64_t P = int64_t(pairs.chosen.size());
  if (P == 0 || int64_t(pairs.rejected.size()) != P)
    fail("reward pairs: need as many rejected as chosen rows (got ", pairs.chosen.size(), " and ",
         pairs.rejected.size(), ")");
  if (!pairs.margin.empty() && int64_t(pairs.margin.size()) != P)
    fail("reward pairs: ", pairs.margin.size(), " margins for ", P, " pairs");
  for (int64_t i = 0; i < P; i++)
    for (int64_t r : {pairs.chosen[size_t(i)], pairs.rejected[size_t(i)]})
      if (r < 0 || r >= num_rows) fail("reward pairs: row ", r, " is outside the batch of ", num_rows, " rows");
  if (d_rewards) std::fill(d_rewards, d_rewards + num_rows, 0.0);
  RewardLoss res;
  for (int64_t i = 0; i < P; i++) {
    const int64_t c = pairs.chosen[size_t(i)], r = pairs.rejected[size_t(i)];
    const double rc = rewards[c], rr = rewards[r];
    const double x = rc - rr - (pairs.margin.empty() ? 0.0 : double(pairs.margin[size_t(i)]));
    res.loss += neg_log_sigmoid(x) / double(P);
    res.accuracy += (rc > rr ? 1.0 : 0.0) / double(P);
    res.mean_margin += (rc - rr) / double(P);
    double g = -sigmoid(-x) / double(P);  // d/dx softplus(−x) = −σ(−x)
    double dc = g, dr = -g;
    if (center_coef != 0.0) {
      const double s = rc + rr;
      res.loss += center_coef * s * s / double(P);
      dc += 2.0 * center_coef * s / double(P);
      dr += 2.0 * center_coef * s / double(P);
    }
    if (d_rewards) {
      d_rewards[c] += dc;
      d_rewards[r] += dr;
    }
  }
  return res;
}

RewardLoss reward_bt_loss(const ClassificationHead& head, Workspace& ws, const HeadOutput& out,
                          const RewardPairs& pairs, double center_coef, float grad_scale, bool backward) {
  check_output(head, ws, out);
  if (out.num_labels != 1)
    fail("a reward model has one output (num_labels 1), this head has ", out.num_labels);
  std::vector<double> d(size_t(out.B));
  RewardLoss res = bradley_terry_loss(out.logits.data(), out.B, pairs, center_coef, d.data());
  if (backward) {
    std::vector<float> df(size_t(out.B));
    for (int64_t b = 0; b < out.B; b++) df[size_t(b)] = float(d[size_t(b)] * grad_scale);
    head_backward(head, ws, out, df.data());
  }
  return res;
}

}  // namespace llmtune
