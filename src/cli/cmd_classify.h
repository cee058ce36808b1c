// `llmtune classify` (label + probabilities per input) and the classifier branch of `llmtune eval`.
#pragma once
#include "cli/commands.h"

namespace llmtune::cli {

// `llmtune eval` on a classifier (see is_classifier): prints one JSON object.
int run_classifier_eval(const ResolvedOptions& o);

}  // namespace llmtune::cli
