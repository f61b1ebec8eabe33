"""The detector's decoders against the people really in the usual test photos, with the real models.

Reference boxes: the persons in ``bus.jpg`` and ``zidane.jpg`` as published for these photos
(Ultralytics' YOLOv8n output), rounded; a decoder that mixes up axes, scales, letterbox offsets or
quantization misses them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.detector import Detector, ModelError, recognise_format
from edge_agent.tracker import iou_matrix

MODELS = {
    "ssd": "ssd_mobilenet_v1_coco_quant/detect.tflite",
    "yolov8": "yolov8n_coco/yolov8n_full_integer_quant.tflite",
    "yolov5": "yolov5n_coco/yolov5n-int8.tflite",
}
PEOPLE = {
    # x1, y1, x2, y2 of each clearly visible person
    "bus.jpg": [(48, 398, 245, 902), (670, 380, 810, 875), (221, 405, 344, 857)],
    "zidane.jpg": [(747, 41, 1139, 712), (143, 203, 1113, 711)],
}
# SSD MobileNet v1 (300x300, 2018) is weaker: it finds the people in bus.jpg, and in zidane.jpg
# the right-hand player only (its best box for the left one covers just his upper body).
SSD_FINDS = {"bus.jpg": [0, 1, 2], "zidane.jpg": [0]}


@pytest.fixture(scope="module")
def detectors(shared_assets: Path) -> dict[str, Detector]:
    return {name: Detector(str(shared_assets / "models" / path)) for name, path in MODELS.items()}


@pytest.mark.parametrize("image", list(PEOPLE))
@pytest.mark.parametrize("model", list(MODELS))
def test_each_decoder_finds_the_people_in_the_photo(
    detectors: dict[str, Detector], shared_assets: Path, model: str, image: str
) -> None:
    detector = detectors[model]
    found = detector.detect(cv2.imread(str(shared_assets / "images" / image)))
    reference = np.array(PEOPLE[image], np.float32)
    overlap = iou_matrix(reference, found.boxes)
    expected = SSD_FINDS[image] if model == "ssd" else range(len(reference))
    for person in expected:
        assert overlap[person].max(initial=0) >= 0.6, f"{model} missed person {person} in {image}: {found.boxes}"
    assert detector.format == model
    assert np.all(found.scores >= detector.score_threshold)
    assert np.all(found.scores <= 1.0)


@pytest.mark.parametrize("model", ["yolov8", "yolov5"])
def test_letterbox_maps_boxes_back_to_the_frame(
    detectors: dict[str, Detector], shared_assets: Path, model: str
) -> None:
    """The same photo with a 200-pixel border gives the same people, shifted by the border."""
    photo = cv2.imread(str(shared_assets / "images" / "bus.jpg"))
    bordered = cv2.copyMakeBorder(photo, 200, 0, 300, 0, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    plain = detectors[model].detect(photo)
    shifted = detectors[model].detect(bordered)
    moved_back = shifted.boxes - np.array([300, 200, 300, 200], np.float32)
    best = iou_matrix(np.array(PEOPLE["bus.jpg"], np.float32), moved_back).max(axis=1)
    assert np.all(best >= 0.6), moved_back
    assert len(plain) > 0


def test_decoders_are_recognised_from_the_output_tensors() -> None:
    def tensors(*shapes: tuple[int, ...]) -> list[dict]:
        return [{"name": f"out{i}", "shape": np.array(s), "dtype": np.float32} for i, s in enumerate(shapes)]

    assert recognise_format(tensors((1, 10, 4), (1, 10), (1, 10), (1,))) == "ssd"
    assert recognise_format(tensors((1, 25, 4), (1, 25), (1,), (1, 25))) == "ssd"  # EfficientDet-Lite order
    assert recognise_format(tensors((1, 84, 8400))) == "yolov8"
    assert recognise_format(tensors((1, 5, 2100))) == "yolov8"  # a one-class person model
    assert recognise_format(tensors((1, 25200, 85))) == "yolov5"


def test_an_unsupported_model_is_refused_with_its_tensors_listed() -> None:
    segmentation = [{"name": "logits", "shape": np.array([1, 257, 257, 21]), "dtype": np.float32}]
    with pytest.raises(ModelError, match=r"unsupported detection model: outputs logits \[1, 257, 257, 21\] float32"):
        recognise_format(segmentation)


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model file not found: .*nope\.tflite"):
        Detector(str(tmp_path / "nope.tflite"))


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ModelError, match="cannot load"):
        Detector(str(junk))


def test_a_forced_format_that_does_not_fit_is_an_error(shared_assets: Path) -> None:
    with pytest.raises(ModelError, match="unknown model format 'yolo11'"):
        Detector(str(shared_assets / "models" / MODELS["ssd"]), model_format="yolo11")
