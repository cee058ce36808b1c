#!/usr/bin/env bash
# The README's first command: installs the Debian packages, builds llmtune (Release) and runs the
# main job on the bundled model — offline, no downloads beyond apt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
if [ "${LLMTUNE_SETUP_SKIP_RUN:-0}" != "1" ]; then
  bash scripts/main-job.sh
fi
