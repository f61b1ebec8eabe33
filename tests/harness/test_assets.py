"""The real models and footage the edge agent is built and measured on, loaded by the real interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

MODELS = {
    # path under ../shared/assets/models: (input shape, input dtype), as documented in its README
    "ssd_mobilenet_v1_coco_quant/detect.tflite": ([1, 300, 300, 3], np.uint8),
    "yolov8n_coco/yolov8n_full_integer_quant.tflite": ([1, 640, 640, 3], np.int8),
    "yolov5n_coco/yolov5n-int8.tflite": ([1, 640, 640, 3], np.uint8),
}
FOOTAGE = [
    "TUD-Campus/TUD-Campus.mp4",
    "TUD-Stadtmitte/TUD-Stadtmitte.mp4",
    "one-by-one/one-by-one-person-detection.mp4",
]


@pytest.mark.parametrize("model", list(MODELS))
def test_litert_loads_and_runs_each_real_model(shared_assets: Path, model: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(shared_assets / "models" / model), num_threads=2)
    interpreter.allocate_tensors()
    (tensor,) = interpreter.get_input_details()
    shape, dtype = MODELS[model]
    assert list(tensor["shape"]) == shape
    assert tensor["dtype"] == dtype
    interpreter.set_tensor(tensor["index"], np.zeros(shape, dtype=dtype))
    interpreter.invoke()
    assert all(interpreter.get_tensor(out["index"]).size > 0 for out in interpreter.get_output_details())


@pytest.mark.parametrize("clip", FOOTAGE)
def test_footage_opens_with_opencv(shared_assets: Path, clip: str) -> None:
    import cv2

    capture = cv2.VideoCapture(str(shared_assets / "videos" / clip))
    try:
        ok, frame = capture.read()
    finally:
        capture.release()
    assert ok
    assert frame.ndim == 3
