"""The shipped models: present, matching the manifest, int8 where promised, one XNNPACK partition."""

from __future__ import annotations

import hashlib
import json

import pytest

from edge.vision import runtime
from tests.vision.conftest import MODELS

INT8_MODELS = ["face_detector_int8.tflite", "face_mesh_int8.tflite", "face_embedder_int8.tflite"]
FLOAT_TWINS = {
    "face_detector_int8.tflite": "face_detector_float.tflite",
    "face_mesh_int8.tflite": "face_mesh.tflite",
    "face_embedder_int8.tflite": "face_embedder_float.tflite",
}
COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def test_manifest_matches_files() -> None:
    manifest = json.loads((MODELS / "manifest.json").read_text())
    assert set(INT8_MODELS) | set(FLOAT_TWINS.values()) <= set(manifest["files"])
    for name, info in manifest["files"].items():
        blob = (MODELS / name).read_bytes()  # a missing model fails here, loudly
        assert hashlib.sha256(blob).hexdigest() == info["sha256"], name
        assert info["source"]["license"] in {"Apache-2.0", "CC0-1.0"}
        assert (MODELS / info["source"]["notice"]).is_file()


@pytest.mark.parametrize("name", INT8_MODELS)
def test_int8_model_has_float_twin_with_same_io(name: str) -> None:
    manifest = json.loads((MODELS / "manifest.json").read_text())["files"]
    q, f = manifest[name], manifest[FLOAT_TWINS[name]]
    assert q["input"] == f["input"] and q["outputs"] == f["outputs"] and q["source"] == f["source"]
    assert q["quantization"]["activations"] == "int8 per-tensor"
    qm, fm = runtime.load(MODELS / name), runtime.load(MODELS / FLOAT_TWINS[name])
    assert qm.input_shape == fm.input_shape and qm.input_dtype.name == "int8" and fm.input_dtype.name == "float32"


@pytest.mark.parametrize("name", INT8_MODELS)
def test_compute_ops_are_int8(name: str) -> None:
    model = runtime.load(MODELS / name, num_threads=1)
    ops = [op for op in model.ops() if op.name in COMPUTE_OPS]
    assert ops, "no compute ops found"
    for op in ops:
        # input activations and weights int8; bias (if any) int32
        assert op.input_dtypes[0] == "int8" and op.input_dtypes[1] == "int8", (op.name, op.input_dtypes)
        assert op.input_dtypes[2:] in ((), ("",), ("int32",)), (op.name, op.input_dtypes)


@pytest.mark.parametrize("name", INT8_MODELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_int8_models_are_one_xnnpack_partition(name: str, threads: int) -> None:
    d = runtime.load(MODELS / name, num_threads=threads).delegation()
    assert d.partitions == 1, d


def test_missing_model_is_a_model_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edge.errors import ModelError

    with pytest.raises(ModelError):
        runtime.load(tmp_path / "absent.tflite")
    (tmp_path / "junk.tflite").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        runtime.load(tmp_path / "junk.tflite")


def test_int8_model_takes_int8_input_via_lookup_table() -> None:
    m = runtime.load(MODELS / "face_embedder_int8.tflite", num_threads=1)
    assert m.input_dtype.name == "int8" and m.input_quantization() is not None
    lut = m.pixel_lut(1.0, 0.0)
    assert lut.dtype.name == "int8" and lut.shape == (256,)
    assert list(lut) == sorted(lut)  # monotonic: brighter pixels never map lower
