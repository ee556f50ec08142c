#!/usr/bin/env bash
# The GPU check (issue 19): one script, under 8 minutes, for a GPU machine with CUDA, PyTorch and
# CuPy but no TensorFlow, no Eigen and no network. It builds iapdcnn._C with CUDA for sm_90 (no
# TensorFlow op library) into build/gpu, then runs, each stage with its own timeout inside one
# overall budget (a stage that no longer fits is recorded as skipped, "out of time"):
#   build      cmake + ninja, _C only, staged as a package in build/gpu/pkg (first on PYTHONPATH)
#   tests      pytest tests/test_cuda.py: CUDA == CPU for every op (junit XML turned into JSON)
#   bench      benchmarks/bench_conv_gpu.py --no-features: conv forward and both gradients against
#              cuDNN, fp32 and fp16, ResNet-50 shapes at batch 32
#   features   benchmarks/bench_conv_gpu.py --features-only: EdgeFeatures images/s at 224x224
#   hostile    pytest tests/test_cuda_hostile.py: the CPU's hostile sizes and strides on the GPU,
#              and tensors past 2^31 elements (a pytest of its own, after the figures, so that a
#              slow huge case can cost only its own stage)
#   sanitizer  compute-sanitizer --tool memcheck over a short subset of tests/test_cuda.py
# Every stage writes <stage>.json into $OUT (default runs/gpu_check), with summary.json and the
# full log gpu_check.log: 8 files, the most that come back. The last stdout line is one compact JSON object,
# {"gpu_check": {...}}. Exit status 1 when the build failed, a test failed, a benchmark's
# correctness check failed or memcheck reported errors; 0 otherwise (skips included).
#
#   bash scripts/gpu_check.sh --prepare   # here, once: fill .gpu/ (git-ignored) with what the
#                                         # GPU machine lacks: Eigen's headers (TensorFlow's copy,
#                                         # or a system eigen3) and a Python 3.12's C headers
#   bash scripts/gpu_check.sh             # there (carry .gpu along)
#
# Environment: IAPDCNN_GPU_PYTHON (python3), OUT, IAPDCNN_GPU_BUDGET (seconds, 480),
# IAPDCNN_GPU_ARCH (90), IAPDCNN_GPU_STAGES (the stages after the build to run, comma-separated,
# default all: tests,bench,features,hostile,sanitizer; a rerun after a fix can take only what
# failed), IAPDCNN_SANITIZER_K (the -k expression of the memcheck subset),
# IAPDCNN_CUBLAS_LIBRARY (found by the script when unset), IAPDCNN_VENV (--prepare: the venv whose
# TensorFlow holds Eigen).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GPU_DIR="$ROOT/.gpu"

