"""The ONNX nodes around an exported model: uint8 pixels in, what the model takes; its output back.

They are written with ONNX's own operators, not traced from torch, because they work on sizes
known only at run time (each batch's height, width and channel count), which torch.export fixes
to its example's or refuses. Each step is the ONNX form of the aecli function named in its
docstring, down to the rounding: Python's round() is ONNX's Round (half to even), floor division
is done on non-negative numbers (ONNX's integer Div truncates), and Resize with antialias and
exclude_outside is torch's antialiased bilinear interpolation (measured: within 2e-6). `export`
checks every assembled graph against ae's own code before writing it.

Images go in as (N, H, W, C) uint8, channels last, as PIL and numpy decode them; C is 1 (grey),
2 (grey and alpha), 3 (RGB) or 4 (RGBA).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from aecli.data.images import _GREY_WEIGHTS

# A weight of 1, then the luma weights: the slice [0:1] weighs a grey image's one channel by 1,
# [1:4] an RGB image's three by luma, so one graph takes both without a branch (see to_channels).
_WEIGHTS = np.array([1.0, *_GREY_WEIGHTS], dtype=np.float32)


class Nodes:
    """ONNX nodes and constants under a name prefix, appended in the order they run."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes, self.initializers, self._count = prefix, [], [], 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def const(self, value, dtype=np.int64) -> str:
        name = self._name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attributes) -> str:
        out = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self._name(op_type), **attributes))
        return out

    def ints(self, *parts: str) -> str:
        """1-D int64 shape vectors joined into one."""
        return parts[0] if len(parts) == 1 else self.op("Concat", *parts, axis=0)

    def dim(self, x: str, axis: int) -> str:
        """One dimension of x, as a 1-D int64 tensor of one element."""
        return self.op("Shape", x, start=axis, end=axis + 1)


def unit_float(g: Nodes, pixels: str) -> tuple[str, str]:
    """uint8 (N, H, W, C) to float in [0, 1] with alpha dropped, and its colour count (1 or 3):
    read_image's division by 255, and to_channels' alpha rule (C in 2 or 4: the last is alpha)."""
    x = g.op("Div", g.op("Cast", pixels, to=TensorProto.FLOAT), g.const(255.0, np.float32))
    c = g.dim(pixels, 3)
    colours = g.op("Sub", c, g.op("Mod", g.op("Add", c, g.const([1])), g.const([2])))
    return g.op("Slice", x, g.const([0]), colours, g.const([3])), colours


def to_model_channels(g: Nodes, x: str, colours: str, channels: int) -> str:
    """(N, H, W, 1 or 3) to the model's channels, as to_channels: RGB to grey by luma, grey to RGB
    by repeating it."""
    if channels == 1:
        start = g.op("Div", g.op("Sub", colours, g.const([1])), g.const([2]))  # 0 for grey, 1 for RGB
        weights = g.op("Slice", g.const(_WEIGHTS, np.float32), start, g.op("Add", start, colours), g.const([0]))
        return g.op("ReduceSum", g.op("Mul", x, weights), g.const([3]), keepdims=1)
    return g.op("Expand", x, g.const([1, 1, 1, 3]))


def nchw(g: Nodes, x: str) -> str:
    return g.op("Transpose", x, perm=[0, 3, 1, 2])


def nhwc(g: Nodes, x: str) -> str:
    return g.op("Transpose", x, perm=[0, 2, 3, 1])


class Placement:
    """Where a fitted image's own pixels sit in the model's square (data.images.layout): its scaled
    size and its offsets, each a 1-D int64 tensor of two elements (height, width)."""

    def __init__(self, size: str, offset: str):
        self.size, self.offset = size, offset


