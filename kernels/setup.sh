#!/usr/bin/env bash
# kernelbox kernel installer (see kernels/README.md).
#
#   bash kernels/setup.sh [--no-apt]
#
# Installs everything under $KERNELBOX_HOME (default: $HOME/.kernelbox):
#   python/          venv with ipykernel, bash_kernel and the data stack (kernels/python/requirements.txt),
#                    and JJava's jar when a JDK is present (kernels/python/requirements-java.txt)
#   node/            npm prefix holding the pinned deno binary (kernels/javascript/package*.json)
#   deno/            DENO_DIR used by the javascript kernel
#   kernels/<name>/  kernelspecs (kernel.json + side files), placeholders left for the agent
#   ipython/         IPYTHONDIR with profile_default (config + start-up formatters)
#   cache/           pip / npm / matplotlib caches
#   .stamps/         hashes of the pin files; a step whose stamp matches is skipped
# Only apt packages (root only, not with --no-apt: R, the JDK, fonts) are installed system-wide.
# Idempotent: a second run with unchanged pins does no network access and takes a few seconds.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KB="${KERNELBOX_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.kernelbox}"
NO_APT=0
for arg in "$@"; do
  case "$arg" in
    --no-apt) NO_APT=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

STEPS=7
step() { local n="$1"; shift; echo "==> [$n/$STEPS] $*"; }
info() { echo "    $*"; }
die() { echo "setup.sh: error: $*" >&2; exit 1; }
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_ok() { [ -f "$KB/.stamps/$1" ] && [ "$(cat "$KB/.stamps/$1")" = "$2" ]; }
stamp_set() { printf '%s\n' "$2" > "$KB/.stamps/$1.tmp" && mv -f "$KB/.stamps/$1.tmp" "$KB/.stamps/$1"; }

mkdir -p "$KB" "$KB/.stamps" "$KB/cache" "$KB/deno" "$KB/kernels"
KB="$(cd "$KB" && pwd)"
echo "kernelbox kernels -> $KB"
T0=$SECONDS

# Keep every tool's cache and state out of the real home.
export PIP_CACHE_DIR="$KB/cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-100}"
export npm_config_cache="$KB/cache/npm" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
export DENO_DIR="$KB/deno" NO_COLOR=1
export MPLCONFIGDIR="$KB/cache/matplotlib"

# --------------------------------------------------------------------------------------------
step 1 "system packages (apt: r-cran-irkernel, openjdk-17-jdk-headless, fonts-noto-cjk)"
APT_PKGS=(r-cran-irkernel openjdk-17-jdk-headless fonts-noto-cjk)
if [ "$NO_APT" = 1 ]; then
  info "skipped (--no-apt): no R or Java kernel (unless already installed), default matplotlib font"
elif [ "$(id -u)" != 0 ]; then
  info "skipped (not root): no R or Java kernel unless R + IRkernel / a JDK are already installed"
elif ! command -v apt-get >/dev/null 2>&1; then
  info "skipped (no apt-get on this system)"
else
  missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" = 0 ]; then
    info "already installed: ${APT_PKGS[*]}"
  else
    info "installing: ${missing[*]} (apt-get update + install, may take a few minutes)"
    export DEBIAN_FRONTEND=noninteractive
    # Slim Debian images drop /usr/share/man; the JDK's postinst links its man pages there with
    # update-alternatives and fails when the folder is missing.
    mkdir -p /usr/share/man/man1
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
  fi
fi

# --------------------------------------------------------------------------------------------
step 2 "python kernel venv at $KB/python (pip install, may take a few minutes)"
PY="${KERNELBOX_PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "$PY not found (set KERNELBOX_PYTHON to a Python >= 3.11)"
REQ="$SRC/python/requirements.txt"
CONSTRAINTS="$SRC/python/constraints.txt"
py_hash="$(hash_of "$REQ" "$CONSTRAINTS")-$("$PY" -c 'import sys; print(sys.version.split()[0])')"
if stamp_ok python "$py_hash" && "$KB/python/bin/python" -c 'import ipykernel, bash_kernel' 2>/dev/null; then
  info "up to date (stamp matches $REQ)"
