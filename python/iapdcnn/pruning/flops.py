"""Multiply-add counts of a Keras model, per layer and in total, with a before/after table.

Counts the layers that dominate a CNN's cost: convolutions (Conv2D and subclasses, transposed,
depthwise, separable) and Dense. Normalisation, activations, pooling and merges count 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

L = tf.keras.layers


def _prod(shape: Any) -> int:
    return int(np.prod([int(s) for s in shape], dtype=np.int64)) if len(shape) else 1


def layer_macs(layer: Any, in_shape: Any, out_shape: Any) -> int:
    """Multiply-adds of one call of ``layer`` for one sample (shapes include the batch axis)."""
    if isinstance(layer, L.SeparableConv2D) or type(layer).__name__ == "SeparableConv2D":
        kh, kw = layer.kernel_size
        cin = int(in_shape[-1])
        return _prod(out_shape[1:-1]) * (
            kh * kw * cin * layer.depth_multiplier
            + cin * layer.depth_multiplier * int(out_shape[-1])
        )
    if isinstance(layer, L.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _prod(out_shape[1:-1]) * kh * kw * int(out_shape[-1])
    if isinstance(layer, L.Conv2DTranspose):
        kh, kw = layer.kernel_size
        return _prod(in_shape[1:-1]) * kh * kw * int(in_shape[-1]) * int(out_shape[-1])
    if isinstance(layer, L.Conv1D | L.Conv2D | L.Conv3D):
        k = _prod(layer.kernel_size)
        cin = int(in_shape[-1] if layer.data_format == "channels_last" else in_shape[1])
        spatial = out_shape[1:-1] if layer.data_format == "channels_last" else out_shape[2:]
        return _prod(spatial) * k * (cin // getattr(layer, "groups", 1)) * int(layer.filters)
    if isinstance(layer, L.Dense):
        return _prod(in_shape[1:]) * int(layer.units)
    return 0


@dataclass
class FlopsCount:
    """Multiply-adds per sample: ``per_layer`` (layer name -> MACs) and ``total``."""

    per_layer: dict[str, int]
    params: dict[str, int]

    @property
    def total(self) -> int:
        return int(sum(self.per_layer.values()))

    def table(self, after: FlopsCount | None = None) -> str:
        """Per-layer MACs (and, given ``after``, the pruned MACs and the ratio) as text."""
        names = [n for n, v in self.per_layer.items() if v or (after and after.per_layer.get(n))]
        rows = [f"{'layer':<28}{'MACs':>14}" + (f"{'after':>14}{'ratio':>8}" if after else "")]
        for n in names + ["TOTAL"]:
            b = self.total if n == "TOTAL" else self.per_layer[n]
            line = f"{n:<28}{b:>14,}"
            if after is not None:
                a = after.total if n == "TOTAL" else after.per_layer.get(n, 0)
                line += f"{a:>14,}{(a / b if b else 1.0):>8.3f}"
            rows.append(line)
        return "\n".join(rows)


def count_flops(model: Any) -> FlopsCount:
    """Multiply-adds per sample of every layer of a built Keras model.

    Args:
      model: functional or Sequential Keras model with known input shape.

    Returns:
      ``FlopsCount``; ``.per_layer`` maps layer names to MACs, ``.total`` sums them,
      ``.table(after)`` formats a before/after comparison.
    """
    per_layer: dict[str, int] = {}
    params: dict[str, int] = {}
    nodes = {n for group in model._nodes_by_depth.values() for n in group}
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):  # a nested model: its layers, under its name
            inner = count_flops(layer)
            per_layer.update({f"{layer.name}/{k}": v for k, v in inner.per_layer.items()})
            params.update({f"{layer.name}/{k}": v for k, v in inner.params.items()})
            continue
        macs = 0
        for node in getattr(layer, "_inbound_nodes", []):
            if node not in nodes:
                continue
            ins = tf.nest.flatten(node.keras_inputs)
            outs = tf.nest.flatten(node.outputs)
            if ins and outs:
                macs += layer_macs(layer, ins[0].shape, outs[0].shape)
        per_layer[layer.name] = macs
        params[layer.name] = int(layer.count_params()) if layer.built else 0
    return FlopsCount(per_layer, params)