def fit(g: Nodes, x: str, size: int, mode: str) -> tuple[str, Placement]:
    """(N, C, H, W) fitted to size x size as data.images.to_size does: scaled with antialiased
    bilinear filtering (and clamped), then padded with edge pixels (pad), cut to the centre (crop),
    or neither (stretch)."""
    hw = g.op("Shape", x, start=2, end=4)
    square = g.const([size, size])
    if mode == "stretch":
        scaled, offset = square, g.const([0, 0])
    else:  # scale = size / max(h, w) (pad) or / min(h, w) (crop); round(h * scale) in float64, as Python
        side = g.op("ReduceMax" if mode == "pad" else "ReduceMin", hw, keepdims=1)
        scale = g.op("Div", g.const([float(size)], np.float64), g.op("Cast", side, to=TensorProto.DOUBLE))
        rounded = g.op("Round", g.op("Mul", g.op("Cast", hw, to=TensorProto.DOUBLE), scale))
        rounded = g.op("Cast", rounded, to=TensorProto.INT64)
        if mode == "pad":  # the longer side to size, the other at least 1 pixel
            scaled = g.op("Min", g.op("Max", rounded, g.const([1, 1])), square)
            offset = g.op("Div", g.op("Sub", square, scaled), g.const([2, 2]))  # (size - h) // 2 >= 0
        else:  # the shorter side to size; start at -((size - h) // 2) = (h - size + 1) // 2
            scaled = g.op("Max", rounded, square)
            offset = g.op("Div", g.op("Add", g.op("Sub", scaled, square), g.const([1, 1])), g.const([2, 2]))
    sizes = g.ints(g.op("Shape", x, start=0, end=2), scaled)
    # At the image's own size the filter's weights are 1 and 0: the image passes unchanged, as to_size skips it.
    x = g.op("Resize", x, "", "", sizes, mode="linear", antialias=1, exclude_outside=1,
             coordinate_transformation_mode="half_pixel")  # fmt: skip
    x = g.op("Clip", x, g.const(0.0, np.float32), g.const(1.0, np.float32))
    if mode == "pad":
        after = g.op("Sub", g.op("Sub", square, scaled), offset)
        zero = g.const([0, 0])
        x = g.op("Pad", x, g.ints(zero, offset, zero, after), mode="edge")
    elif mode == "crop":
        x = g.op("Slice", x, offset, g.op("Add", offset, square), g.const([2, 3]))
    return x, Placement(scaled, offset)


def pad_to_multiple(g: Nodes, x: str, step: int) -> tuple[str, Placement]:
    """(N, C, H, W) with edge pixels added evenly around it up to sides that are multiples of
    `step`, as a fully convolutional backbone pads (backbones._Padding); and where the image sits."""
    hw = g.op("Shape", x, start=2, end=4)
    steps = g.const([step, step])
    padded = g.op("Mul", g.op("Div", g.op("Add", hw, g.const([step - 1, step - 1])), steps), steps)
    before = g.op("Div", g.op("Sub", padded, hw), g.const([2, 2]))
    after = g.op("Sub", g.op("Sub", padded, hw), before)
    zero = g.const([0, 0])
    return g.op("Pad", x, g.ints(zero, before, zero, after), mode="edge"), Placement(hw, before)


def cut(g: Nodes, y: str, placement: Placement) -> str:
    """The image's own pixels out of a padded (N, C, H, W) result (infer._unpadded, _Padding.crop)."""
    return g.op("Slice", y, placement.offset, g.op("Add", placement.offset, placement.size), g.const([2, 3]))


def per_channel(g: Nodes, x: str, channels: int) -> tuple[str, str]:
    """(N, C, H, W) with C of 1 or 3 as a batch the model takes, as infer._fit_channels: through a
    grey model each channel is an image of its own; a colour model sees grey repeated to RGB.
    Returns it and the shape to give the model's output back (see from_per_channel)."""
    shape = g.op("Shape", x)
    if channels == 1:
        return g.op("Reshape", x, g.const([-1, 1, 0, 0])), shape
    return g.op("Expand", x, g.const([1, 3, 1, 1])), shape


def from_per_channel(g: Nodes, y: str, shape: str, channels: int) -> str:
    """The model's output back to the input's channels (infer._unfit_channels): a grey model's
    channel images joined again; a colour model's RGB kept, or averaged for a grey input."""
    if channels == 1:
        return g.op("Reshape", y, shape)
    n, colours, hw = (g.op("Slice", shape, g.const([a]), g.const([b])) for a, b in ((0, 1), (1, 2), (2, 4)))
    groups = g.op("Div", g.const([3]), colours)  # (N, 3, H, W) as (N, C, 3 / C, H, W): the mean of 3, or of 1
    grouped = g.op("Reshape", y, g.ints(n, colours, groups, hw))
    return g.op("ReduceMean", grouped, g.const([2]), keepdims=0)
