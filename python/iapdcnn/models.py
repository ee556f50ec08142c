"""Model builders used by the trainer, the benchmarks and the tests: the project's small ResNet
for 28x28 / 32x32 inputs and Keras's ResNet-50 for 224x224."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ._keras import keras


def _conv_class(conv: str) -> type:
    if conv == "keras":
        return keras.layers.Conv2D
    if conv == "im2col":
        from .layers import Im2colConv2D  # lands with the convolution op

        return Im2colConv2D
    raise ValueError(f"conv must be 'keras' or 'im2col', got {conv!r}")


def small_resnet(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    width: int = 16,
    blocks_per_stage: int = 1,
    conv: Literal["keras", "im2col"] = "keras",
    name: str = "small_resnet",
    preprocessing: Sequence[keras.layers.Layer] = (),
) -> keras.Model:
    """A small functional ResNet: stem, three stages (width, 2w, 4w) of basic residual blocks
    joined by ``Add``, BatchNorm, global average pooling and a softmax Dense.

    Args:
      input_shape: ``(H, W, C)``, e.g. (28, 28, 1) or (32, 32, 3).
      num_classes: size of the output layer.
      width: filters of the first stage.
      blocks_per_stage: basic blocks per stage.
      conv: ``"keras"`` for keras.layers.Conv2D, ``"im2col"`` for iapdcnn's Im2colConv2D.
      name: model name.
      preprocessing: layers applied to the input before the stem, in order (e.g. MHO-PFES's
        EdgeFeatures and FCIFilter); they become part of the one flat model, so pruning sees
        every convolution.

    Returns:
      Uncompiled ``keras.Model`` mapping ``[N, H, W, C]`` to ``[N, num_classes]`` probabilities.
    """
    if width < 1 or blocks_per_stage < 1 or num_classes < 2:
        raise ValueError(
            f"width, blocks_per_stage must be >= 1 and num_classes >= 2, got width={width}, "
            f"blocks_per_stage={blocks_per_stage}, num_classes={num_classes}"
        )
    Conv = _conv_class(conv)

    def conv_bn(x, filters, kernel, stride, prefix, relu=True):
        x = Conv(
            filters,
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"{prefix}_conv",
        )(x)
        x = keras.layers.BatchNormalization(name=f"{prefix}_bn")(x)
        return keras.layers.ReLU(name=f"{prefix}_relu")(x) if relu else x

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for layer in preprocessing:
        x = layer(x)
    x = conv_bn(x, width, 3, 1, "stem")
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks_per_stage):
            prefix = f"s{stage}b{block}"
            stride = 2 if (stage > 0 and block == 0) else 1
            shortcut = x
            y = conv_bn(x, filters, 3, stride, f"{prefix}_a")
            y = conv_bn(y, filters, 3, 1, f"{prefix}_b", relu=False)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = conv_bn(shortcut, filters, 1, stride, f"{prefix}_proj", relu=False)
            x = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
            x = keras.layers.ReLU(name=f"{prefix}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet50(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1000,
    conv: Literal["keras", "im2col"] = "keras",
    preprocessing: Sequence[keras.layers.Layer] = (),
) -> keras.Model:
    """``keras.applications.ResNet50(weights=None)``; with ``conv="im2col"`` every Conv2D is
    replaced by Im2colConv2D through ``iapdcnn.layers.convert``. ``preprocessing`` layers run on
    the input first, inside the same flat model (as for ``small_resnet``).

    Returns:
      Uncompiled model ``[N, *input_shape] -> [N, num_classes]``.
    """
    model = keras.applications.ResNet50(weights=None, input_shape=input_shape, classes=num_classes)
    if conv == "im2col":
        from .layers import convert

        model = convert(model)
    elif conv != "keras":
        raise ValueError(f"conv must be 'keras' or 'im2col', got {conv!r}")
    return model
