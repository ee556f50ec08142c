"""``python -m iapdcnn.tfrun -np N COMMAND ...``: starts N local workers of the tf.distribute
engine (what ``horovodrun -np N -H localhost:N`` is to the Horovod one). Each worker runs
COMMAND with its own ``TF_CONFIG`` (the N workers on free localhost ports, its index); when one
exits with an error the others are stopped, and the first failure's status is returned. When
the launcher's output goes to a file or a pipe, each worker's output reaches it a whole line at
a time, so lines of different workers never run into each other (an unbuffered ``print`` writes
its text and its newline in two writes) and a worker's last line without a newline is given
one; on a terminal the workers write to it directly (progress bars redraw in place).

    python -m iapdcnn.tfrun -np 2 python train.py --engine tf_distribute --dataset digits
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence


def free_ports(n: int, host: str = "localhost") -> list[int]:
    """``n`` distinct ports that were free on ``host`` a moment ago."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def tf_configs(n: int, host: str = "localhost", ports: list[int] | None = None) -> list[str]:
    """The ``TF_CONFIG`` of each of ``n`` workers on ``host``."""
    ports = ports or free_ports(n, host)
    workers = [f"{host}:{p}" for p in ports]
    return [
        json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        for i in range(n)
    ]


def launch(
    n: int, command: Sequence[str], timeout: float | None = None, env: dict | None = None
) -> int:
    """Runs ``command`` as ``n`` workers; returns 0, or the first failing worker's status (124
    after ``timeout`` seconds)."""
    if n < 1:
        raise ValueError(f"-np must be >= 1, got {n}")
    if not command:
        raise ValueError("no command to run")
    base = dict(os.environ if env is None else env)
    procs, pumps, lock = [], [], threading.Lock()
    pipe = subprocess.PIPE if not _is_terminal(sys.stdout) else None
    for i, conf in enumerate(tf_configs(n)):
        child = dict(base, TF_CONFIG=conf, IAPDCNN_WORKER=str(i))
        # own process group: stopping a worker stops what it started
        p = subprocess.Popen(
            list(command), env=child, start_new_session=True, stdout=pipe, stderr=pipe
        )
        procs.append(p)
        if pipe is not None:
            pumps += [_pump(p.stdout, sys.stdout, lock), _pump(p.stderr, sys.stderr, lock)]
    deadline = None if timeout is None else time.monotonic() + timeout
    status = 0
    try:
        while [p.poll() for p in procs].count(None):  # every worker polled, each time
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed or (deadline is not None and time.monotonic() > deadline):
                status = failed[0] if failed else 124
                break
            time.sleep(0.1)
    finally:
        _stop([p for p in procs if p.poll() is None])
        for t in pumps:  # the rest of each worker's output (a grandchild may hold a pipe)
            t.join(timeout=10.0)
    if status == 0:
        status = next((p.returncode for p in procs if p.returncode != 0), 0)
    return status


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _pump(src, dst, lock: threading.Lock) -> threading.Thread:
    """A thread copying ``src`` to ``dst`` one whole line per write; a last line without a
    newline gets one, so that the next worker's line starts on a line of its own."""
    out = getattr(dst, "buffer", None)

    def run() -> None:
        with src:
            for line in iter(src.readline, b""):
                line = line if line.endswith(b"\n") else line + b"\n"
                with lock:
                    if out is not None:
                        out.write(line)
                    else:  # a text stream standing in for stdout (tests capture it)
                        dst.write(line.decode(errors="replace"))
                    dst.flush()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _stop(procs: list[subprocess.Popen], grace: float = 5.0) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m iapdcnn.tfrun",
        description="Start N local workers of the tf.distribute engine, each with its TF_CONFIG.",
    )
    p.add_argument("-np", "--num-workers", type=int, required=True, dest="n", metavar="N")
    p.add_argument(
        "--timeout", type=float, default=None, help="stop every worker after this many seconds"
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="e.g. python train.py ...")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.n < 1:
        p.error(f"-np must be >= 1, got {args.n}")
    if not command:
        p.error("give the command each worker runs, e.g. python train.py --engine tf_distribute")
    return launch(args.n, command, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
