#!/usr/bin/env bash
# The first command: set up everything kernelbox needs and start it.
#   ./scripts/run.sh [options]
# As root: `kernelbox serve` on :3000 (E2B's API and gateway; isolated sandboxes from the base and
# code-interpreter-v1 templates, built on first start), e.g. ./scripts/run.sh --port 3000.
# Not root: `kernelbox agent` on :49999/:49983 (the code interpreter and sandbox API of one
# sandbox, no isolation; for the SDKs' debug mode), e.g. ./scripts/run.sh --env FOO=bar.
# Installs into $KERNELBOX_HOME (default ~/.kernelbox); builds outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI may start us without HOME; take it from the user database then.
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export KERNELBOX_HOME="${KERNELBOX_HOME:-$HOME/.kernelbox}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KERNELBOX_HOME/target}"

echo "==> [1/4] building kernelbox (release; a few minutes on the first run)"
cargo build --release --locked --bin kernelbox
bin="$CARGO_TARGET_DIR/release/kernelbox"

echo "==> [2/4] kernelbox setup (kernels into $KERNELBOX_HOME; idempotent)"
"$bin" setup --source "$PWD/kernels"

if [ "$(id -u)" = 0 ]; then
  echo "==> [3/4] host packages for sandboxes (mmdebstrap, slirp4netns)"
  bash scripts/setup-host.sh
  echo "==> [4/4] kernelbox serve (builds the templates on first start; minutes, with progress)"
  exec "$bin" serve "$@"
else
  echo "==> [3/4] not root: no isolated sandboxes (kernelbox serve needs root)"
  echo "==> [4/4] kernelbox agent (one sandbox's APIs, for the SDKs' debug mode)"
  exec "$bin" agent "$@"
fi
