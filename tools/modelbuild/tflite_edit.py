"""Graph surgery on TFLite flatbuffers: fp16 constant folding, signatures, RELU folding, pruning."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from tools.modelbuild.tflite_graph import pack, unpack

_FUSABLE = {
    fb.BuiltinOperator.CONV_2D,
    fb.BuiltinOperator.DEPTHWISE_CONV_2D,
    fb.BuiltinOperator.ADD,
    fb.BuiltinOperator.FULLY_CONNECTED,
}


def _code(model: fb.ModelT, op: fb.OperatorT) -> int:
    oc = model.operatorCodes[op.opcodeIndex]
    return max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))


def fold_fp16_dequantize(data: bytes) -> bytes:
    """Replace DEQUANTIZE(fp16 constant) by an fp32 constant: identical values, and visible to the quantizer."""
    model = unpack(data)
    sg = model.subgraphs[0]
    keep = []
    for op in sg.operators:
        if _code(model, op) == fb.BuiltinOperator.DEQUANTIZE:
            src = sg.tensors[op.inputs[0]]
            buf = model.buffers[src.buffer]
            if src.type == fb.TensorType.FLOAT16 and buf.data is not None and len(buf.data):
                values = np.frombuffer(bytes(buf.data), dtype="<f2").astype("<f4")
                dst = sg.tensors[op.outputs[0]]
                nb = fb.BufferT()
                nb.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
                model.buffers.append(nb)
                dst.buffer = len(model.buffers) - 1
                continue
        keep.append(op)
    sg.operators = keep
    return pack(prune(model))


def add_signature(data: bytes, key: str = "serving_default") -> bytes:
    model = unpack(data)
    sg = model.subgraphs[0]
    sig = fb.SignatureDefT()
    sig.signatureKey = key
    sig.subgraphIndex = 0
    sig.inputs, sig.outputs = [], []
    for dst, idxs in ((sig.inputs, sg.inputs), (sig.outputs, sg.outputs)):
        for i in idxs:
            tm = fb.TensorMapT()
            tm.name = sg.tensors[i].name.decode() if isinstance(sg.tensors[i].name, bytes) else sg.tensors[i].name
            tm.tensorIndex = i
            dst.append(tm)
    model.signatureDefs = [sig]
    return pack(model)


def fold_relu(data: bytes) -> bytes:
    """Fuse each standalone RELU into the op producing its input (when nothing else reads that tensor).

    The producer then writes the RELU's output tensor (and its quantization), so XNNPACK, which
    takes no standalone int8 RELU, sees one unbroken graph.
    """
    model = unpack(data)
    sg = model.subgraphs[0]
    producer = {o: op for op in sg.operators for o in op.outputs}
    readers: dict[int, int] = {}
    for op in sg.operators:
        for i in op.inputs:
            readers[i] = readers.get(i, 0) + 1
    keep = []
    for op in sg.operators:
        if _code(model, op) == fb.BuiltinOperator.RELU:
            src = op.inputs[0]
            prod = producer.get(src)
            opts = getattr(prod, "builtinOptions", None)
            if (
                prod is not None
                and _code(model, prod) in _FUSABLE
                and readers.get(src) == 1
                and src not in sg.outputs
                and opts is not None
                and opts.fusedActivationFunction == fb.ActivationFunctionType.NONE
            ):
                opts.fusedActivationFunction = fb.ActivationFunctionType.RELU
                prod.outputs = [op.outputs[0]]
                producer[op.outputs[0]] = prod
                continue
        keep.append(op)
    sg.operators = keep
    return pack(prune(model))


def prune(model: fb.ModelT) -> fb.ModelT:
    """Drop tensors no op, input, output or signature references, and buffers no tensor uses."""
    sg = model.subgraphs[0]
    used = set(sg.inputs) | set(sg.outputs)
    for op in sg.operators:
        used.update(i for i in op.inputs if i >= 0)
        used.update(op.outputs)
        if op.intermediates is not None:
            used.update(op.intermediates)
    order = sorted(used)
    remap = {old: new for new, old in enumerate(order)}
    sg.tensors = [sg.tensors[i] for i in order]
    for op in sg.operators:
        op.inputs = [remap[i] if i >= 0 else i for i in op.inputs]
        op.outputs = [remap[i] for i in op.outputs]
        if op.intermediates is not None:
            op.intermediates = [remap[i] for i in op.intermediates]
    sg.inputs = [remap[i] for i in sg.inputs]
    sg.outputs = [remap[i] for i in sg.outputs]
    for sig in model.signatureDefs or []:
        for tm in list(sig.inputs or []) + list(sig.outputs or []):
            tm.tensorIndex = remap[tm.tensorIndex]
    bufs = sorted({t.buffer for t in sg.tensors} | {0})
    bremap = {old: new for new, old in enumerate(bufs)}
    model.buffers = [model.buffers[i] for i in bufs]
    for t in sg.tensors:
        t.buffer = bremap[t.buffer]
    return model
