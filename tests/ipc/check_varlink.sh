#!/usr/bin/env bash
# Parses every interface file with the varlink reference Go parser (Debian's varlink-go).
# That parser predates capitalised interface names (io.systemd.Resolve style, which
# DESIGN.md uses: io.budgetd.Agent); the name is lowercased for it, the rest is checked
# verbatim.
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
status=0
for f in "$@"; do
  name=$(basename "$f")
  sed -E 's/^interface (.*)$/interface \L\1/' "$f" > "$dir/$name"
  if ! (cd "$dir" && varlink-go-interface-generator "$name" >/dev/null); then
    echo "FAIL: $f"
    status=1
  else
    echo "ok: $f"
  fi
done
exit $status
