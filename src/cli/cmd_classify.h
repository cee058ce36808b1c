// `llmtune classify` (label + probabilities per input) and the classifier branch of `llmtune eval`.
#pragma once
#include "cli/commands.h"

namespace llmtune::cli {

// `llmtune eval` on a classifier (see is_classifier): a readable report (accuracy, macro-F1, per-class
// counts, confusion matrix / MSE, RMSE, Pearson r / pairwise accuracy, mean margin), then the same metrics
// as one JSON object on the last line.
int run_classifier_eval(const ResolvedOptions& o);

}  // namespace llmtune::cli
