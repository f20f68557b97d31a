"""The TFLite runtime adapter: the only module that imports ai_edge_litert or tflite_runtime."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.errors import ModelError
from edge.service.memory import release_mapped_file

log = logging.getLogger(__name__)

try:  # ai-edge-litert works with numpy 2 (which current OpenCV wheels need)
    from ai_edge_litert.interpreter import Interpreter as _Interpreter

    RUNTIME = "ai_edge_litert"
except ImportError:  # pragma: no cover - only on systems with the legacy wheel
    try:
        from tflite_runtime.interpreter import Interpreter as _Interpreter  # type: ignore[no-redef]

        RUNTIME = "tflite_runtime"
    except ImportError:
        _Interpreter = None
        RUNTIME = "none"

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

# What the runtime's C++ logger prints on fd 2 the first time it applies XNNPACK: news to nobody, so dropped.
_INFO_LINES = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)
_fd2_lock = threading.Lock()


@contextlib.contextmanager
def _runtime_chatter_dropped() -> Iterator[None]:
    """Run the block with fd 2 pointed at a temporary file, then re-emit everything but the known info lines.

    The runtime logs from C++ straight to file descriptor 2, below sys.stderr, so only an fd-level redirect
    catches it. Real warnings and errors stay visible: they are written back to the real fd 2 afterwards (Python
    writes to sys.stderr from other threads in the window are delayed the same way, never lost). Interpreters
    are built at startup; the lock keeps two builds from nesting redirects."""
    with _fd2_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2 (closed, or stderr replaced): nothing to silence
            yield
            return
        try:
            with tempfile.TemporaryFile() as sink:
                os.dup2(sink.fileno(), 2)
                try:
                    yield
                finally:
                    with contextlib.suppress(OSError, ValueError):
                        sys.stderr.flush()
                    os.dup2(saved, 2)
                    sink.seek(0)
                    kept = [ln for ln in sink.read().splitlines(keepends=True) if ln.rstrip() not in _INFO_LINES]
                    if kept:
                        os.write(2, b"".join(kept))
        finally:
            os.close(saved)


@dataclass(frozen=True)
class OpInfo:
    """One node of the original graph as the interpreter lists it, with its input tensor dtypes."""

    name: str
    input_dtypes: tuple[str, ...]  # "" for an absent optional input


@dataclass(frozen=True)
class Delegation:
    """How the XNNPACK delegate took the graph: one partition means one DELEGATE node."""

    partitions: int  # DELEGATE nodes added by the delegate
    ops: int  # nodes of the original graph
    by_op: dict[str, int]


class Model:
    """One TFLite model behind an interpreter built once (XNNPACK, fixed thread count)."""

    # time.perf_counter() at the start and end of the last invoke (benchmarks split a call by it)
    invoke_window: tuple[float, float] = (0.0, 0.0)

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        if _Interpreter is None:
            raise ModelError("no TFLite runtime installed: pip install ai-edge-litert")
        if not path.is_file():
            raise ModelError(f"model file missing: {path}")
        self.path = path
        self.num_threads = num_threads
        try:
            with _runtime_chatter_dropped():
                self._it: Any = _Interpreter(model_path=str(path), num_threads=num_threads)
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {path.name}: {exc}") from exc
        self._inputs = self._it.get_input_details()
        self._outputs = self._it.get_output_details()
        d = self.delegation()
        if d.partitions == 1:  # XNNPACK holds packed copies of the weights: the mapped file is not read again
            release_mapped_file(path)
        if d.partitions != 1:  # slow: ops fall back to TFLite's reference kernels between partitions
            log.warning("%s: XNNPACK took the graph as %d partitions (expected 1)", path.name, d.partitions)
        log.debug("loaded %s with %s, %d thread(s)", path.name, RUNTIME, num_threads)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self._inputs[0]["shape"])

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return np.dtype(self._inputs[0]["dtype"])

    def input_quantization(self) -> tuple[float, int] | None:
        """(scale, zero_point) of an integer input, None for a float input."""
        scale, zero = self._inputs[0]["quantization"]
        return (float(scale), int(zero)) if self.input_dtype.kind in "iu" and scale else None

    def pixel_lut(self, gain: float, offset: float) -> npt.NDArray[Any]:
        """A 256-entry table taking a uint8 pixel v to the model input for v * gain + offset.

        For an int8 model the table holds the quantized value, so preprocessing is one cv2.LUT.
        """
        return self.quantize_input(np.arange(256, dtype=np.float64) * gain + offset)

    def quantize_input(self, arr: npt.NDArray[Any], i: int = 0) -> npt.NDArray[Any]:
        """`arr` as input i takes it: float values quantized with the input's scale for an integer input."""
        detail = self._inputs[i]
        dtype = np.dtype(detail["dtype"])
        if arr.dtype == dtype:
            return arr
        if dtype.kind not in "iu":
            return arr.astype(dtype)
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.rint(arr / scale) + zero, info.min, info.max).astype(dtype)

    def output_quantization(self, i: int) -> tuple[float, int] | None:
        """(scale, zero_point) of integer output i, None for a float output."""
        scale, zero = self._outputs[i]["quantization"]
        return (float(scale), int(zero)) if np.dtype(self._outputs[i]["dtype"]).kind in "iu" and scale else None

    def run(self, *arrays: npt.NDArray[Any], raw: bool = False) -> list[npt.NDArray[Any]]:
        """Invoke on the given inputs (in model input order) and return every output as float32.

        Float inputs given to an integer-input model are quantized with its input scale; integer
        outputs are dequantized, so int8 and float models are called the same way.  `raw` returns
        outputs as stored (callers that only need a few rows dequantize those themselves).
        """
        for i, (detail, arr) in enumerate(zip(self._inputs, arrays, strict=True)):
            self._it.set_tensor(detail["index"], self.quantize_input(arr, i))
        self._invoke()
        return [self.output(i, raw) for i in range(len(self._outputs))]

    def invoke_with(self, fill: Callable[[npt.NDArray[Any]], object]) -> None:
        """Invoke after `fill` has written input 0 in place: no temporary input array, no copy.

        `fill` gets a writable view of the interpreter's own input buffer (batch dimension dropped,
        the model's input dtype) and must not keep it: the runtime refuses to invoke while a view of
        its buffers is alive.
        """
        view = self._it.tensor(self._inputs[0]["index"])()[0]
        fill(view)
        del view
        self._invoke()

    def _invoke(self) -> None:
        t = time.perf_counter()
        self._it.invoke()
        self.invoke_window = (t, time.perf_counter())

    def input(self, i: int = 0) -> npt.NDArray[Any]:
        """A copy of input i as last fed (batch dimension kept)."""
        return self._it.get_tensor(self._inputs[i]["index"])

    def output(self, i: int, raw: bool = False) -> npt.NDArray[Any]:
        """A copy of output i after an invoke: dequantized to float32 (as run() returns it), or as stored."""
        d = self._outputs[i]
        out = self._it.get_tensor(d["index"])
        if not raw and out.dtype.kind in "iu":
            scale, zero = d["quantization"]
            out = (out.astype(np.float32) - zero) * np.float32(scale)
        return out

    def ops(self) -> list[OpInfo]:
        """The original graph's nodes (DELEGATE nodes excluded) with their input dtypes."""
        tensors = {t["index"]: t for t in self._it.get_tensor_details()}
        out = []
        for op in self._it._get_ops_details():
            if op["op_name"] == "DELEGATE":
                continue
            dts = tuple(np.dtype(tensors[i]["dtype"]).name if i in tensors else "" for i in op["inputs"])
            out.append(OpInfo(op["op_name"], dts))
        return out

    def delegation(self) -> Delegation:
        names = [op["op_name"] for op in self._it._get_ops_details()]
        counts = Counter(names)
        partitions = counts.pop("DELEGATE", 0)
        return Delegation(partitions=partitions, ops=sum(counts.values()), by_op=dict(counts))