else
  if ! "$KB/python/bin/python" -c 'import sys' 2>/dev/null; then
    info "creating venv with $(command -v "$PY") ($("$PY" --version 2>&1))"
    "$PY" -m venv --clear "$KB/python"
  fi
  "$KB/python/bin/python" -m pip install --progress-bar on -r "$REQ" -c "$CONSTRAINTS"
  stamp_set python "$py_hash"
fi

# --------------------------------------------------------------------------------------------
step 3 "java kernel: JJava into the python venv (needs a JDK 11+ with jshell)"
# JJava runs cells with JShell, which is part of a JDK (a JRE lacks the jdk.jshell module). Its jar
# comes from PyPI as data files of the `jjava` wheel and lands in the venv's share/ folder. The pin
# has its own file and stamp, so adding or bumping it never re-runs step 2 or the font cache, and
# `--no-deps` keeps pip from touching the venv's other packages (jjava depends on nothing).
JAVA_REQ="$SRC/python/requirements-java.txt"
JJAVA_JAR="$KB/python/share/jupyter/kernels/java/jjava.jar"
HAVE_JDK=0
jdk_major="$(java --list-modules 2>/dev/null | sed -n 's/^jdk\.jshell@\([0-9][0-9]*\).*/\1/p' | head -1 || true)"
if [ -n "$jdk_major" ] && [ "$jdk_major" -ge 11 ]; then
  HAVE_JDK=1
fi
java_hash="$(hash_of "$JAVA_REQ")"
if [ "$HAVE_JDK" = 0 ]; then
  info "skipped: no JDK 11+ with jshell on PATH (as root, step 1 installs openjdk-17-jdk-headless)"
elif stamp_ok java "$java_hash" && [ -f "$JJAVA_JAR" ]; then
  info "up to date (stamp matches $JAVA_REQ; JDK $jdk_major)"
else
  "$KB/python/bin/python" -m pip install --progress-bar on --no-deps -r "$JAVA_REQ"
  [ -f "$JJAVA_JAR" ] || die "jjava installed, but $JJAVA_JAR is missing"
  stamp_set java "$java_hash"
  info "JJava jar at $JJAVA_JAR (JDK $jdk_major)"
fi

# --------------------------------------------------------------------------------------------
step 4 "deno for the javascript kernel at $KB/node (npm, downloads ~40 MB the first time)"
command -v npm >/dev/null 2>&1 || die "npm not found (Node 20+ with npm is required)"
JS="$SRC/javascript"
lock_files=("$JS/package.json")
[ -f "$JS/package-lock.json" ] && lock_files+=("$JS/package-lock.json")
deno_hash="$(hash_of "${lock_files[@]}")"
DENO_BIN="$KB/bin/deno"
if stamp_ok deno "$deno_hash" && "$DENO_BIN" --version >/dev/null 2>&1; then
  info "up to date (stamp matches $JS/package.json)"