# What the compiled module is built from, hashed: a prebuilt _C is used only for these sources.
source_hash() {
  (cd "$ROOT" && find CMakeLists.txt csrc python/bindings python/iapdcnn/_build_info.py.in \
    -type f ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}

# ---- --prepare: runs where TensorFlow is installed ----------------------------------------------
prepare() {
  set -e
  mkdir -p "$GPU_DIR"
  if [ -f "$GPU_DIR/include/Eigen/Core" ] && [ -d "$GPU_DIR/include/unsupported" ]; then
    echo "gpu_check --prepare: Eigen already in $GPU_DIR/include"
  else
    local src="" cand vpy
    for vpy in "${IAPDCNN_VENV:+$IAPDCNN_VENV/bin/python}" "$ROOT/.venv/bin/python" \
      "$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)/../.venv/bin/python"; do
      [ -n "$vpy" ] && [ -x "$vpy" ] || continue
      # Where TensorFlow's include folder is, without importing TensorFlow.
      cand="$("$vpy" -c 'import importlib.util, os
s = importlib.util.find_spec("tensorflow")
print(os.path.join(os.path.dirname(s.origin), "include") if s else "")' 2>/dev/null || true)"
      if [ -n "$cand" ] && [ -f "$cand/Eigen/Core" ]; then src="$cand" && break; fi
    done
    [ -n "$src" ] || { [ -f /usr/include/eigen3/Eigen/Core ] && src=/usr/include/eigen3; }
    if [ -z "$src" ]; then
      echo "gpu_check --prepare: no Eigen found (set IAPDCNN_VENV to a venv with TensorFlow, or" \
        "install libeigen3-dev)" >&2
      exit 1
    fi
    rm -rf "$GPU_DIR/include.tmp" && mkdir -p "$GPU_DIR/include.tmp"
    cp -r "$src/Eigen" "$GPU_DIR/include.tmp/"
    [ ! -d "$src/unsupported" ] || cp -r "$src/unsupported" "$GPU_DIR/include.tmp/"
    rm -rf "$GPU_DIR/include" && mv "$GPU_DIR/include.tmp" "$GPU_DIR/include"
    echo "gpu_check --prepare: Eigen from $src -> $GPU_DIR/include"
  fi
  # A Python 3.12 with its C headers (the GPU machine's minor version): its headers are used only
  # where the GPU machine's Python has none (a distribution Python without its -dev package).
  local inc="" py=""
  for py in "${IAPDCNN_GPU_PYTHON:-}" python3.12 \
    "$(command -v pyenv >/dev/null && pyenv root)"/versions/3.12*/bin/python3.12; do
    [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 || continue
    inc="$("$py" -c 'import sys, sysconfig, os
i = sysconfig.get_paths()["include"]
print(i if sys.version_info[:2] == (3, 12) and os.path.exists(os.path.join(i, "Python.h")) else "")' \
      2>/dev/null || true)"
    [ -z "$inc" ] || break
  done
  if [ -f "$GPU_DIR/python3.12/include/Python.h" ]; then
    echo "gpu_check --prepare: Python 3.12 headers already in $GPU_DIR/python3.12/include"
  elif [ -n "$inc" ]; then
    rm -rf "$GPU_DIR/python3.12" && mkdir -p "$GPU_DIR/python3.12"
    cp -r "$inc" "$GPU_DIR/python3.12/include"
    echo "gpu_check --prepare: Python 3.12 headers from $inc -> $GPU_DIR/python3.12/include"
  else
    echo "gpu_check --prepare: no Python 3.12 with headers found; skipped (only needed where" \
      "the GPU machine's Python has none)"
  fi
  # A fallback _C, compiled here for sm_90 and generic x86-64 with that Python 3.12: used there
  # only when the build fails and the sources are the ones it was built from (the build stage
  # is then still reported as failed).
  local hash pre="$GPU_DIR/prebuilt"
  hash="$(source_hash)"
  if [ -f "$pre/SOURCE" ] && [ "$(cat "$pre/SOURCE")" = "$hash" ] && ls "$pre"/_C*.so >/dev/null 2>&1; then
    echo "gpu_check --prepare: prebuilt _C up to date ($hash)"
  elif [ -n "$inc" ] && "$py" -c 'import pybind11' 2>/dev/null && command -v nvcc >/dev/null; then
    local b="$ROOT/build/gpu-prebuilt" t0 bin
    t0=$(date +%s)
    bin="$(dirname "$(command -v "$py")")"
    if (PATH="$bin:$PATH" cmake -S "$ROOT" -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DIAPDCNN_WITH_TF=OFF -DIAPDCNN_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DIAPDCNN_NATIVE_ARCH=OFF -DPython_EXECUTABLE="$(command -v "$py")" \
      -DIAPDCNN_EIGEN_INCLUDE_DIR="$GPU_DIR/include" &&
      PATH="$bin:$PATH" cmake --build "$b" -j"$(nproc)" --target _C) >"$b.log" 2>&1; then
      rm -rf "$pre" && mkdir -p "$pre"
      cp "$b"/_C*.so "$b/_build_info.py" "$pre/"
      echo "$hash" >"$pre/SOURCE"
      echo "gpu_check --prepare: prebuilt _C ($hash) in $(($(date +%s) - t0)) s -> $pre"
    else
      tail -n 20 "$b.log"
      echo "gpu_check --prepare: the prebuilt _C did not build (log: $b.log); none carried"
      rm -rf "$pre"
    fi
  else
    echo "gpu_check --prepare: no prebuilt _C (needs a Python 3.12 with pybind11, headers and nvcc)"
  fi
  du -sh "$GPU_DIR" | sed 's/^/gpu_check --prepare: total /'
}

if [ "${1:-}" = "--prepare" ]; then
  prepare
  exit 0
elif [ $# -gt 0 ]; then
  echo "usage: bash scripts/gpu_check.sh [--prepare]" >&2
  exit 2
fi

# ---- the check -----------------------------------------------------------------------------------
T0=$(date +%s)
PY="${IAPDCNN_GPU_PYTHON:-python3}"
OUT="${OUT:-$ROOT/runs/gpu_check}"
BUDGET="${IAPDCNN_GPU_BUDGET:-480}"
STAGES="${IAPDCNN_GPU_STAGES:-tests,bench,features,hostile,sanitizer}"
selected() { case ",$STAGES," in *",$1,"*) return 0 ;; esac; return 1; }
ARCH="${IAPDCNN_GPU_ARCH:-90}"
BUILD="$ROOT/build/gpu"
PKG="$BUILD/pkg"
mkdir -p "$OUT" "$BUILD"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
WORK="$BUILD/work"  # stage outputs and junit XML: not in $OUT (its file count is limited)
rm -rf "$WORK" && mkdir -p "$WORK"
: >"$LOG"
exec 3>&1 1>>"$LOG" 2>&1  # everything into the log; fd 3 is the caller's stdout
say() {
  echo "$*"
  echo "$*" >&3
}
elapsed() { echo $(($(date +%s) - T0)); }
left() { echo $((BUDGET - $(elapsed))); }

if ! command -v "$PY" >/dev/null 2>&1 || ! "$PY" -c 'import json, sys' 2>/dev/null; then
  say "gpu_check: Python '$PY' does not run (set IAPDCNN_GPU_PYTHON)"
  echo "{\"gpu_check\": {\"ok\": false, \"error\": \"python '$PY' does not run\"}}" \
    | tee "$OUT/summary.json" >&3
  exit 1
fi
PY="$(command -v "$PY")"
# The Python's own bin first: its cmake, ninja and pytest.
export PATH="$(dirname "$PY"):$PATH"
# nvcc and compute-sanitizer where the toolkit puts them, when not on PATH.
for d in /usr/local/cuda/bin /usr/local/cuda-13*/bin; do
  [ -d "$d" ] && case ":$PATH:" in *":$d:"*) ;; *) PATH="$PATH:$d" ;; esac
