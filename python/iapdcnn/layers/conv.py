"""``Im2colConv2D``: keras.layers.Conv2D with its convolution replaced by iapdcnn's Im2col + GEMM
op (spec §2b), and ``convert(model)``, which swaps it in for every Conv2D of a built model."""

from __future__ import annotations

import tensorflow as tf

from .._keras import keras
from ..ops.conv import im2col_conv2d


@keras.saving.register_keras_serializable(package="iapdcnn")
class Im2colConv2D(keras.layers.Conv2D):
    """Drop-in for ``keras.layers.Conv2D``: same constructor arguments and config (it is a
    subclass), only the convolution runs through ``iapdcnn.ops.im2col_conv2d``.

    Works in tf_keras (Keras 2) and Keras 3 models alike: ``call`` reads only the public state
    the two Conv2D share (``kernel``, ``bias``, ``strides``, ``padding``, ``dilation_rate``,
    ``groups``, ``data_format``, ``activation``), not either one's private convolution hooks.

    Input ``[N, H, W, C]`` (channels_last) or ``[N, C, H, W]``; output
    ``[N, OH, OW, filters]`` or ``[N, filters, OH, OW]``, as Conv2D.
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        inputs = tf.convert_to_tensor(inputs)
        data_format = "NHWC" if self.data_format == "channels_last" else "NCHW"
        outputs = im2col_conv2d(
            inputs,
            tf.cast(self.kernel, inputs.dtype),
            strides=list(self.strides),
            padding=self.padding.upper(),
            data_format=data_format,
            dilations=list(self.dilation_rate),
            groups=self.groups,
            name=self.__class__.__name__,
        )
        if self.use_bias:
            outputs = tf.nn.bias_add(
                outputs, tf.cast(self.bias, outputs.dtype), data_format=data_format
            )
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


def _is_plain_conv2d(layer: keras.layers.Layer) -> bool:
    # Exactly Conv2D: Conv2DTranspose and other subclasses compute something else.
    return type(layer) is keras.layers.Conv2D


def convert(model: keras.Model) -> keras.Model:
    """Returns a copy of ``model`` in which every ``keras.layers.Conv2D`` (also inside nested
    models) is an :class:`Im2colConv2D` with the same config and weights; every other layer is
    cloned with its weights. Works for Sequential and functional models (e.g.
    ``keras.applications.ResNet50``). The copy is not compiled.

    Args:
      model: a built Sequential or functional Keras model.

    Returns:
      A new model with the same inputs, outputs, layer names and weights.
    """

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.Model):
            return convert(layer)
        if _is_plain_conv2d(layer):
            return Im2colConv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone)
    for old_layer, new_layer in zip(model.layers, new.layers, strict=True):
        if not isinstance(old_layer, keras.Model):
            new_layer.set_weights(old_layer.get_weights())
    return new
