"""``iapdcnn.layers.EdgeFeatures``: the MHO-PFES feature map as a Keras layer, cosine NLM
denoising (spec §1a) followed by Marr-Hildreth edges (spec §1b). Usable inside a model and inside
``tf.data`` map functions (it is two graph ops, no Python state)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from .. import _C, ops
from .._defaults import COSINE_NLM, MARR_HILDRETH
from .._keras import keras


@keras.saving.register_keras_serializable(package="iapdcnn")
class EdgeFeatures(keras.layers.Layer):
    """Denoise with cosine NLM, then keep Marr-Hildreth edges.

    Input ``[N, H, W, C]`` (or one image ``[H, W, C]``, e.g. inside ``tf.data`` map), any real
    dtype; output float32 of the same shape. Keras has no built-in counterpart, so this
    subclasses ``keras.layers.Layer``.

    Args:
      patch_radius: NLM patch radius r >= 0.
      search_radius: NLM search radius s >= 0.
      h: NLM filtering parameter > 0.
      laplacian: 4 or 8 neighbours.
      threshold: Sobel threshold >= 0 (a fraction of the per-image maximum when ``relative``).
      mode: ``"masked"``, ``"binary"`` or ``"magnitude"``.
      relative: whether ``threshold`` is relative.
      denoise: set False to skip the NLM stage.
    """

    def __init__(
        self,
        patch_radius: int = COSINE_NLM["patch_radius"],
        search_radius: int = COSINE_NLM["search_radius"],
        h: float = COSINE_NLM["h"],
        laplacian: int = MARR_HILDRETH["laplacian"],
        threshold: float = MARR_HILDRETH["threshold"],
        mode: str = MARR_HILDRETH["mode"],
        relative: bool = MARR_HILDRETH["relative"],
        denoise: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # The ops' own rules (csrc), checked now rather than at the first call.
        try:
            _C.validate_cosine_nlm_args(int(patch_radius), int(search_radius), float(h))
            _C.validate_marr_hildreth_args(int(laplacian), float(threshold), mode)
        except (ValueError, TypeError) as e:
            raise type(e)(f"EdgeFeatures: {e}") from None
        self.patch_radius = int(patch_radius)
        self.search_radius = int(search_radius)
        self.h = float(h)
        self.laplacian = int(laplacian)
        self.threshold = float(threshold)
        self.mode = mode
        self.relative = bool(relative)
        self.denoise_enabled = bool(denoise)

    def denoise(self, x: tf.Tensor) -> tf.Tensor:
        """The NLM stage alone: ``[N, H, W, C]`` -> float32 ``[N, H, W, C]``."""
        x = tf.cast(x, tf.float32)
        return ops.cosine_nlm(x, self.patch_radius, self.search_radius, self.h)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(inputs)
        single = x.shape.rank == 3
        if x.shape.rank not in (3, 4):
            raise ValueError(
                f"EdgeFeatures: inputs must be [N, H, W, C] or [H, W, C], got shape {x.shape}"
            )
        if single:
            x = x[None]
        x = tf.cast(x, tf.float32)
        if self.denoise_enabled:
            x = self.denoise(x)
        y = ops.marr_hildreth(x, self.laplacian, self.threshold, self.relative, self.mode)
        return y[0] if single else y

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            patch_radius=self.patch_radius,
            search_radius=self.search_radius,
            h=self.h,
            laplacian=self.laplacian,
            threshold=self.threshold,
            mode=self.mode,
            relative=self.relative,
            denoise=self.denoise_enabled,
        )
        return config
