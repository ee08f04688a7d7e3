#!/usr/bin/env bash
# README command 2: install dependencies, build, and run every test through ctest.
# BUDGETD_SANITIZE=1 builds and tests under ASan+UBSan in build-asan/ instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ ${BUDGETD_SANITIZE:-0} == 1 ]]; then
  build=$root/build-asan
  bash "$root/scripts/setup.sh" "$build" -DCMAKE_BUILD_TYPE=Debug -DBUDGETD_SANITIZE=ON
else
  build=$root/build
  bash "$root/scripts/setup.sh" "$build"
fi
cd "$build"
ctest --output-on-failure -j"$(nproc)"
