"""The TFLite runtime adapter: the only module that imports ai_edge_litert or tflite_runtime."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    @property
    def single_partition(self) -> bool:
        return self.partitions == 1


class Model:
    """One TFLite model behind an interpreter built once (XNNPACK, fixed thread count)."""

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        if _Interpreter is None:
            raise ModelError("no TFLite runtime installed: pip install ai-edge-litert")
        if not path.is_file():
            raise ModelError(f"model file missing: {path}")
        self.path = path
        self.num_threads = num_threads
        try:
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
        values = np.arange(256, dtype=np.float64) * gain + offset
        q = self.input_quantization()
        if q is None:
            return values.astype(self.input_dtype)
        scale, zero = q
        info = np.iinfo(self.input_dtype)
        return np.clip(np.rint(values / scale) + zero, info.min, info.max).astype(self.input_dtype)

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
        for detail, arr in zip(self._inputs, arrays, strict=True):
            dtype = np.dtype(detail["dtype"])
            if arr.dtype != dtype:
                scale, zero = detail["quantization"]
                info = np.iinfo(dtype)
                arr = np.clip(np.rint(arr / scale) + zero, info.min, info.max).astype(dtype)
            self._it.set_tensor(detail["index"], arr)
        self._it.invoke()
        outs = []
        for d in self._outputs:
            out = self._it.get_tensor(d["index"])
            if raw:
                pass
            elif out.dtype.kind in "iu":
                scale, zero = d["quantization"]
                out = (out.astype(np.float32) - zero) * np.float32(scale)
            else:
                out = out.copy()
            outs.append(out)
        return outs

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


def load(name_or_path: str | Path, num_threads: int = 1) -> Model:
    """Load a shipped model by file name (from edge/models) or an explicit path."""
    path = Path(name_or_path)
    if not path.is_absolute() and not path.exists():
        path = MODELS_DIR / path
    return Model(path, num_threads=num_threads)
