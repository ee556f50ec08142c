"""The one place iapdcnn picks its Keras: ``tf.keras`` when TensorFlow made that tf_keras
(Keras 2, ``TF_USE_LEGACY_KERAS=1``), else the ``keras`` package itself (Keras 3). Under Keras 3
``tf.keras`` is a compatibility subset (no ``keras.saving``, for one), while its classes are the
ones of ``keras``, so models built either way mix."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def _pick() -> tuple[Any, bool]:
    k = tf.keras
    if getattr(k, "__name__", "").startswith("tf_keras"):
        return k, False
    import keras as k3

    return k3, True


keras, IS_KERAS3 = _pick()
