"""NumPy reference implementations (oracles for the tests), written for clarity, not speed."""

from .fci import fci

__all__ = ["fci"]
from .conv import (  # noqa: E402
    im2col_conv2d,
    im2col_conv2d_backprop_filter,
    im2col_conv2d_backprop_input,
)

__all__ += ["im2col_conv2d", "im2col_conv2d_backprop_input", "im2col_conv2d_backprop_filter"]
