#!/usr/bin/env bash
# README command 1: install the dependencies, build, and run budgetd in the foreground with
# the shipped configuration (conf/budgetd.toml), on a socket it can create:
#   as root   /run/budgetd/io.budgetd
#   otherwise ./run/io.budgetd in the repository (passed with --socket)
# BUDGETD_SOCKET=PATH chooses another path. Extra arguments go to budgetd.
# Ctrl-C (SIGINT) or SIGTERM stops it cleanly; SIGHUP re-reads the configuration.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh" "$root/build"

budgetd=$root/build/budgetd
if [[ ! -x $budgetd ]]; then
  echo "run: $budgetd was not built; see the build output above." >&2
  exit 1
fi

if [[ -n ${BUDGETD_SOCKET:-} ]]; then
  socket=$BUDGETD_SOCKET
elif [[ $(id -u) -eq 0 ]]; then
  socket=/run/budgetd/io.budgetd
else
  socket=$root/run/io.budgetd
  # A Unix socket address holds at most 107 bytes.
  if ((${#socket} > 107)); then
    socket=${XDG_RUNTIME_DIR:-/tmp}/budgetd-$(id -u)/io.budgetd
  fi
fi

config=$root/conf/budgetd.toml
"$budgetd" --check-config "$config" >/dev/null

cat <<INFO

budgetd $("$budgetd" --version | cut -d' ' -f2) listens on $socket (config: $config)
Stop it with Ctrl-C; reload the config with: kill -HUP <pid>

Try, from another terminal:
INFO
if [[ -x $root/build/budgetctl ]]; then
  echo "  $root/build/budgetctl --socket $socket status"
  echo "  $root/build/budgetctl --socket $socket call Agent.RecordUsage '{\"process\":\"env-1\",\"tokens_in\":500,\"labels\":{\"model\":\"gpt-4\"}}'"
  echo "  $root/build/budgetctl --socket $socket usage summary $(date -u +%Y-%m-01) $(date -u +%Y-%m-%d) by=model"
else
  echo "  $root/build/budgetctl --socket $socket status     (once budgetctl is built)"
fi
if command -v varlinkctl >/dev/null 2>&1; then
  echo "  varlinkctl call unix:$socket org.varlink.service.GetInfo '{}'"
  echo "  varlinkctl introspect unix:$socket io.budgetd.Agent"
fi
for call in '{"method":"org.varlink.service.GetInfo"}' \
  '{"method":"io.budgetd.Agent.Allocate","parameters":{"process":"env-1"}}' \
  '{"method":"io.budgetd.Admin.Stats"}'; do
  echo "  printf '$call\\0' | socat - UNIX-CONNECT:$socket | tr '\\0' '\\n'"
done
if ! command -v socat >/dev/null 2>&1; then
  echo "  (socat: apt-get install socat)"
fi
echo

exec "$budgetd" --config "$config" --socket "$socket" "$@"
