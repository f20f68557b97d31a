"""Reader for dlib's DNN serialization of the face-recognition ResNet (pure Python + numpy).

Written from dlib's documented format: ints are ``pack_int`` (a control byte holding the byte
count, with bit 7 as the sign, then the little-endian magnitude), floats are a mantissa/exponent
pair of such ints, strings are a length then bytes, and tensors are a version (2), four dims and
raw little-endian float32 data.  Only the layers the ResNet uses are understood.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatFormatError(ValueError):
    """The file is not the dlib ResNet this reader understands."""


@dataclass
class _Reader:
    data: bytes
    pos: int = 0

    def int_(self) -> int:
        ctrl = self.data[self.pos]
        n = ctrl & 0x0F
        if n > 8:
            raise DatFormatError(f"bad int control byte {ctrl:#x} at {self.pos}")
        val = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -val if ctrl & 0x80 else val

    def float_(self) -> float:
        mantissa = self.int_()
        exponent = self.int_()
        return float(mantissa) * 2.0**exponent

    def str_(self) -> str:
        n = self.int_()
        s = self.data[self.pos : self.pos + n].decode("ascii")
        self.pos += n
        return s

    def tensor(self) -> np.ndarray:
        version = self.int_()
        if version != 2:
            raise DatFormatError(f"tensor version {version} at {self.pos}")
        dims = [self.int_() for _ in range(4)]
        count = int(np.prod(dims))
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos += 4 * count
        return arr.reshape(dims)


@dataclass(frozen=True)
class Conv:
    weights: np.ndarray  # (out, in, kh, kw), cross-correlation as dlib computes it
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class Affine:
    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class Pool:
    kind: str  # "max" | "avg"
    size: int  # 0 means "everything" (global pooling)
    stride: int
    padding: int


@dataclass(frozen=True)
class Dense:
    weights: np.ndarray  # (in, out): y = x @ weights


@dataclass
class DlibResNet:
    mean_rgb: tuple[float, float, float]
    input_size: int
    layers: list[Conv | Affine | Pool | Dense] = field(default_factory=list)
    margin: float = 0.0
    distance_threshold: float = 0.0


_NAME = re.compile(rb"\x01([\x03-\x20])(input_rgb_image_sized|con_4|affine_|max_pool_2|avg_pool_2|fc_2)")


def read(path: Path) -> DlibResNet:
    data = path.read_bytes()
    head = _Reader(data, 0)
    head.int_()
    if head.str_() != "loss_metric_2":
        raise DatFormatError("not a loss_metric network")
    margin, dist = head.float_(), head.float_()
    net: DlibResNet | None = None
    # Layer records are found by their type string; between them dlib stores only versions,
    # flags and empty gradient tensors, none of which the forward pass needs.
    for m in _NAME.finditer(data):
        name = m.group(2).decode()
        if m.group(1)[0] != len(name):
            continue
        r = _Reader(data, m.end())
        if name == "input_rgb_image_sized":
            mean = (r.float_(), r.float_(), r.float_())
            nr, nc = r.int_(), r.int_()
            if nr != nc:
                raise DatFormatError("non-square input")
            net = DlibResNet(mean_rgb=mean, input_size=nr, margin=margin, distance_threshold=dist)
            continue
        if net is None:
            raise DatFormatError("layer before the input layer")
        if name == "con_4":
            params = r.tensor().ravel()
            nf, kh, kw, sy, sx, py, px = (r.int_() for _ in range(7))
            if sy != sx or py != px or kh != kw:
                raise DatFormatError("anisotropic convolution")
            cin = (params.size - nf) // (nf * kh * kw)
            w = params[: nf * cin * kh * kw].reshape(nf, cin, kh, kw)
            net.layers.append(Conv(w.copy(), params[nf * cin * kh * kw :].copy(), sy, py))
        elif name == "affine_":
            params = r.tensor().ravel()
            k = params.size // 2
            net.layers.append(Affine(params[:k].copy(), params[k:].copy()))
        elif name in ("max_pool_2", "avg_pool_2"):
            nr, nc, sy, sx, py, px = (r.int_() for _ in range(6))
            if nr != nc or sy != sx or py != px:
                raise DatFormatError("anisotropic pool")
            net.layers.append(Pool("max" if name.startswith("max") else "avg", nr, sy, py))
        elif name == "fc_2":
            n_out, n_in = r.int_(), r.int_()
            params = r.tensor().ravel()
            if params.size != n_in * n_out:
                raise DatFormatError("fc with bias is not expected here")
            net.layers.append(Dense(params.reshape(n_in, n_out).copy()))
    if net is None:
        raise DatFormatError("no input layer")
    return net
