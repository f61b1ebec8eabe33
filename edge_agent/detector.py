"""Person detection with a TFLite model: one interpreter, one output decoder chosen from its tensors.

LiteRT (``ai-edge-litert``) is preferred; ``tflite-runtime`` is the fallback for older Pi OS images.
The decoder is recognised from the model's output tensors (SSD post-processed, YOLOv8/YOLO11
``[1, 84, N]`` or YOLOv5 ``[1, N, 85]``), or forced with ``model_format``. Only persons are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import cv2
import numpy as np

log = logging.getLogger(__name__)

PERSON = 0  # COCO class id of "person" in every supported model
_SSD_TO_XYXY = [1, 0, 3, 2]  # SSD boxes are ymin, xmin, ymax, xmax
FORMATS = ("ssd", "yolov8", "yolov5")
EDGETPU_LIBRARIES = ("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll")


class ModelError(RuntimeError):
    """A model that cannot be loaded or decoded; the message says what was found."""


class Prepared(NamedTuple):
    """A frame made ready for the model: the input tensor, and how to map model pixels back to the
    frame (x * sx + dx, y * sy + dy)."""

    tensor: np.ndarray
    transform: tuple[float, float, float, float]


@dataclass(frozen=True)
class Detections:
    """Person boxes in frame pixels: ``boxes`` (N, 4) as x1, y1, x2, y2; ``scores`` (N,)."""

    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def load_interpreter(model_path: str, num_threads: int = 2, edgetpu: Optional[bool] = None) -> Any:
    """A TFLite interpreter from LiteRT, else tflite-runtime; with the Coral Edge TPU when asked or found.

    ``edgetpu=None`` uses the Edge TPU only for models compiled for it (``*_edgetpu.tflite``).
    """
    if not Path(model_path).is_file():
        raise ModelError(f"model file not found: {model_path}")
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, load_delegate
        except ImportError:
            raise ModelError(
                "no TFLite interpreter installed: pip install 'lanewatch[edge]' (LiteRT) "
                "or 'lanewatch[edge-tflite]' (tflite-runtime, for older systems)"
            ) from None
    use_tpu = edgetpu if edgetpu is not None else Path(model_path).stem.endswith("_edgetpu")
    delegates = [_edgetpu_delegate(load_delegate)] if use_tpu else []
    try:
        interpreter = Interpreter(model_path=model_path, num_threads=num_threads, experimental_delegates=delegates)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load {model_path}: {exc}") from None
    return interpreter


def _edgetpu_delegate(load_delegate: Callable[[str], Any]) -> Any:
    errors = []
    for library in EDGETPU_LIBRARIES:
        try:
            return load_delegate(library)
        except (ValueError, OSError) as exc:
            errors.append(f"{library}: {exc}")
    raise ModelError(
        "Edge TPU requested but its runtime could not be loaded (install libedgetpu1-std): " + "; ".join(errors)
    )


def describe_tensors(details: list[dict]) -> str:
    return ", ".join(f"{d['name']} {[int(v) for v in d['shape']]} {np.dtype(d['dtype']).name}" for d in details)


def recognise_format(outputs: list[dict]) -> str:
    """Which decoder fits these output tensors; ModelError listing them when none does."""
    shapes = [tuple(int(v) for v in d["shape"]) for d in outputs]
    if len(outputs) == 4 and sum(len(s) == 3 and s[-1] == 4 for s in shapes) == 1 and (1,) in shapes:
        return "ssd"
    if len(outputs) == 1 and len(shapes[0]) == 3 and shapes[0][0] == 1:
        _, a, b = shapes[0]
        if a >= 5 and b > a:  # [1, 4 + classes, anchors]
            return "yolov8"
        if b >= 6 and a > b:  # [1, anchors, 5 + classes]
            return "yolov5"
    raise ModelError(
        f"unsupported detection model: outputs {describe_tensors(outputs)}; supported are SSD with "
        "TFLite_Detection_PostProcess (4 outputs), YOLOv8/YOLO11 [1, 4+C, N] and YOLOv5 [1, N, 5+C]"
    )


class Detector:
    """A frame in, person boxes out. ``preprocess``, ``invoke`` and ``decode`` are separate so that
    the benchmark can time the bare interpreter on the same inputs."""

    def __init__(
        self,
        model_path: str,
        num_threads: int = 2,
        model_format: Optional[str] = None,
        score_threshold: float = 0.25,
        nms_iou: float = 0.5,
        edgetpu: Optional[bool] = None,
        letterbox: Optional[bool] = None,
    ) -> None:
        self.model_path = model_path
        self.num_threads = num_threads
        self.interpreter = load_interpreter(model_path, num_threads, edgetpu)
        (self.input,) = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.format = model_format or recognise_format(self.outputs)
        if self.format not in FORMATS:
            raise ModelError(f"unknown model format {self.format!r}; choose one of {', '.join(FORMATS)}")
        _, self.height, self.width, channels = (int(v) for v in self.input["shape"])
        if channels != 3:
            raise ModelError(f"expected an RGB input [1, H, W, 3]; found {describe_tensors([self.input])}")
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        # YOLO models are trained on letterboxed images; the SSD zoo models on stretched ones.
        self.letterbox = letterbox if letterbox is not None else self.format != "ssd"
        self._lut = _input_lut(self.input, self.format)
        self._canvas = np.full((self.height, self.width, 3), 114, dtype=np.uint8)
        self._layout = (0, 0)
        # SSD outputs by rank: boxes [1,N,4], count [1], and classes and scores, both [1,N]
        by_rank: dict[int, list[int]] = {1: [], 2: [], 3: []}
        for detail in self.outputs:
            by_rank.setdefault(len(detail["shape"]), []).append(detail["index"])
        if self.format == "ssd":
            self._ssd_outputs = (by_rank[3][0], by_rank[1][0], (by_rank[2][0], by_rank[2][1]))
        self._ssd_order: Optional[bool] = None
        self._ssd_scale = np.array([self.width, self.height, self.width, self.height], np.float32)
        self._affine: dict[tuple[float, float, float, float], tuple[np.ndarray, np.ndarray]] = {}
        self._decode = {"ssd": self._decode_ssd, "yolov8": self._decode_yolov8, "yolov5": self._decode_yolov5}[
            self.format
        ]

    @property
    def name(self) -> str:
        return Path(self.model_path).stem

    def detect(self, frame: np.ndarray) -> Detections:
        """Persons in a BGR frame (as OpenCV and picamera2's BGR888 give it)."""
        prepared = self.preprocess(frame)
        self.invoke(prepared.tensor)
        return self.decode(prepared.transform)

    def preprocess(self, frame: np.ndarray) -> Prepared:
        """Resize (stretch or letterbox), BGR to RGB, and quantize into the model's input tensor.

        Safe to run in another thread than ``invoke`` (one preprocessing thread at a time).
        """
        frame_h, frame_w = frame.shape[:2]
        if self.letterbox:
            scale = min(self.width / frame_w, self.height / frame_h)
            w, h = round(frame_w * scale), round(frame_h * scale)
            left, top = (self.width - w) // 2, (self.height - h) // 2
            if self._layout != (w, h):  # a new frame size: clear the old picture from the padding
                self._canvas[:] = 114
                self._layout = (w, h)
            self._canvas[top : top + h, left : left + w] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
            image: np.ndarray = self._canvas
            transform = (1 / scale, 1 / scale, -left / scale, -top / scale)
        else:
            image = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
            transform = (frame_w / self.width, frame_h / self.height, 0.0, 0.0)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if self._lut is not None:
            return Prepared(cv2.LUT(rgb, self._lut).view(np.int8)[np.newaxis], transform)
        return Prepared(self._as_input(rgb), transform)

    def _as_input(self, rgb: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.uint8:
            return rgb[np.newaxis]
        scaled = rgb.astype(np.float32)  # float models: YOLO wants 0..1, SSD wants -1..1
        scaled = scaled / 255.0 if self.format != "ssd" else scaled / 127.5 - 1.0
        return scaled[np.newaxis].astype(dtype)

    def invoke(self, tensor: np.ndarray) -> None:
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()

    def decode(self, transform: tuple[float, float, float, float]) -> Detections:
        """The persons in the last ``invoke``'s outputs, in the pixels of the frame ``transform`` is from."""
        xyxy, scores = self._decode()
        if transform not in self._affine:  # one per frame size: build the arrays once
            sx, sy, dx, dy = transform
            self._affine = {transform: (np.array([sx, sy, sx, sy], np.float32), np.array([dx, dy, dx, dy], np.float32))}
        scale, offset = self._affine[transform]
        return Detections(xyxy.astype(np.float32, copy=False) * scale + offset, scores.astype(np.float32, copy=False))

    # --- decoders ---------------------------------------------------------------------------------

    def _decode_ssd(self) -> tuple[np.ndarray, np.ndarray]:
        """TFLite_Detection_PostProcess: boxes [1,N,4] (ymin, xmin, ymax, xmax; 0-1), classes, scores, count."""
        get = self.interpreter.get_tensor
        boxes_out, count_out, pair = self._ssd_outputs
        count = int(get(count_out)[0])
        if self._ssd_order is None:  # which of the two [1, N] outputs holds the class ids
            self._ssd_order = _ssd_class_first(get(pair[0])[0][:count], get(pair[1])[0][:count])
        classes_out, scores_out = pair if self._ssd_order else pair[::-1]
        classes, scores = get(classes_out)[0, :count], get(scores_out)[0, :count]
        keep = np.flatnonzero((classes == PERSON) & (scores >= self.score_threshold))
        yxyx = get(boxes_out)[0, keep]  # ymin, xmin, ymax, xmax
        return yxyx[:, _SSD_TO_XYXY] * self._ssd_scale, scores[keep]

    def _decode_yolov8(self) -> tuple[np.ndarray, np.ndarray]:
        """Raw [1, 4+C, N]: cx, cy, w, h (0-1 of the input), then one score per class; no NMS inside."""
        detail = self.outputs[0]
        raw = self.interpreter.get_tensor(detail["index"])[0]
        scale, zero = detail["quantization"]
        person = raw[4 + PERSON]
        candidates = np.flatnonzero(person >= _quantized(self.score_threshold, scale, zero, person.dtype))
        rows = raw[:4, candidates].T
        scores = person[candidates]
        if scale:
            rows = (rows.astype(np.float32) - zero) * scale
            scores = (scores.astype(np.float32) - zero) * scale
        return self._nms(rows, scores)

    def _decode_yolov5(self) -> tuple[np.ndarray, np.ndarray]:
        """Raw [1, N, 5+C]: cx, cy, w, h (0-1), objectness, class scores; person score = obj * cls."""
        detail = self.outputs[0]
        raw = self.interpreter.get_tensor(detail["index"])[0]
        scale, zero = detail["quantization"]
        objectness = raw[:, 4]
        candidates = np.flatnonzero(objectness >= _quantized(self.score_threshold, scale, zero, objectness.dtype))
        rows = raw[candidates]
        if scale:
            rows = (rows.astype(np.float32) - zero) * scale
        scores = rows[:, 4] * rows[:, 5 + PERSON]
        keep = scores >= self.score_threshold
        return self._nms(rows[keep, :4], scores[keep])

    def _nms(self, cxcywh: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model-pixel x1, y1, x2, y2 boxes and scores of the persons left after non-maximum suppression."""
        if not len(scores):
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        cxcywh = cxcywh.astype(np.float32)
        if cxcywh[:, :4].max() <= 2.0:  # normalized coordinates (the usual TFLite export)
            cxcywh = cxcywh * np.array([self.width, self.height, self.width, self.height], np.float32)
        xywh = np.column_stack([cxcywh[:, 0] - cxcywh[:, 2] / 2, cxcywh[:, 1] - cxcywh[:, 3] / 2, cxcywh[:, 2:4]])
        chosen = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(float).tolist(), self.score_threshold, self.nms_iou)
        keep = np.asarray(chosen, dtype=np.int64).reshape(-1)
        return np.column_stack([xywh[keep, :2], xywh[keep, :2] + xywh[keep, 2:4]]), scores[keep]


def _quantized(value: float, scale: float, zero: int, dtype: np.dtype) -> float:
    """A float threshold in the raw tensor's units, so candidates are picked before dequantizing."""
    if not scale:
        return value
    info = np.iinfo(dtype)
    return float(np.clip(np.floor(value / scale + zero), info.min, info.max))


def _ssd_class_first(first: np.ndarray, second: np.ndarray) -> Optional[bool]:
    """Whether the first of the two [1, N] SSD outputs holds the class ids (whole numbers) rather
    than the scores (fractions); None while there is nothing to tell them apart by."""
    if not len(first):
        return None
    first_ids, second_ids = bool(np.all(first == np.round(first))), bool(np.all(second == np.round(second)))
    if first_ids != second_ids:
        return first_ids
    return True  # the TF1 object detection API's order: classes, then scores


def _input_lut(detail: dict, model_format: str) -> Optional[np.ndarray]:
    """A 256-entry table from pixel value to quantized input, for int8 inputs (cv2.LUT is fast)."""
    if np.dtype(detail["dtype"]) != np.int8:
        return None
    scale, zero = detail["quantization"]
    pixels = np.arange(256, dtype=np.float32)
    real = pixels / 255.0 if model_format != "ssd" else pixels / 127.5 - 1.0
    quantized = np.clip(np.round(real / scale + zero), -128, 127).astype(np.int8)
    return quantized.view(np.uint8)
