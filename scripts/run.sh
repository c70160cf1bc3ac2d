#!/usr/bin/env bash
# The first command: set up everything kernelbox needs and start the agent.
#   ./scripts/run.sh [agent options]    e.g. ./scripts/run.sh --port 49999 --env FOO=bar
# Installs into $KERNELBOX_HOME (default ~/.kernelbox); builds outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI may start us without HOME; take it from the user database then.
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export KERNELBOX_HOME="${KERNELBOX_HOME:-$HOME/.kernelbox}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KERNELBOX_HOME/target}"

echo "==> [1/3] building kernelbox (release; a few minutes on the first run)"
cargo build --release --locked --bin kernelbox
bin="$CARGO_TARGET_DIR/release/kernelbox"

echo "==> [2/3] kernelbox setup (kernels into $KERNELBOX_HOME; idempotent)"
"$bin" setup --source "$PWD/kernels"

echo "==> [3/3] kernelbox agent"
exec "$bin" agent "$@"