done
export PATH

# Stage results go through this Python helper: `report <mode> <stage> <status> <seconds> <rc>
# <output file> [extra]` writes $OUT/<stage>.json; `summary` prints the final line.
REPORT_PY='
import json, os, re, sys, glob
out_dir = os.environ["GPU_CHECK_OUT"]

def tail(path, n=4000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""

def last_json(path):
    """The last stdout line that parses as a JSON object."""
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None

def junit(path):
    import xml.etree.ElementTree as ET
    counts = dict(tests=0, passed=0, failed=0, errors=0, skipped=0)
    failures, skips = [], {}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return {"junit_error": str(e)}
    for case in root.iter("testcase"):
        if not case.get("name"):  # the test a timeout interrupted: pytest leaves it unnamed
            counts["interrupted"] = counts.get("interrupted", 0) + 1
            continue
        counts["tests"] += 1
        name = case.get("classname", "") + "::" + case.get("name", "")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
            kind = "errors"
        else:
            kind = "failed"
        skip = case.find("skipped")
        if bad is not None:
            counts[kind] += 1
            msg = (bad.get("message") or "") + "\n" + (bad.text or "")[-1500:]
            failures.append({"name": name, "kind": kind, "message": msg.strip()[:2000]})
        elif skip is not None:
            counts["skipped"] += 1
            why = (skip.get("message") or "").strip()[:300]
            skips[why] = skips.get(why, 0) + 1
        else:
            counts["passed"] += 1
    return {"counts": counts, "failures": failures[:30], "skip_reasons": skips}

def report(stage, status, seconds, rc, outfile, extra=""):
    d = {"stage": stage, "status": status, "seconds": float(seconds), "rc": int(rc)}
    if stage in ("tests", "hostile"):
        d.update(junit(extra))
        c = d.get("counts")
        if status == "ok" and c and (c["failed"] or c["errors"]):
            d["status"] = "failed"
        if status == "ok" and not c:
            d["status"] = "failed"
    elif stage in ("bench", "features"):
        d["result"] = last_json(outfile)
        if d["result"] is not None and "skipped" in d["result"] and status == "ok":
            d["status"] = "skipped"
            d["reason"] = d["result"]["skipped"]
    elif stage == "sanitizer":
        text = tail(outfile, 200000)
        m = re.findall(r"ERROR SUMMARY: (\d+) error", text)
        d["memcheck_errors"] = int(m[-1]) if m else None
        tool = re.findall(r"^=+ Error: .*$", text, re.M)  # compute-sanitizer itself complaining
        d["tool_error"] = tool[-1][:300] if tool else None
        runs = re.findall(r"^(?!=).*\d+ (?:passed|failed|skipped|error).* in [\d.]+s.*$", text, re.M)
        d["pytest_summary"] = runs[-1].strip("= ")[:300] if runs else None
        passed = re.findall(r"(\d+) passed", runs[-1]) if runs else []
        if status == "ok" or status == "failed":
            if m and int(m[-1]) > 0:
                d["status"] = "errors"
            elif tool or not m:
                d["status"] = "refused"  # the tool did not run the tests instrumented
            elif not passed or int(passed[0]) == 0:
                d["status"] = "refused"
                d["reason"] = "no GPU test ran under compute-sanitizer"
            elif int(rc) == 0:
                d["status"] = "passed"
            else:
                d["status"] = "tests_failed"
    elif stage == "build" and extra:
        d.update(json.loads(extra))
    if d["status"] not in ("ok", "passed", "skipped") or stage == "sanitizer":
        d["tail"] = tail(outfile)
    with open(os.path.join(out_dir, stage + ".json"), "w") as f:
        json.dump(d, f, indent=1)
    return d

def summary(total_seconds, env_json):
    s = {"ok": True, "seconds": float(total_seconds), "env": json.loads(env_json or "{}")}
    stages = {}
    for stage in ("build", "tests", "bench", "features", "hostile", "sanitizer"):
        try:
            d = json.load(open(os.path.join(out_dir, stage + ".json")))
        except (OSError, ValueError):
            d = {"status": "missing"}
        st = {"status": d.get("status"), "s": round(d.get("seconds", 0.0), 1)}
        if d.get("reason"):
            st["reason"] = str(d["reason"])[:160]
        if stage == "build":
            for k in ("used", "cuda", "arch"):
                if k in d:
                    st[k] = d[k]
            if d.get("status") != "ok":
                s["ok"] = False
        if stage in ("tests", "hostile"):
            st.update(d.get("counts") or {})
            st["failures"] = [f["name"] for f in d.get("failures", [])][:8]
            if d.get("status") not in ("ok", "skipped"):
                s["ok"] = False
        if stage in ("bench", "features"):
            r = d.get("result") or {}
            for k, v in r.items():  # the scalars of its JSON line; the rest is in <stage>.json
                skip = k == "skipped" or (stage == "features" and k == "device")
                if skip or isinstance(v, (dict, list)):
                    continue
                st[k] = float(f"{v:.4g}") if isinstance(v, float) else v
            if d.get("status") == "failed":
                s["ok"] = False
        if stage == "sanitizer":
            st["errors"] = d.get("memcheck_errors")
            for k in ("pytest_summary", "tool_error"):
                if d.get(k):
                    st[k] = d[k][:160]
            if d.get("status") == "errors":
                s["ok"] = False
        stages[stage] = st
    s["stages"] = stages
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(s, f, indent=1)
    print(json.dumps({"gpu_check": s}, separators=(",", ":")))
    return s

cmd = sys.argv[1]
if cmd == "report":
    d = report(*sys.argv[2:])
    print(d["status"])
elif cmd == "summary":
    s = summary(*sys.argv[2:])
    sys.exit(0 if s["ok"] else 1)
'
export GPU_CHECK_OUT="$OUT"
# report <stage> <status> <seconds> <rc> <output file> [extra]; echoes the final status.
report() { "$PY" -c "$REPORT_PY" report "$@" 2>>"$LOG" || echo "report-error"; }

# run_stage <stage> <max seconds> <output file> <command...>: runs the command with the smaller
# of its own limit and what is left of the budget; sets STAGE_RC (124: timed out) and STAGE_S.
MIN_STAGE=15
run_stage() {
  local stage="$1" max="$2" outfile="$3" t
  shift 3
  t=$(left)
  [ "$t" -lt "$max" ] || t="$max"
  STAGE_S=0
  if [ "$t" -lt "$MIN_STAGE" ]; then
    STAGE_RC=125
    return 125
  fi
  say "gpu_check: [$(elapsed)s] $stage (limit ${t}s)"
  local s0=$(date +%s)
  # SIGINT first: pytest then ends its session and still writes its junit XML (the counts of what
  # ran); KILL 15 s later.
  timeout -s INT -k 15 "$t" "$@" >"$outfile" 2>&1
  STAGE_RC=$?
  STAGE_S=$(($(date +%s) - s0))
  echo "----- $stage: rc=$STAGE_RC, ${STAGE_S}s -----"
  cat "$outfile"
  return 0
}
status_of() {  # rc -> ok / timeout / failed
  case "$1" in 0) echo ok ;; 124 | 137) echo timeout ;; *) echo failed ;; esac
}
skipped() {  # skipped <stage> <reason>
  local f="$WORK/$1.skip"
  echo "$2" >"$f"
  "$PY" - "$1" "$2" <<'EOF'
import json, os, sys
with open(os.path.join(os.environ["GPU_CHECK_OUT"], sys.argv[1] + ".json"), "w") as f:
    json.dump({"stage": sys.argv[1], "status": "skipped", "reason": sys.argv[2], "seconds": 0}, f)
EOF
  say "gpu_check: $1 skipped: $2"
}

