"""Graph surgery on TFLite flatbuffers: op-code repair, fp16 constant folding, signatures, RELU folding,
PRELU expansion, pruning."""

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


def repair_opcodes(data: bytes) -> bytes:
    """Set `builtin_code` from `deprecated_builtin_code` where an old converter left it 0 (ADD).

    Old flatbuffers (MediaPipe's face mesh among them) set only the deprecated field; the runtime
    reads the larger of the two, but ai-edge-quantizer reads `builtin_code` and took every op for ADD.
    """
    model = unpack(data)
    for oc in model.operatorCodes:
        oc.builtinCode = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
    return pack(model)


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


def expand_prelu(data: bytes) -> bytes:
    """Rewrite each PRELU(x; alpha) as ADD(x, DW1x1(DW1x1(x; -1, RELU); 1 - alpha)) in float.

    x + (1 - a) * relu(-x) is x for x >= 0 and a * x below: the same function, per channel, for any
    alpha (MediaPipe's mesh has slopes from -1.1 to 1.5).  ai-edge-quantizer leaves PRELU in float
    and XNNPACK (ai-edge-litert 2.3) takes no int8 PRELU; depthwise 1x1 convolutions (per-channel
    int8 weights -1 and 1 - alpha) with a fused RELU, and ADD, it quantizes and XNNPACK delegates.
    """
    model = unpack(data)
    sg = model.subgraphs[0]
    ops = []
    for op in sg.operators:
        if _code(model, op) != fb.BuiltinOperator.PRELU:
            ops.append(op)
            continue
        x, slope = op.inputs
        out = op.outputs[0]
        st = sg.tensors[slope]
        if st.type != fb.TensorType.FLOAT32 or model.buffers[st.buffer].data is None:
            raise ValueError("PRELU slope must be a float32 constant")
        alpha = np.frombuffer(bytes(model.buffers[st.buffer].data), dtype="<f4")
        channels = int(sg.tensors[x].shape[-1])
        if alpha.size != channels:
            raise ValueError(f"PRELU slope of {alpha.size} values for {channels} channels")
        base = _name(sg.tensors[out])
        neg = _activation(sg, base + "/relu_neg", x)
        part = _activation(sg, base + "/neg_part", x)
        ops.append(_depthwise_1x1(model, sg, x, np.full(channels, -1.0, np.float32), neg, relu=True))
        ops.append(_depthwise_1x1(model, sg, neg, (1.0 - alpha).astype(np.float32), part, relu=False))
        add = fb.OperatorT()
        add.opcodeIndex = _opcode(model, fb.BuiltinOperator.ADD)
        add.inputs, add.outputs = [x, part], [out]
        add.builtinOptionsType = fb.BuiltinOptions.AddOptions
        add.builtinOptions = fb.AddOptionsT()
        add.builtinOptions.fusedActivationFunction = fb.ActivationFunctionType.NONE
        ops.append(add)
    sg.operators = ops
    return pack(prune(model))


def _name(t: fb.TensorT) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def _opcode(model: fb.ModelT, code: int) -> int:
    for i, oc in enumerate(model.operatorCodes):
        if max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode)) == code:
            return i
    oc = fb.OperatorCodeT()
    oc.builtinCode = code
    oc.deprecatedBuiltinCode = min(code, 127)
    oc.version = 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _constant(model: fb.ModelT, sg: fb.SubGraphT, name: str, values: np.ndarray) -> int:
    buf = fb.BufferT()
    buf.data = np.frombuffer(values.astype("<f4").tobytes(), dtype=np.uint8)
    model.buffers.append(buf)
    t = fb.TensorT()
    t.name, t.shape, t.type, t.buffer = name, list(values.shape), fb.TensorType.FLOAT32, len(model.buffers) - 1
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _activation(sg: fb.SubGraphT, name: str, like: int) -> int:
    t = fb.TensorT()
    t.name, t.shape, t.type, t.buffer = name, list(sg.tensors[like].shape), fb.TensorType.FLOAT32, 0
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _depthwise_1x1(
    model: fb.ModelT, sg: fb.SubGraphT, x: int, weights: np.ndarray, out: int, relu: bool
) -> fb.OperatorT:
    """out = weights * x per channel (a 1x1 depthwise convolution, zero bias), RELU fused if asked."""
    c = len(weights)
    base = _name(sg.tensors[out])
    op = fb.OperatorT()
    op.opcodeIndex = _opcode(model, fb.BuiltinOperator.DEPTHWISE_CONV_2D)
    op.inputs = [
        x,
        _constant(model, sg, base + "/weights", weights.reshape(1, 1, 1, c)),
        _constant(model, sg, base + "/bias", np.zeros(c, np.float32)),
    ]
    op.outputs = [out]
    opt = fb.DepthwiseConv2DOptionsT()
    opt.padding = fb.Padding.VALID
    opt.strideW = opt.strideH = opt.depthMultiplier = opt.dilationWFactor = opt.dilationHFactor = 1
    opt.fusedActivationFunction = fb.ActivationFunctionType.RELU if relu else fb.ActivationFunctionType.NONE
    op.builtinOptionsType = fb.BuiltinOptions.DepthwiseConv2DOptions
    op.builtinOptions = opt
    return op


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
