"""Static int8 quantization with ai-edge-quantizer, calibrated with a global min/max over all samples.

The quantizer's default merges per-sample ranges with a moving average, which clips rare large
activations (BlazeFace's confident face scores among them); a global min/max keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ai_edge_quantizer import calibrator, quantizer
from ai_edge_quantizer.utils import qsv_utils

A8W8 = [
    {
        "regex": ".*",
        "operation": "*",
        "algorithm_key": "min_max_uniform_quantize",
        "op_config": {
            "activation_tensor_config": {
                "num_bits": 8,
                "symmetric": False,
                "granularity": "TENSORWISE",
                "dtype": "INT",
            },
            "weight_tensor_config": {"num_bits": 8, "symmetric": True, "granularity": "CHANNELWISE", "dtype": "INT"},
            "compute_precision": "INTEGER",
            "explicit_dequantize": False,
            "skip_checks": False,
            "min_weight_elements": 0,
        },
    }
]


def int8(float_model: bytes, input_name: str, samples: Iterable[np.ndarray]) -> bytes:
    qt = quantizer.Quantizer(bytearray(float_model), A8W8)
    calib = calibrator.Calibrator(bytes(float_model), num_threads=2, qsv_update_func=qsv_utils.min_max_update)
    data = {"serving_default": [{input_name: s} for s in samples]}
    calib.calibrate(data, qt._recipe_manager)
    result = qt.quantize(calib.get_model_qsvs(), enable_progress_report=False)
    return bytes(result.quantized_model)