say "gpu_check: python $PY, out $OUT, budget ${BUDGET}s, sm_$ARCH, stages build,$STAGES"

# ---- environment facts ---------------------------------------------------------------------------
ENV_JSON="$("$PY" - <<'EOF' 2>/dev/null || echo '{}'
import json, platform, shutil, subprocess
e = {"python": platform.python_version()}
for mod in ("numpy", "torch", "cupy", "cv2"):
    try:
        m = __import__(mod)
        e[mod] = getattr(m, "__version__", "?")
    except Exception as ex:  # noqa: BLE001
        e[mod] = "missing: " + type(ex).__name__
try:
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                        "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    e["gpu"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else None
except Exception:  # noqa: BLE001
    e["gpu"] = None
nvcc = shutil.which("nvcc")
if nvcc:
    v = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    e["nvcc"] = v.strip().splitlines()[-1] if v.strip() else "?"
else:
    e["nvcc"] = None
print(json.dumps(e))
EOF
)"
say "gpu_check: env $ENV_JSON"

# cuBLAS: _C dlopens libcublas.so.13/.12/... by name; point it at a file when the loader would not
# find one by itself (PyTorch's and CuPy's wheels keep theirs under site-packages/nvidia).
if [ -z "${IAPDCNN_CUBLAS_LIBRARY:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.1[123] '; then
  CUBLAS="$("$PY" - <<'EOF' 2>/dev/null
import glob, os, site, sys
dirs = [os.path.join(p, "nvidia") for p in site.getsitepackages() + [site.getusersitepackages()]]
found = []
for d in dirs:
    found += sorted(glob.glob(os.path.join(d, "**", "libcublas.so.1[123]*"), recursive=True))
found += sorted(glob.glob("/usr/local/cuda*/lib64/libcublas.so.1[123]*"))
found += sorted(glob.glob("/usr/local/cuda*/targets/*/lib/libcublas.so.1[123]*"))
print(found[0] if found else "")
EOF
)"
  [ -z "$CUBLAS" ] || export IAPDCNN_CUBLAS_LIBRARY="$CUBLAS"
