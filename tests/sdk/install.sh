#!/usr/bin/env bash
# Installs the official E2B SDKs used by kernelbox's SDK compatibility suites (tests/sdk/).
#
#   tests/sdk/install.sh            install or update what is missing or stale
#   tests/sdk/install.sh --force    reinstall both
#
# Everything goes under $KERNELBOX_HOME/sdk (default $HOME/.kernelbox/sdk), never into the repo:
#   $KERNELBOX_HOME/sdk/python   a venv with the exact pins of tests/sdk/python/requirements.txt
#   $KERNELBOX_HOME/sdk/js       tests/sdk/js/package.json + package-lock.json, installed with `npm ci`
#
# Idempotent: each part records a stamp (a hash of its pin files and of the interpreter version).
# When the stamp matches, the part is skipped without touching the network, so a second run takes
# well under a second. Changing a pin file reinstalls that part from scratch.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KERNELBOX_HOME="${KERNELBOX_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.kernelbox}"
sdk_root="$KERNELBOX_HOME/sdk"
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "==> $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }

hash_of() { cat "$@" | sha256sum | cut -c1-64; }

mkdir -p "$sdk_root"

# ---------------------------------------------------------------- python SDK venv
install_python() {
  local req="$here/python/requirements.txt"
  local venv="$sdk_root/python"
  local stamp_file="$venv/.kernelbox-stamp"
  command -v python3 >/dev/null || die "python3 not found (Debian: apt-get install python3 python3-venv)"
  local stamp
  stamp="$( { hash_of "$req"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-64)"

  if [[ $force == 0 && -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    log "python SDK venv: up to date ($venv)"
    return
  fi

  log "python SDK venv: creating $venv"
  # No stamp until the install has fully succeeded, so an interrupted run is redone next time.
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  log "python SDK venv: pip install -r tests/sdk/python/requirements.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
  "$venv/bin/python" -c 'import e2b_code_interpreter, e2b, pytest, pytest_timeout' \
    || die "python SDK venv: import check failed"
  cp "$req" "$venv/requirements.installed.txt"
  echo "$stamp" >"$stamp_file"
  log "python SDK venv: installed ($("$venv/bin/python" -m pip show e2b-code-interpreter | sed -n 's/^Version: /e2b-code-interpreter /p'), $("$venv/bin/python" -m pip show e2b | sed -n 's/^Version: /e2b /p'))"
}

# ---------------------------------------------------------------- JS SDK (npm ci)
install_js() {
  local pkg="$here/js/package.json" lock="$here/js/package-lock.json"
  local dir="$sdk_root/js"
  local stamp_file="$dir/.kernelbox-stamp"
  command -v node >/dev/null || die "node not found (Node 20 or newer is needed)"
  command -v npm >/dev/null || die "npm not found"
  [[ -f "$lock" ]] || die "missing $lock"
  local stamp
  stamp="$( { hash_of "$pkg" "$lock"; node --version; } | sha256sum | cut -c1-64)"

  if [[ $force == 0 && -f "$dir/node_modules/@e2b/code-interpreter/package.json" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    log "JS SDK node_modules: up to date ($dir)"
    return
  fi

  log "JS SDK node_modules: npm ci in $dir"
  mkdir -p "$dir"
  rm -f "$stamp_file"
  cp "$pkg" "$lock" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  local got
  got="$(node -e 'console.log(require(process.argv[1]).version)' "$dir/node_modules/@e2b/code-interpreter/package.json")"
  [[ "$got" == "2.8.0" ]] || die "expected @e2b/code-interpreter 2.8.0, got $got"
  echo "$stamp" >"$stamp_file"
  log "JS SDK node_modules: installed (@e2b/code-interpreter $got, e2b $(node -e 'console.log(require(process.argv[1]).version)' "$dir/node_modules/e2b/package.json"))"
}

log "SDKs for tests/sdk into $sdk_root"
install_python
install_js
log "done"
