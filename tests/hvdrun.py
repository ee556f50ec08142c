"""Launches a script under `horovodrun -np N --gloo` on localhost for the distributed tests, with a
timeout so that a hung collective fails the test instead of hanging CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def horovodrun_path() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    if not os.path.exists(exe):
        exe = shutil.which("horovodrun") or ""
    if not exe:
        pytest.fail("horovodrun not found: run scripts/setup.sh, which builds Horovod with Gloo")
    return exe


def run_horovod(
    script: str, np: int = 2, args: list[str] | None = None, timeout: float = 300
) -> str:
    """Runs ``python script args`` on ``np`` local ranks; returns the combined output and fails
    the calling test (with that output) on a non-zero exit or a timeout."""
    cmd = [
        horovodrun_path(),
        "-np",
        str(np),
        "-H",
        f"localhost:{np}",
        "--gloo",
        sys.executable,
        script,
        *(args or []),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, start_new_session=True
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"horovodrun timed out after {timeout}s: {' '.join(cmd)}\n{out[-4000:]}")
    out = p.stdout + p.stderr
    if p.returncode != 0:
        pytest.fail(f"horovodrun exited {p.returncode}: {' '.join(cmd)}\n{out[-6000:]}")
    return out