class PixelMap:
    """Writes uint8 pixels as model input values through a 256-entry table, in one pass.

    The table (Model.pixel_lut, or Model.quantize_input of the float values a reference path
    computes) maps each pixel value to what the model is fed; the destination is typically the view
    Model.invoke_with hands out.  When the table is a plain shift by 128 (int8 input with scale 1 and
    zero point -128, as the embedder has) the pass is an XOR of the sign bit, which writes the same
    bytes several times faster than a table lookup; a float table that is a plain gain (the mesh's
    float(v) * (1 / 255)) is one multiply.
    """

    def __init__(self, lut: npt.NDArray[Any]) -> None:
        if lut.shape != (256,):
            raise ValueError("a pixel table has 256 entries")
        self.lut = lut
        self.dtype = lut.dtype
        shift = np.arange(256, dtype=np.uint8) ^ np.uint8(0x80)
        self.xor = self.dtype.itemsize == 1 and np.array_equal(lut.view(np.uint8), shift)
        # a float table v -> float(v) * gain (float arithmetic): one multiply beats the float LUT
        self.gain = lut[1] if self.dtype.kind == "f" else None
        if self.gain is not None and not np.array_equal(np.arange(256).astype(self.dtype) * self.gain, lut):
            self.gain = None

    def __call__(self, src: npt.NDArray[np.uint8], dst: npt.NDArray[Any]) -> None:
        if src.dtype != np.uint8 or dst.dtype != self.dtype or dst.shape != src.shape:
            raise ValueError(f"pixel map: {src.shape} {src.dtype} -> {dst.shape} {dst.dtype}, table {self.dtype}")
        if self.xor:
            np.bitwise_xor(src, np.uint8(0x80), out=dst.view(np.uint8))
            return
        if self.gain is not None:
            np.multiply(src, self.gain, out=dst)
            return
        out = cv2.LUT(src, self.lut, dst=dst)
        if out is not dst:  # OpenCV allocated instead of writing into dst (e.g. an unusual stride)
            dst[...] = out


def load(name_or_path: str | Path, num_threads: int = 1) -> Model:
    """Load a shipped model by file name (from edge/models) or an explicit path."""
    path = Path(name_or_path)
    if not path.is_absolute() and not path.exists():
        path = MODELS_DIR / path
    return Model(path, num_threads=num_threads)