else
  mkdir -p "$KB/node"
  cp -f "${lock_files[@]}" "$KB/node/"
  if [ -f "$KB/node/package-lock.json" ]; then
    (cd "$KB/node" && npm ci --no-audit --no-fund)
  else
    (cd "$KB/node" && npm install --no-audit --no-fund)
  fi
  # Stable path for the kernelspec: the native binary from the platform package
  # (node_modules/.bin/deno is only the native binary when deno's postinstall ran).
  native=""
  for cand in "$KB"/node/node_modules/@deno/*/deno; do
    if [ -x "$cand" ] && "$cand" --version >/dev/null 2>&1; then native="$cand"; break; fi
  done
  [ -n "$native" ] || die "no runnable deno binary under $KB/node/node_modules/@deno/"
  mkdir -p "$KB/bin"
  ln -sfn "../${native#"$KB/"}" "$KB/bin/deno.tmp" && mv -fT "$KB/bin/deno.tmp" "$KB/bin/deno"
  stamp_set deno "$deno_hash"
fi
info "$("$DENO_BIN" --version | head -1) ($KB/bin/deno -> $(readlink -f "$DENO_BIN"))"

# --------------------------------------------------------------------------------------------
step 5 "kernelspecs -> $KB/kernels"
# The launcher the python3 and bash kernelspecs start their kernels with (see the file).
cp -f "$SRC/python/kernelbox_launch.py" "$KB/python/kernelbox_launch.py.tmp"
mv -f "$KB/python/kernelbox_launch.py.tmp" "$KB/python/kernelbox_launch.py"
HAVE_R=0
if command -v R >/dev/null 2>&1 && R --slave -e 'quit(status = !requireNamespace("IRkernel", quietly = TRUE))' >/dev/null 2>&1; then
  HAVE_R=1
fi
for spec in "$SRC"/*/kernel.json; do
  dir="$(dirname "$spec")"; name="$(basename "$dir")"
  if [ "$name" = r ] && [ "$HAVE_R" = 0 ]; then
    rm -rf "$KB/kernels/r"
    info "r: skipped (R with IRkernel not available)"
    continue
  fi
  if [ "$name" = java ] && { [ "$HAVE_JDK" = 0 ] || [ ! -f "$JJAVA_JAR" ]; }; then
    rm -rf "$KB/kernels/java"
    info "java: skipped (no JDK 11+ with jshell, or JJava not installed)"
    continue
  fi
  rm -rf "$KB/kernels/$name.tmp"
  cp -R "$dir" "$KB/kernels/$name.tmp"
  rm -rf "$KB/kernels/$name"
  mv "$KB/kernels/$name.tmp" "$KB/kernels/$name"
  info "$name"
done

# matplotlibrc names Noto Sans CJK JP (fonts-noto-cjk). Without that font matplotlib would log
# "findfont: Font family ... not found" to stderr on every plot, so drop the line from the
# installed copy when the font is absent.
MPLRC="$KB/kernels/python3/matplotlibrc"
HAVE_CJK=0
if [ -f "$MPLRC" ]; then
  if ls /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc >/dev/null 2>&1 \
     || { command -v fc-list >/dev/null 2>&1 && fc-list 2>/dev/null | grep -q "Noto Sans CJK JP"; }; then
    HAVE_CJK=1
  else
    sed -i '/Noto Sans CJK/d' "$MPLRC"
    info "python3: Noto Sans CJK JP not installed, matplotlibrc uses the default font"
  fi
fi

# --------------------------------------------------------------------------------------------
step 6 "ipython profile -> $KB/ipython/profile_default"
mkdir -p "$KB/ipython/profile_default/startup"
# Only our files are replaced; IPython's own state (history.sqlite, ...) is left alone.
rm -f "$KB/ipython/profile_default/startup/"*kernelbox*.py
cp -f "$SRC/python/profile_default/ipython_kernel_config.py" "$KB/ipython/profile_default/"
cp -f "$SRC/python/profile_default/startup/"*.py "$KB/ipython/profile_default/startup/"
for f in "$KB/ipython/profile_default/ipython_kernel_config.py" "$KB/ipython/profile_default/startup/"*.py; do
  info "$(basename "$f")"
done

# --------------------------------------------------------------------------------------------
step 7 "matplotlib font cache (so the first plot in a kernel prints nothing to stderr)"
fonts_hash="$(
  { echo "$py_hash"; echo "cjk=$HAVE_CJK"
    find /usr/share/fonts /usr/local/share/fonts -type f 2>/dev/null | sort; } | sha256sum | cut -d' ' -f1)"
if stamp_ok mplfonts "$fonts_hash" && ls "$MPLCONFIGDIR"/fontlist-*.json >/dev/null 2>&1; then
  info "up to date"
else
  rm -rf "$MPLCONFIGDIR"; mkdir -p "$MPLCONFIGDIR"
  MATPLOTLIBRC="$MPLRC" "$KB/python/bin/python" -c 'import matplotlib.font_manager'
  stamp_set mplfonts "$fonts_hash"
  info "built in $MPLCONFIGDIR"
fi

echo "==> done in $((SECONDS - T0))s: kernels $(cd "$KB/kernels" && ls | tr '\n' ' ')"
