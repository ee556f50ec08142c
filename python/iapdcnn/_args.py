"""Argument checks shared by the op wrappers: an integer must be an integer (``2.5`` is not
truncated to 2, ``True`` is not 1) and a real number a finite one (the ops take real parameters
as float64 scalars, so nothing is rounded to float32). Every message names the function and the
argument, and shows the value as ``repr`` does. Framework-free."""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np


def as_int(fn: str, name: str, value: Any) -> int:
    """``value`` as a Python int; TypeError for bools, floats and other non-integers."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{fn}: {name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{fn}: {name} must be an integer, got {value!r} ({type(value).__name__})"
        ) from None


def as_float(fn: str, name: str, value: Any) -> float:
    """``value`` as a finite Python float; TypeError for non-numbers, ValueError for NaN/Inf."""
    if isinstance(value, bool | np.bool_) or isinstance(value, str | bytes):
        raise TypeError(f"{fn}: {name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{fn}: {name} must be a real number, got {value!r} ({type(value).__name__})"
        ) from None
    if not math.isfinite(v):
        raise ValueError(f"{fn}: {name} must be a finite number, got {v!r}")
    return v


def as_bool(fn: str, name: str, value: Any) -> bool:
    """A bool (Python or NumPy); TypeError otherwise (``"False"`` is not False)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{fn}: {name} must be a bool, got {value!r} ({type(value).__name__})")
    return bool(value)