fi
say "gpu_check: cuBLAS ${IAPDCNN_CUBLAS_LIBRARY:-(by soname through the loader)}"

EXIT=0

# ---- 1. build ------------------------------------------------------------------------------------
CMAKE_ARGS=(-S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIAPDCNN_WITH_TF=OFF
  -DIAPDCNN_WITH_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$ARCH" "-DPython_EXECUTABLE=$PY")
if [ -f "$GPU_DIR/include/Eigen/Core" ]; then
  CMAKE_ARGS+=("-DIAPDCNN_EIGEN_INCLUDE_DIR=$GPU_DIR/include")
fi
NVCC="$(command -v nvcc || true)"
[ -z "$NVCC" ] || CMAKE_ARGS+=("-DCMAKE_CUDA_COMPILER=$NVCC")
# A Python without its C headers (a distribution Python minus -dev): the prepared 3.12 copy.
PY_HAS_H="$("$PY" -c 'import os, sys, sysconfig
print(int(os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))),
      "%d.%d" % sys.version_info[:2])')"
if [ "${PY_HAS_H%% *}" = 0 ] && [ "${PY_HAS_H##* }" = 3.12 ] &&
  [ -f "$GPU_DIR/python3.12/include/Python.h" ]; then
  CMAKE_ARGS+=("-DPython_INCLUDE_DIR=$GPU_DIR/python3.12/include")
  say "gpu_check: this Python has no C headers; using $GPU_DIR/python3.12/include"
