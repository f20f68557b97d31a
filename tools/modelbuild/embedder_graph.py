"""dlib's face-recognition ResNet as a float32 TFLite graph (NHWC), plus a numpy reference forward.

The graph takes a 1x150x150x3 RGB chip with pixel values 0..255: dlib's input normalisation
((pixel - mean_rgb) / 256) is folded into the first convolution, which is exact because that
convolution has no padding.  Each affine (batch norm already folded by dlib) is folded into the
convolution before it.  dlib's residual add zero-fills whichever operand is smaller (channels, and
rows/columns at the bottom/right), so the graph pads explicitly there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from tools.modelbuild import dlib_dat as dd
from tools.modelbuild import tflite_graph as tg


@dataclass(frozen=True)
class _FoldedConv:
    w: np.ndarray  # (out, kh, kw, in)
    b: np.ndarray
    stride: int
    same: bool


def _fold(conv: dd.Conv, aff: dd.Affine, scale: float = 1.0, mean: np.ndarray | None = None) -> _FoldedConv:
    w = conv.weights.astype(np.float64) * scale
    b = conv.bias.astype(np.float64)
    if mean is not None:  # (x - mean) * scale, folded: conv(x*scale) - sum(w*scale*mean)
        b = b - np.einsum("oihw,i->o", w, mean)
    w = w * aff.gamma[:, None, None, None]
    b = b * aff.gamma + aff.beta
    if conv.padding not in (0, conv.weights.shape[2] // 2) or (conv.padding and conv.stride != 1):
        raise dd.DatFormatError("padding that TFLite SAME/VALID cannot express")
    return _FoldedConv(w.transpose(0, 2, 3, 1).astype(np.float32), b.astype(np.float32), conv.stride, conv.padding > 0)


@dataclass(frozen=True)
class Block:
    a: _FoldedConv
    b: _FoldedConv
    down: bool  # residual_down: the shortcut is a 2x2/2 average pool of the block input


@dataclass(frozen=True)
class Plan:
    stem: _FoldedConv
    blocks: list[Block]
    fc: np.ndarray  # (in, out)
    input_size: int


def plan(net: dd.DlibResNet) -> Plan:
    layers = list(net.layers)
    mean = np.asarray(net.mean_rgb, dtype=np.float64)
    c0, a0, p0 = layers[0], layers[1], layers[2]
    assert isinstance(c0, dd.Conv) and isinstance(a0, dd.Affine) and isinstance(p0, dd.Pool)
    assert p0.kind == "max" and p0.size == 3 and p0.stride == 2 and p0.padding == 0
    stem = _fold(c0, a0, scale=1.0 / 256.0, mean=mean)
    if c0.padding != 0:
        raise dd.DatFormatError("mean folding needs an unpadded first convolution")
    blocks: list[Block] = []
    i = 3
    while i + 3 < len(layers) and isinstance(layers[i], dd.Conv):
        ca, aa, cb, ab = layers[i : i + 4]
        assert isinstance(ca, dd.Conv) and isinstance(aa, dd.Affine)
        assert isinstance(cb, dd.Conv) and isinstance(ab, dd.Affine)
        i += 4
        down = ca.stride == 2
        if down:
            pool = layers[i]
            assert isinstance(pool, dd.Pool) and pool.kind == "avg" and pool.size == 2 and pool.stride == 2
            i += 1
        blocks.append(Block(_fold(ca, aa), _fold(cb, ab), down))
    gp, fc = layers[i], layers[i + 1]
    assert isinstance(gp, dd.Pool) and gp.size == 0 and isinstance(fc, dd.Dense) and i + 2 == len(layers)
    return Plan(stem, blocks, fc.weights, net.input_size)


def _out(n: int, k: int, s: int, same: bool) -> int:
    return (n + s - 1) // s if same else (n - k) // s + 1


def build_tflite(p: Plan) -> bytes:
    g = tg.Graph()
    n = p.input_size
    x = g.tensor("chip_rgb", (1, n, n, 3))
    inp = x
    count = [0]

    def conv(x: int, c: _FoldedConv, relu: bool, tag: str) -> int:
        count[0] += 1
        _, h, _, _ = g.shape(x)
        oc, kh, _, _ = c.w.shape
        ho = _out(h, kh, c.stride, c.same)
        w = g.tensor(f"{tag}/weights", c.w.shape, c.w)
        b = g.tensor(f"{tag}/bias", c.b.shape, c.b)
        y = g.tensor(f"{tag}/out", (1, ho, ho, oc))
        g.op(
            fb.BuiltinOperator.CONV_2D,
            [x, w, b],
            [y],
            fb.BuiltinOptions.Conv2DOptions,
            tg.conv2d_options(c.stride, c.same, relu),
        )
        return y

    def pool(x: int, code: int, size: int, stride: int, tag: str) -> int:
        _, h, _, c = g.shape(x)
        ho = (h - size) // stride + 1
        y = g.tensor(f"{tag}/out", (1, ho, ho, c))
        if code == fb.BuiltinOperator.AVERAGE_POOL_2D:
            # XNNPACK has no int8 average pooling: the same sum as a depthwise convolution with
            # weights 1/size^2 (exact in int8: per-channel weight scale makes every weight 127).
            w = np.full((1, size, size, c), 1.0 / (size * size), np.float32)
            wt = g.tensor(f"{tag}/weights", w.shape, w)
            bt = g.tensor(f"{tag}/bias", (c,), np.zeros(c, np.float32))
            o = fb.DepthwiseConv2DOptionsT()
            o.padding = fb.Padding.VALID
            o.strideW = o.strideH = stride
            o.depthMultiplier = 1
            o.dilationWFactor = o.dilationHFactor = 1
            o.fusedActivationFunction = fb.ActivationFunctionType.NONE
            g.op(fb.BuiltinOperator.DEPTHWISE_CONV_2D, [x, wt, bt], [y], fb.BuiltinOptions.DepthwiseConv2DOptions, o)
            return y
        g.op(code, [x], [y], fb.BuiltinOptions.Pool2DOptions, tg.pool_options(size, stride))
        return y

    def pad_to(x: int, h: int, c: int, tag: str) -> int:
        _, xh, _, xc = g.shape(x)
        if (xh, xc) == (h, c):
            return x
        pads = np.array([[0, 0], [0, h - xh], [0, h - xh], [0, c - xc]], dtype=np.int32)
        pt = g.tensor(f"{tag}/paddings", (4, 2), pads)
        y = g.tensor(f"{tag}/out", (1, h, h, c))
        g.op(fb.BuiltinOperator.PAD, [x, pt], [y], fb.BuiltinOptions.PadOptions, fb.PadOptionsT())
        return y

    x = conv(x, p.stem, True, "stem/conv")
    x = pool(x, fb.BuiltinOperator.MAX_POOL_2D, 3, 2, "stem/maxpool")
    for bi, blk in enumerate(p.blocks):
        t = f"block{bi:02d}"
        y = conv(x, blk.a, True, f"{t}/conv_a")
        y = conv(y, blk.b, False, f"{t}/conv_b")
        short = pool(x, fb.BuiltinOperator.AVERAGE_POOL_2D, 2, 2, f"{t}/shortcut_pool") if blk.down else x
        _, yh, _, yc = g.shape(y)
        _, sh, _, sc = g.shape(short)
        h, c = max(yh, sh), max(yc, sc)
        y = pad_to(y, h, c, f"{t}/pad_main")
        short = pad_to(short, h, c, f"{t}/pad_shortcut")
        out = g.tensor(f"{t}/add_relu", (1, h, h, c))
        g.op(fb.BuiltinOperator.ADD, [y, short], [out], fb.BuiltinOptions.AddOptions, tg.add_options(True))
        x = out
    _, h, _, c = g.shape(x)
    x = pool(x, fb.BuiltinOperator.AVERAGE_POOL_2D, h, 1, "head/global_pool")
    shape = g.tensor("head/shape", (2,), np.array([1, c], dtype=np.int32))
    flat = g.tensor("head/flat", (1, c))
    ro = fb.ReshapeOptionsT()
    ro.newShape = [1, c]
    g.op(fb.BuiltinOperator.RESHAPE, [x, shape], [flat], fb.BuiltinOptions.ReshapeOptions, ro)
    w = g.tensor("head/fc/weights", (p.fc.shape[1], c), np.ascontiguousarray(p.fc.T.astype(np.float32)))
    emb = g.tensor("embedding", (1, p.fc.shape[1]))
    fo = fb.FullyConnectedOptionsT()
    fo.fusedActivationFunction = fb.ActivationFunctionType.NONE
    g.op(fb.BuiltinOperator.FULLY_CONNECTED, [flat, w, -1], [emb], fb.BuiltinOptions.FullyConnectedOptions, fo)
    return g.finish({"chip_rgb": inp}, {"embedding": emb})


def reference_forward(net: dd.DlibResNet, chip_rgb: np.ndarray) -> np.ndarray:
    """dlib's forward pass in plain numpy, straight from the unfolded layers (used to check the graph)."""
    x = (chip_rgb.astype(np.float64) - np.asarray(net.mean_rgb)) / 256.0  # HWC
    x = x.transpose(2, 0, 1)  # CHW like dlib

    def conv(x: np.ndarray, c: dd.Conv) -> np.ndarray:
        k = c.weights.shape[2]
        if c.padding:
            x = np.pad(x, ((0, 0), (c.padding, c.padding), (c.padding, c.padding)))
        ci, h, w = x.shape
        ho, wo = (h - k) // c.stride + 1, (w - k) // c.stride + 1
        cols = np.empty((ci, k, k, ho, wo))
        for dy in range(k):
            for dx in range(k):
                cols[:, dy, dx] = x[:, dy : dy + c.stride * ho : c.stride, dx : dx + c.stride * wo : c.stride]
        return np.einsum("oiyx,iyxhw->ohw", c.weights, cols, optimize=True) + c.bias[:, None, None]

    def pool(x: np.ndarray, pl: dd.Pool) -> np.ndarray:
        if pl.size == 0:
            return x.mean(axis=(1, 2))
        h = x.shape[1]
        ho = (h - pl.size) // pl.stride + 1
        win = np.stack(
            [
                x[:, dy : dy + pl.stride * ho : pl.stride, dx : dx + pl.stride * ho : pl.stride]
                for dy in range(pl.size)
                for dx in range(pl.size)
            ]
        )
        return win.max(0) if pl.kind == "max" else win.mean(0)

    def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.zeros((max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2])))
        out[: a.shape[0], : a.shape[1], : a.shape[2]] += a
        out[: b.shape[0], : b.shape[1], : b.shape[2]] += b
        return out

    L: list[Any] = list(net.layers)
    aff = lambda x, a: x * a.gamma[:, None, None] + a.beta[:, None, None]  # noqa: E731
    x = pool(np.maximum(aff(conv(x, L[0]), L[1]), 0), L[2])
    i = 3
    while isinstance(L[i], dd.Conv):
        inp = x
        y = np.maximum(aff(conv(x, L[i]), L[i + 1]), 0)
        y = aff(conv(y, L[i + 2]), L[i + 3])
        i += 4
        if isinstance(L[i], dd.Pool) and L[i].size == 2:
            inp = pool(inp, L[i])
            i += 1
        x = np.maximum(add(y, inp), 0)
    x = pool(x, L[i])
    return (x @ L[i + 1].weights).astype(np.float32)
