"""NumPy reference implementations (oracles for the tests), written for clarity, not speed."""

from .fci import fci
from .mdcv import mdcv_distances

__all__ = ["fci", "mdcv_distances"]
