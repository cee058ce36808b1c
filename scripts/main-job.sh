#!/usr/bin/env bash
# The main job: a LoRA fine-tune of the bundled stories260K model (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
./build/llmtune train "$@"
