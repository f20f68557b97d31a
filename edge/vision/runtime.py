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
        log.debug("loaded %s with %s, %d thread(s)", path.name, RUNTIME, num_threads)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self._inputs[0]["shape"])

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return np.dtype(self._inputs[0]["dtype"])

    def run(self, *arrays: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
        """Invoke on the given inputs (in model input order) and return copies of every output."""
        for detail, arr in zip(self._inputs, arrays, strict=True):
            self._it.set_tensor(detail["index"], arr)
        self._it.invoke()
        return [self._it.get_tensor(d["index"]).copy() for d in self._outputs]

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
