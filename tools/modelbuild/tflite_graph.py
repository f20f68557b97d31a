"""A small float32 TFLite graph writer on top of the flatbuffer schema bundled with ai-edge-litert."""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

_DTYPES = {np.dtype(np.float32): fb.TensorType.FLOAT32, np.dtype(np.int32): fb.TensorType.INT32}


class Graph:
    """Builds one subgraph with a serving_default signature (which the quantizer's calibrator needs)."""

    def __init__(self) -> None:
        self.model = fb.ModelT()
        self.model.version = 3
        self.model.description = "doorbell-edge tools/build_models.py"
        self.model.buffers = [fb.BufferT()]  # buffer 0 must stay empty
        self.model.operatorCodes = []
        self.sg = fb.SubGraphT()
        self.sg.tensors, self.sg.operators, self.sg.inputs, self.sg.outputs = [], [], [], []
        self.sg.name = "main"
        self._codes: dict[int, int] = {}
        self._names: set[str] = set()

    def tensor(
        self, name: str, shape: tuple[int, ...], data: np.ndarray | None = None, dtype: np.dtype | type = np.float32
    ) -> int:
        if name in self._names:
            raise ValueError(f"duplicate tensor name {name}")
        self._names.add(name)
        t = fb.TensorT()
        t.name = name
        t.shape = list(shape)
        t.type = _DTYPES[np.dtype(dtype if data is None else data.dtype)]
        if data is None:
            t.buffer = 0
        else:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def shape(self, idx: int) -> tuple[int, ...]:
        return tuple(self.sg.tensors[idx].shape)

    def op(self, code: int, inputs: list[int], outputs: list[int], opt_type: int = 0, options: object = None) -> None:
        if code not in self._codes:
            oc = fb.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            self.model.operatorCodes.append(oc)
            self._codes[code] = len(self.model.operatorCodes) - 1
        o = fb.OperatorT()
        o.opcodeIndex = self._codes[code]
        o.inputs, o.outputs = inputs, outputs
        o.builtinOptionsType = opt_type
        o.builtinOptions = options
        self.sg.operators.append(o)

    def finish(self, inputs: dict[str, int], outputs: dict[str, int]) -> bytes:
        self.sg.inputs = list(inputs.values())
        self.sg.outputs = list(outputs.values())
        self.model.subgraphs = [self.sg]
        sig = fb.SignatureDefT()
        sig.signatureKey = "serving_default"
        sig.subgraphIndex = 0
        sig.inputs, sig.outputs = [], []
        for dst, items in ((sig.inputs, inputs), (sig.outputs, outputs)):
            for name, idx in items.items():
                tm = fb.TensorMapT()
                tm.name, tm.tensorIndex = name, idx
                dst.append(tm)
        self.model.signatureDefs = [sig]
        return pack(self.model)


def pack(model: fb.ModelT) -> bytes:
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def unpack(data: bytes) -> fb.ModelT:
    """Flatbuffer -> object tree; buffers stored after the flatbuffer (offset/size) are pulled inline."""
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(data, 0))
    for buf in model.buffers or []:
        if buf.offset and buf.offset > 1:
            buf.data = np.frombuffer(data[buf.offset : buf.offset + buf.size], dtype=np.uint8)
            buf.offset = buf.size = 0
    return model


def conv2d_options(stride: int, same: bool, relu: bool) -> fb.Conv2DOptionsT:
    o = fb.Conv2DOptionsT()
    o.padding = fb.Padding.SAME if same else fb.Padding.VALID
    o.strideW = o.strideH = stride
    o.dilationWFactor = o.dilationHFactor = 1
    o.fusedActivationFunction = fb.ActivationFunctionType.RELU if relu else fb.ActivationFunctionType.NONE
    return o


def pool_options(size: int, stride: int) -> fb.Pool2DOptionsT:
    o = fb.Pool2DOptionsT()
    o.padding = fb.Padding.VALID
    o.strideW = o.strideH = stride
    o.filterWidth = o.filterHeight = size
    o.fusedActivationFunction = fb.ActivationFunctionType.NONE
    return o


def add_options(relu: bool) -> fb.AddOptionsT:
    o = fb.AddOptionsT()
    o.fusedActivationFunction = fb.ActivationFunctionType.RELU if relu else fb.ActivationFunctionType.NONE
    return o
