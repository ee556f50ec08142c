#!/usr/bin/env bash
# Sets up everything iapdcnn needs on a fresh Debian machine (run as root, or with sudo):
# apt packages, .venv, the pinned TensorFlow/Horovod stack, and iapdcnn itself.
# Idempotent: each step checks first, so a second run on a set-up machine takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IAPDCNN_VENV:-$ROOT/.venv}"
PY="${IAPDCNN_PYTHON:-python3.11}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
STAMP_DIR="$VENV/.iapdcnn-setup"
log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. system packages -------------------------------------------------------------------------
APT_PKGS=(g++ make cmake ninja-build git rsync dataset-fashion-mnist)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || die "apt-get not found; install these packages yourself: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  log "installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v "$PY" >/dev/null || die "$PY not found: iapdcnn needs Python 3.11 (set IAPDCNN_PYTHON to another interpreter)"

# --- 2. virtual environment ----------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
mkdir -p "$STAMP_DIR"
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "$@"; }

# --- 3. pinned Python stack ----------------------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  TF_REQ="tensorflow[and-cuda]"
else
  TF_REQ="tensorflow-cpu"
fi
req_hash="$(cat "$CONSTRAINTS" "$ROOT/requirements/dev.txt" | sha256sum | cut -c1-16)-$TF_REQ"
if [ "$(cat "$STAMP_DIR/python-stack" 2>/dev/null)" != "$req_hash" ]; then
  log "installing $TF_REQ and the pinned Python stack"
  pip_install --upgrade pip setuptools wheel
  pip_install "$TF_REQ" -r "$ROOT/requirements/dev.txt"
  echo "$req_hash" >"$STAMP_DIR/python-stack"
fi

# --- 4. Horovod, built from source with Gloo -----------------------------------------------------
horovod_ok() {
  local out
  out="$("$VENV/bin/horovodrun" --check-build 2>/dev/null)" || return 1
  grep -q "\[X\] TensorFlow" <<<"$out" && grep -q "\[X\] Gloo" <<<"$out"
}
hvd_lib="$("$VPY" -c 'import glob, sysconfig; print(*glob.glob(sysconfig.get_paths()["purelib"] + "/horovod/tensorflow/mpi_lib*.so"))')"
if [ -n "$hvd_lib" ] && [ "$(cat "$STAMP_DIR/horovod" 2>/dev/null)" = "$req_hash" ]; then
  : # built and checked before against this stack
elif ! horovod_ok; then
  for tool in g++ cmake make; do
    command -v "$tool" >/dev/null || die "Horovod build needs '$tool' (apt-get install $tool)"
  done
  "$VPY" -c "import tensorflow" 2>/dev/null || die "Horovod build needs TensorFlow importable in $VENV first"
  log "building Horovod 0.28.1 with TensorFlow + Gloo (about 5 minutes, once)"
  hlog="$STAMP_DIR/horovod-build.log"
  if ! HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=gloo \
    MAKEFLAGS="-j$(nproc)" \
    "$VPY" -m pip install -q --disable-pip-version-check --no-build-isolation --no-cache-dir --force-reinstall --no-deps \
    -c "$CONSTRAINTS" "horovod[tensorflow]==0.28.1" >"$hlog" 2>&1; then
    # Say what is missing first, then the tail of the log.
    grep -m5 -iE "could not find|not found|no such file|missing|error:" "$hlog" >&2 || true
    tail -n 30 "$hlog" >&2
    die "Horovod build failed (full log: $hlog). It needs g++, cmake, make and TensorFlow 2.15 in $VENV."
  fi
  horovod_ok || die "Horovod installed but 'horovodrun --check-build' lacks TensorFlow or Gloo (log: $hlog)"
fi
echo "$req_hash" >"$STAMP_DIR/horovod"

# --- 5. iapdcnn itself ----------------------------------------------------------------------------
# Built from a staged copy of the tracked sources (so in-place development builds in python/ never
# leak into the install); the stage and the CMake build dir persist, so rebuilds are incremental,
# and nothing is rebuilt when no source changed.
STAGE="$ROOT/build/stage"
mkdir -p "$STAGE"
(cd "$ROOT" && git ls-files -co --exclude-standard -- pyproject.toml README.md CMakeLists.txt csrc \
  tfops python) >"$STAMP_DIR/files"
rsync -a --checksum --files-from="$STAMP_DIR/files" "$ROOT/" "$STAGE/"
# Drop staged files whose source is gone (CMake globs csrc/ and tfops/).
(cd "$STAGE" && find . -type f -printf '%P\n' | LC_ALL=C sort |
  LC_ALL=C comm -23 - <(LC_ALL=C sort "$STAMP_DIR/files") | xargs -r -d '\n' rm -f)
src_hash="$(cd "$STAGE" && xargs -d '\n' sha256sum <"$STAMP_DIR/files" | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP_DIR/iapdcnn" 2>/dev/null)" != "$src_hash" ] ||
  ! (cd / && "$VPY" -c "import iapdcnn._C, os, iapdcnn; assert os.path.exists(os.path.join(iapdcnn.__path__[0], '_tfops.so'))") 2>/dev/null; then
  log "building and installing iapdcnn"
  "$VPY" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
    -C build-dir="$ROOT/build/wheel" "$STAGE"
  echo "$src_hash" >"$STAMP_DIR/iapdcnn"
fi
log "ready: $VENV"
