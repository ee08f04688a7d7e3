#!/usr/bin/env bash
# README command 1: install dependencies, build, and run budgetd in the foreground.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh" "$root/build"
if [[ ! -x $root/build/budgetd ]]; then
  echo "run: the engine is built; the daemon binary lands with the daemon issue (see README)." >&2
  exit 0
fi
exec "$root/build/budgetd" --config "$root/conf/budgetd.toml" "$@"
