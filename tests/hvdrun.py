"""Launches a script under `horovodrun -np N --gloo` on localhost for the distributed tests, with a
timeout so that a hung collective fails the test instead of hanging CI. The ranks import the same
iapdcnn as the test process (the installed package, or a development tree on PYTHONPATH)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import iapdcnn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(iapdcnn.__file__)))


def horovodrun_path() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    if not os.path.exists(exe):
        exe = shutil.which("horovodrun") or ""
    if not exe:
        pytest.fail("horovodrun not found: run scripts/setup.sh, which builds Horovod with Gloo")
    return exe


def child_env() -> dict[str, str]:
    """The environment for child Python processes: this process's iapdcnn first on the path."""
    path = os.pathsep.join(p for p in (PKG_PARENT, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def run_launcher(
    label: str,
    cmd: list[str],
    timeout: float,
    check: bool = True,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Runs a launcher command (``horovodrun``, ``iapdcnn.tfrun``) and returns the finished
    process. A timeout fails the calling test with the output so far; so does a non-zero exit
    when ``check``. ``label`` names the launcher in those messages."""
    try:
        p = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or child_env(),
            cwd=cwd or ROOT,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        pytest.fail(f"{label} timed out after {timeout}s: {' '.join(cmd)}\n{out[-4000:]}")
    if check and p.returncode != 0:
        pytest.fail(
            f"{label} exited {p.returncode}: {' '.join(cmd)}\n{(p.stdout + p.stderr)[-6000:]}"
        )
    return p


def run_hvd(
    np: int, args: list[str], timeout: float = 300, check: bool = True, cwd: str | None = None
) -> subprocess.CompletedProcess:
    """Runs ``python *args`` on ``np`` local ranks under horovodrun (``run_launcher``)."""
    cmd = [horovodrun_path(), "-np", str(np), "-H", f"localhost:{np}", "--gloo", sys.executable]
    return run_launcher("horovodrun", cmd + args, timeout, check, cwd)


def run_bench(script: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> *args`` with this process's iapdcnn; the finished process
    (its output captured as text)."""
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", script), *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), cwd=ROOT
    )


def quick_bench(script: str, out: str) -> dict:
    """``benchmarks/<script> --quick --out out`` under Horovod: its JSON (the last line); a
    failure fails the calling test with the output."""
    horovodrun_path()  # fails clearly when Horovod is missing
    p = run_bench(script, "--quick", "--out", out)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_case_worker(script: str, cases: list[dict], timeout: float, **env: str) -> list[dict]:
    """Runs `python script` as a worker over `cases` (JSON on its stdin; it prints ``START i``
    before case i and ``RESULT {"i": i, ...}`` after it) and returns the RESULT objects in case
    order. A hang or a dead worker fails the test, naming the case it was in: the hostile-input
    suites run crash-prone cases this way, many to a process."""
    try:
        proc = subprocess.run(
            [sys.executable, script],
            input=json.dumps(cases),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ, OMP_NUM_THREADS="1", **env),
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        started = [ln for ln in out.splitlines() if ln.startswith("START")]
        last = int(started[-1].split()[1]) if started else 0
        pytest.fail(f"hang: case {json.dumps(cases[last])} did not finish in {timeout} s")
    results, started = {}, -1
    for line in proc.stdout.splitlines():
        if line.startswith("START "):
            started = int(line.split()[1])
        elif line.startswith("RESULT "):
            r = json.loads(line[7:])
            results[r["i"]] = r
    if len(results) < len(cases):
        bad = cases[max(started, 0)]
        pytest.fail(
            f"the worker died (exit status {proc.returncode}) in case {json.dumps(bad)}:\n"
            f"{proc.stderr[-3000:]}"
        )
    return [results[i] for i in range(len(cases))]
