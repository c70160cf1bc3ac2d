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

echo "==> [1/5] kernels (python venv, Deno, bash, R, Java) into $KERNELBOX_HOME"
bash kernels/setup.sh

echo "==> [2/5] official E2B SDKs (Python and JS) for the compatibility suites"
bash tests/sdk/install.sh

echo "==> [3/5] format and lint"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

echo "==> [4/5] build"
cargo build --locked --all-targets

echo "==> [5/5] tests"
cargo test --locked

echo "==> all tests passed in $((SECONDS - start)) s"
