"""NumPy reference implementations (oracles for the tests), written for clarity, not speed."""

from .fci import fci

__all__ = ["fci"]

from . import lsg  # noqa: E402  (SPEC 3 oracle: reference.lsg.law, .worker_law, .combine, ...)

__all__ += ["lsg"]
