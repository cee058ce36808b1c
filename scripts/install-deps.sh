#!/usr/bin/env bash
# Installs every Debian 12 package the build, the tests and the main job need. Idempotent.
set -euo pipefail
PACKAGES=(
  build-essential cmake pkg-config git
  libdnnl-dev            # oneDNN: matrix products (AVX-512 / AMX); not OpenBLAS, which misdetects this CPU
  nlohmann-json3-dev     # JSON (config.json, tokenizer.json, adapter_config.json, metrics)
  libcli11-dev           # command-line parsing
  libyaml-cpp-dev        # --config F.yaml
  libsentencepiece-dev   # tokenizer.model files (Llama-2, TinyLlama, llama2.c)
  libgtest-dev libgmock-dev
  chromium               # headless browser: the report test renders report.html and screenshots it
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
