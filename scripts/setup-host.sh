#!/usr/bin/env bash
# Host packages that sandboxes need (not the kernels: kernels/setup.sh installs those):
#   mmdebstrap   builds the `base` template's Debian root from Debian's archive
#   slirp4netns  user-mode networking for sandboxes (no change to the host's firewall or routes)
# Idempotent; installs with apt only as root (sandboxes need root anyway), and says so otherwise.
set -euo pipefail
PKGS=(mmdebstrap slirp4netns)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" = 0 ]; then
  echo "    already installed: ${PKGS[*]}"
elif [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "    skipped (needs root and apt-get): ${missing[*]}; sandbox templates cannot be built"
else
  echo "    installing: ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
fi
