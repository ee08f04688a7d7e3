#!/usr/bin/env bash
# Checks units/budgetd.service and units/budgetd.socket with systemd-analyze. Works offline:
# no systemd as PID 1 and no D-Bus are needed.
#
# Usage: tests/units/verify.sh [BUDGETD_BINARY]
#
# `systemd-analyze verify` insists that ExecStart= names an existing executable, so the
# units are copied to a temporary directory and ExecStart=/usr/bin/budgetd is pointed at
# BUDGETD_BINARY (the built daemon), or /bin/true when it is not given or not built yet.
#
# verify exits 0 on many real mistakes: a misspelt key, a bad value or an unknown system
# call are logged at warning level ("Unknown key ..., ignoring.") and the setting is
# dropped. So this script does not run verify at SYSTEMD_LOG_LEVEL=err, which would hide
# them; it runs it at warning level and fails on a non-zero exit or on any diagnostic that
# names one of these units. A self-test then plants such mistakes and expects them caught,
# so a systemd that logs differently cannot make this check pass vacuously.
#
# It also runs `systemd-analyze security --offline=true` so that the hardening cannot
# regress past an exposure level of 2.0 (it is 1.4 with systemd 252).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
units=(budgetd.service budgetd.socket)
max_exposure=20  # systemd-analyze security --threshold: tenths, so 2.0

die() {
  echo "verify: $*" >&2
  exit 1
}

command -v systemd-analyze >/dev/null ||
  die "systemd-analyze not found (Debian package systemd; scripts/setup.sh installs it)"

binary=/bin/true
if (($# >= 1)); then
  if [[ -f $1 && -x $1 ]]; then
    binary=$(realpath "$1")
  else
    echo "verify: $1 is not an executable (not built yet?); checking with /bin/true" >&2
  fi
fi
[[ $binary != *[[:space:]\"\\\|\&]* ]] || die "cannot use a binary path with spaces, quotes or |&\\: $binary"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Copies the units into DIR with ExecStart= pointed at $binary.
stage() {
  local dir=$1
  mkdir -p "$dir"
  for u in "${units[@]}"; do cp "$root/units/$u" "$dir/$u"; done
  grep -q '^ExecStart=/usr/bin/budgetd ' "$dir/budgetd.service" ||
    die "units/budgetd.service has no 'ExecStart=/usr/bin/budgetd ...' line"
  sed -i "s|^ExecStart=/usr/bin/budgetd |ExecStart=$binary |" "$dir/budgetd.service"
}

# Runs verify on the units in DIR; prints problems and returns 1 if there are any.
check() {
  local dir=$1 out status=0 problems
  out=$(SYSTEMD_LOG_LEVEL=warning SYSTEMD_COLORS=0 systemd-analyze verify --man=no \
    "$dir/budgetd.service" "$dir/budgetd.socket" 2>&1) || status=$?
  # Diagnostics about other units (dependencies of the host) are shown, not counted.
  problems=$(grep -E "(^|/)budgetd\.(service|socket)[:]" <<<"$out" || true)
  if ((status != 0)) || [[ -n $problems ]]; then
    echo "${out:-systemd-analyze verify exited with status $status}"
    return 1
  fi
  [[ -z $out ]] || echo "verify: note (not about budgetd's units): $out" >&2
  return 0
}

# 1. The shipped units.
stage "$tmp/units"
if ! report=$(check "$tmp/units"); then
  echo "$report" >&2
  die "FAIL: systemd-analyze verify found problems in units/"
fi
echo "verify: systemd-analyze verify: units/budgetd.service and units/budgetd.socket are clean"

# 2. Self-test: each planted mistake must be caught.
mistakes=(
  "budgetd.service|s/^WatchdogSec=/WatchdgSec=/"
  "budgetd.service|s/^Type=notify$/Type=notifyy/"
  "budgetd.service|s/^SystemCallFilter=pidfd_open /SystemCallFilter=pidfd_opne /"
  "budgetd.service|s|^ExecStart=[^ ]*|ExecStart=/nonexistent/budgetd|"
  "budgetd.socket|s/^SocketMode=0660/SocketMode=0x660/"
)
n=0
for m in "${mistakes[@]}"; do
  unit=${m%%|*}
  expr=${m#*|}
  dir="$tmp/mistake$((n++))"
  stage "$dir"
  cp "$dir/$unit" "$dir/$unit.orig"
  sed -i "$expr" "$dir/$unit"
  if cmp -s "$dir/$unit" "$dir/$unit.orig"; then
    die "self-test: '$expr' changed nothing in $unit; update the self-test"
  fi
  rm -f "$dir/$unit.orig"
  if check "$dir" >/dev/null; then
    die "self-test: a planted mistake ($unit: $expr) was not caught; this check is blind"
  fi
done
echo "verify: self-test: all ${#mistakes[@]} planted mistakes were caught"

# 3. Hardening does not regress.
if systemd-analyze --help 2>/dev/null | grep -q -- '--offline'; then
  if ! out=$(SYSTEMD_COLORS=0 systemd-analyze security --offline=true --threshold="$max_exposure" \
    --no-pager "$tmp/units/budgetd.service" 2>&1); then
    echo "$out" >&2
    die "FAIL: budgetd.service exposure is above $((max_exposure / 10)).$((max_exposure % 10))"
  fi
  echo "verify: systemd-analyze security: $(grep -o 'Overall exposure level.*' <<<"$out" || echo ok)"
else
  echo "verify: this systemd-analyze has no --offline; skipping the exposure check" >&2
fi
