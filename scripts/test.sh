#!/usr/bin/env bash
# The second command: set up everything the tests need and run every test.
# Idempotent: a second run reuses $KERNELBOX_HOME (kernels, SDKs, build cache) and is fast.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI may start us without HOME; take it from the user database then.
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export KERNELBOX_HOME="${KERNELBOX_HOME:-$HOME/.kernelbox}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KERNELBOX_HOME/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$SECONDS

echo "==> [1/7] host packages for sandboxes (mmdebstrap, slirp4netns)"
bash scripts/setup-host.sh

echo "==> [2/7] kernels (python venv, Deno, bash, R, Java) into $KERNELBOX_HOME"
bash kernels/setup.sh

echo "==> [3/7] official E2B SDKs (Python and JS) for the compatibility suites"
bash tests/sdk/install.sh

echo "==> [4/7] format and lint"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

echo "==> [5/7] build"
cargo build --locked --all-targets

echo "==> [6/7] sandbox templates base and code-interpreter-v1 (Debian via mmdebstrap, kernels inside; minutes the first time)"
if [ "$(id -u)" = 0 ]; then
  "$CARGO_TARGET_DIR/debug/kernelbox" template build
else
  echo "    skipped (not root): the template tests skip too"
fi

echo "==> [7/7] tests"
cargo test --locked

echo "==> all tests passed in $((SECONDS - start)) s"
