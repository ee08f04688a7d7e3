#!/usr/bin/env bash
# Smoke test of the benchmark harness: runs bench/loadgen for one second each in the
# record, record-oneway and consume modes (4 connections x 4 calls in flight), record spread
# over 100 processes (--processes), and 2000 allocations (allocate), against a test budgetd
# on a temporary socket with its state in the temporary directory, and fails unless every call was answered correctly
# and the daemon's own counts agree with the replies (loadgen checks both). No timing is
# asserted: this only keeps the harness from rotting.
#
# Usage: tests/bench/loadgen_smoke.sh BUDGETD_BINARY LOADGEN_BINARY
set -euo pipefail

budgetd=${1:?usage: loadgen_smoke.sh BUDGETD_BINARY LOADGEN_BINARY}
loadgen=${2:?usage: loadgen_smoke.sh BUDGETD_BINARY LOADGEN_BINARY}

dir=$(mktemp -d /tmp/loadgen-smoke.XXXXXX)
pid=
cleanup() {
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

fail() {
  echo "loadgen_smoke: $*" >&2
  if [[ -f $dir/budgetd.log ]]; then
    echo "--- budgetd log (last 20 lines)" >&2
    tail -n 20 "$dir/budgetd.log" >&2
  fi
  exit 1
}

# The consume mode sets scope limits (Admin.SetLimits): make the caller an operator even
# when the test does not run as root.
cat >"$dir/budgetd.toml" <<EOF
[socket]
operator_group = "$(id -gn)"

[store]
state_dir = "$dir/state"
EOF

BUDGETD_LOG=stderr "$budgetd" --config "$dir/budgetd.toml" --socket "$dir/b.sock" 2>"$dir/budgetd.log" &
pid=$!

deadline=$((SECONDS + 30))
until [[ -S $dir/b.sock ]]; do
  kill -0 "$pid" 2>/dev/null || fail "budgetd exited before listening"
  ((SECONDS < deadline)) || fail "no socket after 30 s"
  sleep 0.01
done

runs=("record -d 1" "record-oneway -d 1" "consume -d 1" "record -d 1 --processes 100" "allocate -n 2000")
for run in "${runs[@]}"; do
  read -r mode args <<<"$run"
  # loadgen exits non-zero when a reply is an error or missing, or when the daemon's count
  # (GetUsage, the scope's usage, Admin.Stats' tracked processes) differs from what was
  # answered.
  # shellcheck disable=SC2086 # $args is the run's options, split on purpose
  if ! out=$("$loadgen" --socket "$dir/b.sock" --mode "$mode" -c 4 -p 4 $args --seed 7 --json); then
    fail "$mode: loadgen failed: ${out:-no output}"
  fi
  [[ $out == *'"errors":0,'* ]] || fail "$mode: errors: $out"
  [[ $out == *'"verified":true'* ]] || fail "$mode: counts not verified: $out"
  if ! [[ $out =~ \"ops\":([0-9]+) ]] || ((BASH_REMATCH[1] == 0)); then
    fail "$mode: no operation completed: $out"
  fi
  kill -0 "$pid" 2>/dev/null || fail "budgetd died during $mode $args"
  echo "loadgen_smoke: $mode $args ok: $out"
done
