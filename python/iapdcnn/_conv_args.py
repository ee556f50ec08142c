"""The Python forms of ``iapdcnn.ops.im2col_conv2d``'s arguments -> the op's attributes, and the
NumPy reference's reading of tf.nn.conv2d's forms. Framework-free (no TensorFlow import).

``int_list`` and ``op_padding`` only change the container (an int -> a one-value list, pairs ->
flat ints) as TensorFlow's ``list(int)`` attributes need; every rule (how many values, their
ranges, the padding names in any case) is the kernel's, ``csrc/conv/conv.cc``, which _C and the
TensorFlow op share and whose errors name the argument. ``spatial`` and ``padding_attrs`` are the
reference's own reading (an oracle checked against tf.nn.conv2d), not the op's."""

from __future__ import annotations

from collections.abc import Sequence

from ._args import as_int

IntOrSeq = int | Sequence[int]
Padding = str | Sequence[int] | Sequence[Sequence[int]]


def _bad(name: str, value) -> TypeError:
    return TypeError(f"im2col_conv2d: {name} must be an int or a sequence of ints, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) or hasattr(v, "__index__")


def _ints(name: str, value, pairs: bool) -> list[int]:
    """An int, or a sequence of ints (and, with ``pairs``, of pairs of ints, flattened) -> a
    list of ints; the errors name ``name``."""
    if isinstance(value, str | bytes):
        raise _bad(name, value)
    if _is_int(value):
        return [as_int("im2col_conv2d", name, value)]
    try:
        items = list(value)
    except TypeError:
        raise _bad(name, value) from None
    out: list[int] = []
    for item in items:
        if not pairs or _is_int(item) or isinstance(item, str | bytes):
            out.append(as_int("im2col_conv2d", name, item))
            continue
        try:
            out.extend(as_int("im2col_conv2d", name, v) for v in item)
        except TypeError as e:
            if "im2col_conv2d" in str(e):
                raise
            raise _bad(name, value) from None
    return out


def int_list(name: str, value: IntOrSeq | Padding) -> list[int]:
    """An int, or a sequence of ints and pairs of ints (flattened) -> a list of ints."""
    return _ints(name, value, pairs=True)


def op_padding(padding: Padding) -> tuple[str, list[int]]:
    """padding -> the op's (padding, explicit_paddings) attributes: a name as given, or
    ``"EXPLICIT"`` and the pads flattened (4 values: top, bottom, left, right; 8: pairs in
    data_format order)."""
    if isinstance(padding, str):
        return padding, []
    return "EXPLICIT", int_list("padding", padding)


def spatial(name: str, value: IntOrSeq, data_format: str) -> list[int]:
    """1, 2 or 4 values (4 in data_format order) -> the 4-value attribute in data_format order.

    Range checks are left to the kernel, which names the argument in its error."""
    vals = _ints(name, value, pairs=False)
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) == 2:
        return [1, 1, *vals] if data_format == "NCHW" else [1, *vals, 1]
    if len(vals) == 4:
        return vals
    raise ValueError(f"im2col_conv2d: {name} must have 1, 2 or 4 values, got {value!r}")


def padding_attrs(padding: Padding, data_format: str) -> tuple[str, list[int]]:
    """tf.nn.conv2d padding -> (padding attr, explicit_paddings attr).

    Explicit padding may be 4 pairs in data_format order (tf.nn.conv2d's form), 2 pairs
    ((top, bottom), (left, right)), or 4 ints (top, bottom, left, right)."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(
                f"im2col_conv2d: padding must be 'SAME', 'VALID' or explicit pads, got {padding!r}"
            )
        return mode, []
    items = list(padding)
    flat: list[int] = []
    for item in items:
        if isinstance(item, int) or hasattr(item, "__index__"):
            flat.append(as_int("im2col_conv2d", "padding", item))
        else:
            flat.extend(as_int("im2col_conv2d", "padding", v) for v in item)
    if len(items) == 2 and len(flat) == 4:  # ((top, bottom), (left, right))
        top, bottom, left, right = flat
    elif len(items) == 4 and len(flat) == 4:  # (top, bottom, left, right)
        top, bottom, left, right = flat
    elif len(flat) == 8:
        return "EXPLICIT", flat
    else:
        raise ValueError(
            "im2col_conv2d: explicit padding must be 4 pairs in data_format order, 2 pairs "
            f"((top, bottom), (left, right)) or 4 ints, got {padding!r}"
        )
    if data_format == "NCHW":
        return "EXPLICIT", [0, 0, 0, 0, top, bottom, left, right]
    return "EXPLICIT", [0, 0, top, bottom, left, right, 0, 0]
