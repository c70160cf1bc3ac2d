#!/usr/bin/env bash
# Start command of a kernelbox template: serves E2B's code-interpreter port (49999) and the
# sandbox API (49983) from /home/user, and brings the agent back if it dies (E2B's templates rely on systemd's
# Restart=on-failure for the same). Kernels die with the agent and are recreated by it.
set -uo pipefail
export KERNELBOX_HOME="${KERNELBOX_HOME:-/opt/kernelbox/home}"
bin="${KERNELBOX_BIN:-/usr/local/bin/kernelbox}"
workdir="${KERNELBOX_WORKDIR:-/home/user}"
mkdir -p "$workdir"

pid=
stop() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid"
  exit 0
}
trap stop TERM INT

while true; do
  "$bin" agent --addr 0.0.0.0 --port 49999 --envd-port 49983 --workdir "$workdir" "$@" &
  pid=$!
  wait "$pid"
  echo "kernelbox agent exited ($?); restarting in 1 s" >&2
  sleep 1
done
