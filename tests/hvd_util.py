"""Launches a script under `horovodrun -np K --gloo` for the distributed tests (skips when
Horovod is not installed)."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def horovodrun() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    exe = exe if os.path.exists(exe) else shutil.which("horovodrun")
    if not exe:
        pytest.skip("horovodrun is not installed")
    return exe


def run_hvd(np_: int, args: list[str], timeout: int = 240, cwd: str | None = None):
    """Runs ``horovodrun -np np_ -H localhost:np_ --gloo python args...``; returns the process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "python"), env.get("PYTHONPATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [horovodrun(), "-np", str(np_), "-H", f"localhost:{np_}", "--gloo", sys.executable]
    return subprocess.run(
        cmd + args, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd or ROOT
    )