fi
{
  printf '%q ' cmake "${CMAKE_ARGS[@]}"
  printf '&& '
  printf '%q ' cmake --build "$BUILD" -j"$(nproc)" --target _C
  echo
} >"$WORK/build.sh"
run_stage build 300 "$WORK/build.out" bash "$WORK/build.sh"
BUILD_STATUS=$(status_of "$STAGE_RC")
BUILD_S=$STAGE_S
HAVE_C=0
USED=none
SO_DIR=""
if [ "$BUILD_STATUS" = ok ]; then
  SO_DIR="$BUILD" USED="built here"
elif ls "$GPU_DIR"/prebuilt/_C*.so >/dev/null 2>&1; then
  if [ "$(cat "$GPU_DIR/prebuilt/SOURCE" 2>/dev/null)" = "$(source_hash)" ]; then
    SO_DIR="$GPU_DIR/prebuilt" USED="prebuilt by --prepare (sm_90, generic x86-64)"
    say "gpu_check: the build failed; the later stages use the prebuilt _C"
  else
    USED="none (the prebuilt _C is from other sources)"
  fi
fi
if [ -n "$SO_DIR" ]; then
  rm -rf "$PKG" && mkdir -p "$PKG"
  cp -r "$ROOT/python/iapdcnn" "$PKG/"
  rm -f "$PKG"/iapdcnn/_C*.so "$PKG"/iapdcnn/_tfops.so "$PKG"/iapdcnn/_build_info.py
  cp "$SO_DIR"/_C*.so "$SO_DIR/_build_info.py" "$PKG/iapdcnn/" && HAVE_C=1
fi
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
export IAPDCNN_TEST_KERAS=tf_keras TF_CPP_MIN_LOG_LEVEL=2
IMPORT_JSON='{}'
if [ "$HAVE_C" = 1 ]; then
  IMPORT_JSON="$("$PY" -c 'import json, os, iapdcnn._C as C
print(json.dumps({"cuda": bool(C.with_cuda), "so": os.path.basename(C.__file__),
                  "so_mb": round(os.path.getsize(C.__file__) / 2**20, 1)}))' 2>>"$WORK/build.out")" ||
    { IMPORT_JSON='{"import_error": true}'; BUILD_STATUS=failed; HAVE_C=0; USED="none (_C does not import)"; }
fi
EXTRA="$("$PY" -c 'import json, sys
d = json.loads(sys.argv[1]); d.update(arch=sys.argv[2], used=sys.argv[3])
print(json.dumps(d))' "$IMPORT_JSON" "$ARCH" "$USED")"
say "gpu_check: build $(report build "$BUILD_STATUS" "$BUILD_S" "$STAGE_RC" "$WORK/build.out" "$EXTRA") in ${BUILD_S}s"
[ "$BUILD_STATUS" = ok ] || EXIT=1

