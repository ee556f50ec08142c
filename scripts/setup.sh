#!/usr/bin/env bash
# Sets up everything iapdcnn needs on a fresh Debian machine (run as root, or with sudo):
# apt packages, .venv, the pinned TensorFlow 2.21 stack (tf-keras and Keras 3), Horovod 0.28.1
# built from its sdist with our patch (third_party/horovod), and iapdcnn itself.
# Idempotent: each step checks first, so a second run on a set-up machine takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IAPDCNN_VENV:-$ROOT/.venv}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
STAMP_DIR="$VENV/.iapdcnn-setup"
HVD_VERSION=0.28.1
HVD_SHA256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0
HVD_PATCH="$ROOT/third_party/horovod/horovod-$HVD_VERSION.patch"
HVD_DIR="$ROOT/build/horovod"   # the downloaded sdist (kept) and the patched source tree
log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. system packages -------------------------------------------------------------------------
APT_PKGS=(g++ make cmake ninja-build git rsync patch dataset-fashion-mnist)
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

# Python 3.11 to 3.13 (TensorFlow 2.21's range that we test): IAPDCNN_PYTHON, else the newest of
# python3.13, python3.12, python3.11 that runs (a pyenv shim for a version not selected exists on
# PATH but does not run, so each candidate is run, not just looked up).
py_ok() { "$1" -c 'import sys, venv; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; }
if [ -n "${IAPDCNN_PYTHON:-}" ]; then
  PY="$IAPDCNN_PYTHON"
  py_ok "$PY" || die "IAPDCNN_PYTHON=$PY does not run as Python 3.11, 3.12 or 3.13 with venv"
else
  PY=""
  for c in python3.13 python3.12 python3.11; do
    if py_ok "$c"; then PY="$c"; break; fi
  done
  [ -n "$PY" ] || die "no Python 3.11, 3.12 or 3.13 found (python3.13/3.12/3.11 on PATH); install one or set IAPDCNN_PYTHON"
fi

# --- 2. virtual environment ----------------------------------------------------------------------
# An existing venv on a supported Python is kept (recreate it by removing it).
if [ -x "$VENV/bin/python" ] && ! py_ok "$VENV/bin/python"; then
  log "$VENV has $("$VENV/bin/python" -V 2>&1 || echo 'a broken Python'); recreating it with $PY"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $("$PY" -V 2>&1)"
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
PYTAG="$("$VPY" -c 'import sys; print("py%d%d" % sys.version_info[:2])')"
req_hash="$(cat "$CONSTRAINTS" "$ROOT/requirements/dev.txt" | sha256sum | cut -c1-16)-$TF_REQ-$PYTAG"
if [ "$(cat "$STAMP_DIR/python-stack" 2>/dev/null)" != "$req_hash" ]; then
  log "installing $TF_REQ and the pinned Python stack"
  pip_install --upgrade pip setuptools wheel
  pip_install "$TF_REQ" -r "$ROOT/requirements/dev.txt"
  # Keras 2 for the trainer and Horovod's Keras API. tf-keras declares a dependency on the full
  # `tensorflow` package, which would pull a second, 572 MB TensorFlow next to tensorflow-cpu.
  pip_install --no-deps tf-keras
  echo "$req_hash" >"$STAMP_DIR/python-stack"
fi

# --- 4. Horovod, built from its sdist with our patch, TensorFlow + Gloo --------------------------
horovod_ok() {
  local out
  out="$("$VENV/bin/horovodrun" --check-build 2>/dev/null)" || return 1
  grep -q "\[X\] TensorFlow" <<<"$out" && grep -q "\[X\] Gloo" <<<"$out"
}
# Rebuilt when what it compiles against changes (TensorFlow, Python, the patch), not for any pin.
hvd_hash="$(grep -E '^(tensorflow|tensorflow-cpu|horovod)==' "$CONSTRAINTS" | cat - "$HVD_PATCH" |
  sha256sum | cut -c1-16)-$TF_REQ-$PYTAG"
hvd_lib="$("$VPY" -c 'import glob, sysconfig; print(*glob.glob(sysconfig.get_paths()["purelib"] + "/horovod/tensorflow/mpi_lib*.so"))')"
if [ -z "$hvd_lib" ] || [ "$(cat "$STAMP_DIR/horovod" 2>/dev/null)" != "$hvd_hash" ]; then
  for tool in g++ cmake make patch; do
    command -v "$tool" >/dev/null || die "Horovod build needs '$tool' (apt-get install $tool)"
  done
  "$VPY" -c "import tensorflow" 2>/dev/null || die "Horovod build needs TensorFlow importable in $VENV first"
  sdist="$HVD_DIR/horovod-$HVD_VERSION.tar.gz"
  if [ ! -f "$sdist" ] || [ "$(sha256sum "$sdist" | cut -d' ' -f1)" != "$HVD_SHA256" ]; then
    log "downloading the Horovod $HVD_VERSION sdist"
    mkdir -p "$HVD_DIR"
    rm -f "$sdist"
    "$VPY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
      -d "$HVD_DIR" "horovod==$HVD_VERSION" || die "could not download the Horovod $HVD_VERSION sdist"
    [ "$(sha256sum "$sdist" | cut -d' ' -f1)" = "$HVD_SHA256" ] ||
      die "$sdist is not the Horovod $HVD_VERSION sdist we patch (sha256 differs from $HVD_SHA256)"
  fi
  # A fresh source tree each time, so a half-applied patch or an old build never carries over.
  rm -rf "$HVD_DIR/src"
  mkdir -p "$HVD_DIR/src"
  tar -xzf "$sdist" -C "$HVD_DIR/src"
  hsrc="$HVD_DIR/src/horovod-$HVD_VERSION"
  bash "$ROOT/scripts/apply_patch.sh" "$hsrc" "$HVD_PATCH"
  log "building Horovod $HVD_VERSION (patched) with TensorFlow + Gloo (about 5 minutes, once)"
  hlog="$STAMP_DIR/horovod-build.log"
  if ! HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=gloo \
    MAKEFLAGS="-j$(nproc)" \
    "$VPY" -m pip install -q --disable-pip-version-check --no-build-isolation --no-cache-dir \
    --force-reinstall --no-deps "$hsrc" >"$hlog" 2>&1; then
    # Say what is missing first, then the tail of the log.
    grep -m5 -iE "could not find|not found|no such file|missing|error:" "$hlog" >&2 || true
    tail -n 30 "$hlog" >&2
    die "Horovod build failed (full log: $hlog). It needs g++, cmake, make and TensorFlow 2.21 in $VENV."
  fi
  horovod_ok || die "Horovod installed but 'horovodrun --check-build' lacks TensorFlow or Gloo (log: $hlog)"
  rm -rf "$HVD_DIR/src"   # the sdist stays (set-up's test applies the patch to it)
  echo "$hvd_hash" >"$STAMP_DIR/horovod"
fi

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
    -C build-dir="$ROOT/build/wheel-$PYTAG" "$STAGE"
  echo "$src_hash" >"$STAMP_DIR/iapdcnn"
fi
log "ready: $VENV"
