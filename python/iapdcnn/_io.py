"""The package's one way to write a file so that no reader ever sees half of it: write under
``<path>.tmp-<pid>``, fsync, rename over ``path``. The trainer's checkpoint and logs, the
features cache, the preprocessing job's shards, state and report all write through here, and
``remove_stale_temporaries`` clears what a killed writer left behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import IO, Any

TMP_TAG = ".tmp-"
_TMP_RE = re.compile(re.escape(TMP_TAG) + r"(\d+)$")


def temporary_name(path: str) -> str:
    """The name this process writes ``path`` under before the rename."""
    return f"{path}{TMP_TAG}{os.getpid()}"


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path to write ``path``'s content to (for writers that want a file name,
    such as ``tf.io.TFRecordWriter``); on a clean exit fsyncs it and renames it over ``path``.
    Any failure removes the temporary file and leaves ``path`` as it was."""
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Writes ``path`` through ``write(fileobj)``, atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()


def atomic_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_json(path: str, obj: Any, indent: int | None = 1) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically."""
    atomic_bytes(path, json.dumps(obj, indent=indent).encode())


def remove_stale_temporaries(folder: str, owns: Callable[[str], bool]) -> list[str]:
    """Removes the ``<name>.tmp-<pid>`` files in ``folder`` that a killed writer left behind.

    Only names for which ``owns(name)`` (the final name, without the suffix) is true are
    touched, so a process clears its own leftovers and never a file another live process is
    writing; this process's own temporaries are kept. Returns the paths removed.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for name in names:
        m = _TMP_RE.search(name)
        if m is None or int(m.group(1)) == os.getpid() or not owns(name[: m.start()]):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            removed.append(path)
    return removed