# ---- 2. tests (and, after the benchmarks, 5. hostile) --------------------------------------------
# Whether a stage runs: not when it is not selected or there is no _C (then recorded as skipped).
can_run() {
  if ! selected "$1"; then
    skipped "$1" "not selected (IAPDCNN_GPU_STAGES)"
    return 1
  fi
  if [ "$HAVE_C" != 1 ]; then
    skipped "$1" "no _C: the build failed"
    return 1
  fi
}
test_stage() {  # test_stage <stage> <max seconds> <test files...>
  local stage="$1" max="$2" st
  shift 2
  can_run "$stage" || return 0
  if run_stage "$stage" "$max" "$WORK/$stage.out" "$PY" -m pytest -p no:cacheprovider -q -rs \
    --junitxml="$WORK/$stage.xml" "$@"; then
    st=$(status_of "$STAGE_RC")
    [ "$STAGE_RC" != 1 ] || st=ok  # pytest's 1: some test failed; the junit counts say which
    st=$(report "$stage" "$st" "$STAGE_S" "$STAGE_RC" "$WORK/$stage.out" "$WORK/$stage.xml")
    say "gpu_check: $stage $st in ${STAGE_S}s ($(tail -n 1 "$WORK/$stage.out"))"
    [ "$st" = ok ] || EXIT=1
  else
    skipped "$stage" "out of time"
    EXIT=1
  fi
}
test_stage tests 150 tests/test_cuda.py

# ---- 3. conv benchmark, 4. feature throughput ------------------------------------------------------
bench_stage() {  # bench_stage <stage> <max seconds> <flags...>
  local stage="$1" max="$2" st
  shift 2
  can_run "$stage" || return 0
  if run_stage "$stage" "$max" "$WORK/$stage.out" "$PY" benchmarks/bench_conv_gpu.py "$@"; then
    st=$(report "$stage" "$(status_of "$STAGE_RC")" "$STAGE_S" "$STAGE_RC" "$WORK/$stage.out")
    say "gpu_check: $stage $st in ${STAGE_S}s"
    [ "$st" != failed ] || EXIT=1
  else
    skipped "$stage" "out of time"
  fi
}
bench_stage bench 170 --no-features
bench_stage features 60 --features-only
test_stage hostile 120 tests/test_cuda_hostile.py

# ---- 6. compute-sanitizer memcheck ------------------------------------------------------------------
# CuPy's and PyTorch's memory pools are turned off so that memcheck sees every allocation's bounds.
SANITIZE_PY='
import os, sys
try:
    import cupy
    cupy.cuda.set_allocator(None)
    cupy.cuda.set_pinned_memory_allocator(None)
except Exception:
    pass
import pytest
sys.exit(pytest.main(sys.argv[1:]))
'
SAN="$(command -v compute-sanitizer || true)"
SAN_K="${IAPDCNN_SANITIZER_K:-float32 and not nan_policy or fci_bad_label or eps_underflow or wraps}"
if ! can_run sanitizer; then
  :
elif [ -z "$SAN" ]; then
  skipped sanitizer "compute-sanitizer not found (PATH, /usr/local/cuda/bin)"
elif run_stage sanitizer 150 "$WORK/sanitizer.out" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
  "$SAN" --tool memcheck --error-exitcode 86 --print-limit 30 \
  "$PY" -c "$SANITIZE_PY" -p no:cacheprovider -q -x tests/test_cuda.py -k "$SAN_K"; then
  st=$(report sanitizer "$(status_of "$STAGE_RC")" "$STAGE_S" "$STAGE_RC" "$WORK/sanitizer.out")
  say "gpu_check: sanitizer $st in ${STAGE_S}s"
  [ "$st" != errors ] || EXIT=1
else
  skipped sanitizer "out of time"
fi

# ---- summary -------------------------------------------------------------------------------------
say "gpu_check: done in $(elapsed)s; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
LINE="$("$PY" -c "$REPORT_PY" summary "$(elapsed)" "$ENV_JSON")" || EXIT=1
[ -n "$LINE" ] || LINE='{"gpu_check": {"ok": false, "error": "summary failed, see gpu_check.log"}}'
echo "$LINE"
echo "$LINE" >&3
exit "$EXIT"
