#!/usr/bin/env bash
# Installs what bench/compare's PyTorch reference needs (NOT needed to build or test llmtune):
# Debian's python3-torch (1.13) and OpenBLAS. Debian's torch uses the system libblas.so.3; the default
# one is the unoptimised reference BLAS (~3 GFLOP/s here), OpenBLAS replaces it through update-alternatives.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-torch libopenblas0-pthread
/usr/bin/python3 -c "import torch; print('torch', torch.__version__)"
