"""NumPy reference implementations (oracles for the tests), written for clarity, not speed."""

from .fci import fci

__all__ = ["fci"]
