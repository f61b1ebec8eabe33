"""Frame sources: cameras, streams and files, behind one small interface.

- ``camera:N`` a USB/V4L2 camera through OpenCV; ``rtsp://``, ``http(s)://`` a CCTV stream;
  ``gst:PIPELINE`` a GStreamer pipeline ending in appsink (Jetson CSI cameras);
  ``picamera2`` / ``picamera2:N`` a Raspberry Pi CSI camera (imported only when used).
- A video file, or a folder of images (a MOT sequence: ``img1/`` or the folder itself), replayed
  as fast as possible or at its own frame rate (``realtime``), once or over and over (``loop``, for
  demonstrations and soak tests: an empty scene separates the passes, so no track runs from the end
  of the recording into its start).

Live sources are read by a grabber thread that keeps only the newest frame: when inference is
slower than the camera, latency stays bounded and the skipped frames are counted, never queued.
A stream that drops is reopened with exponential backoff; ``state`` says ok / reconnecting /
failed for the heartbeat. Files are read in the thread that iterates them (the pipeline's one
helper thread, which also prepares each frame for the model) and lose nothing.
"""

from __future__ import annotations

import configparser
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import cv2
import numpy as np

log = logging.getLogger(__name__)

State = Literal["ok", "reconnecting", "failed"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class SourceError(RuntimeError):
    """A source that cannot be opened at all; the message says what was tried."""


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based position in the source (gaps mean dropped frames on live sources)
    time: float  # time.monotonic() when it was captured
    image: np.ndarray  # BGR, H x W x 3


class FrameSource:
    """Iterate to get frames; ``close()`` when done (also a context manager)."""

    fps: float = 0.0
    size: tuple[int, int] = (0, 0)  # width, height
    dropped: int = 0
    state: State = "ok"

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the camera or file."""

    def interrupt(self) -> None:
        """End the iteration soon, from any thread or a signal handler (a camera that never delivers a
        frame must not keep the agent from stopping); ``close`` still releases."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(
    spec: str,
    realtime: bool = False,
    backoff: tuple[float, float] = (0.5, 30.0),
    max_failures: int = 5,
    loop: bool = False,
) -> FrameSource:
    """The source a configuration string names (see the module docstring for the forms).

    ``backoff`` (shortest, longest seconds between attempts) and ``max_failures`` (attempts before
    the state says failed) apply to cameras and streams; ``loop`` to files.
    """
    live: dict[str, Any] = {"min_backoff": backoff[0], "max_backoff": backoff[1], "max_failures": max_failures}
    if spec.startswith("picamera2"):
        index = int(spec.split(":", 1)[1]) if ":" in spec else 0
        return LiveSource(lambda: _Picamera2Capture(index), spec, **live)
    if spec.startswith("camera:"):
        device = int(spec.split(":", 1)[1])
        backend = cv2.CAP_V4L2 if hasattr(cv2, "CAP_V4L2") else cv2.CAP_ANY
        return LiveSource(lambda: _opencv_capture(device, backend), spec, **live)
    if spec.startswith(("rtsp://", "rtsps://", "http://", "https://")):
        return LiveSource(lambda: _opencv_capture(spec, cv2.CAP_FFMPEG), _redact(spec), **live)
    if spec.startswith("gst:"):
        if not _opencv_has("GStreamer"):
            raise SourceError(
                "this OpenCV was built without GStreamer (the pip wheels are): on a Jetson, use JetPack's "
                "python3-opencv (create the virtual environment with --system-site-packages)"
            )
        return LiveSource(lambda: _opencv_capture(spec[4:], cv2.CAP_GSTREAMER), "gstreamer pipeline", **live)
    path = Path(spec)
    if path.is_dir():
        return ImageFolderSource(path, realtime=realtime, loop=loop)
    if path.is_file():
        return VideoFileSource(path, realtime=realtime, loop=loop)
    raise SourceError(
        f"no such file or folder: {spec} (a source is a video file, an image folder, camera:N, "
        "picamera2, rtsp://..., http(s)://... or gst:PIPELINE)"
    )


def _opencv_has(feature: str) -> bool:
    """Whether OpenCV's build lists a video I/O backend as YES (e.g. GStreamer, FFMPEG)."""
    return any(
        line.strip().startswith(f"{feature}:") and "YES" in line for line in cv2.getBuildInformation().splitlines()
    )


def _redact(url: str) -> str:
    """A stream URL without its password, for logs and errors."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# --- files ------------------------------------------------------------------------------------------


class _Recording(FrameSource):
    """A video file or image folder, read in the iterating thread; paced to its frame rate when
    ``realtime``; over and over when ``loop``. Nothing is dropped."""

    #: Empty frames between two passes of a looped recording: longer than the tracker keeps a lost track.
    LOOP_GAP_FRAMES = 64

    def __init__(self, realtime: bool, loop: bool = False) -> None:
        self.realtime = realtime
        self.loop = loop
        self._closed = False

    def _read(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _passes(self) -> Iterator[np.ndarray]:
        """The recording once, or again and again with an empty scene between passes."""
        while True:
            image = None
            for image in self._read():
                yield image
            if not self.loop or image is None:
                return
            blank = np.zeros_like(image)
            for _ in range(self.LOOP_GAP_FRAMES):
                yield blank

    def __iter__(self) -> Iterator[Frame]:
        started = time.monotonic()
        try:
            for index, image in enumerate(self._passes()):
                if self._closed:
                    return
                if self.realtime and self.fps:
                    delay = started + index / self.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                yield Frame(index, time.monotonic(), image)
        except Exception as exc:  # a broken file mid-way: end the stream, say why
            log.error("reading stopped: %s", exc)
            self.state = "failed"

    def close(self) -> None:
        self._closed = True


class VideoFileSource(_Recording):
    def __init__(self, path: Path, realtime: bool = False, loop: bool = False) -> None:
        super().__init__(realtime, loop=loop)
        self.path = path
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise SourceError(f"cannot open video {path}: not a video OpenCV's FFmpeg can read")
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        self.size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()

    def _read(self) -> Iterator[np.ndarray]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    return
                yield image
        finally:
            capture.release()


class ImageFolderSource(_Recording):
    """A MOT sequence folder (frame rate from ``seqinfo.ini``) or any folder of numbered images."""

    def __init__(self, path: Path, realtime: bool = False, loop: bool = False) -> None:
        super().__init__(realtime, loop=loop)
        info = configparser.ConfigParser()
        info.read(path / "seqinfo.ini")
        folder = path / info.get("Sequence", "imDir", fallback="img1")
        self.folder = folder if folder.is_dir() else path
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        self.fps = info.getfloat("Sequence", "frameRate", fallback=25.0)
        first = cv2.imread(str(self.files[0]))
        if first is None:
            raise SourceError(f"cannot read image {self.files[0]}")
        self.size = (first.shape[1], first.shape[0])
        self.frame_count = len(self.files)

    def _read(self) -> Iterator[np.ndarray]:
        for file in self.files:
            image = cv2.imread(str(file))
            if image is None:
                raise SourceError(f"cannot read image {file}")
            yield image


# --- live cameras and streams -----------------------------------------------------------------------


class _Capture:
    """What a live source needs from a camera: read a frame (None when the stream broke), release."""

    fps: float = 0.0

    def read(self) -> Optional[np.ndarray]:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class _OpenCVCapture(_Capture):
    def __init__(self, capture: cv2.VideoCapture) -> None:
        self.capture = capture
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 0.0

    def read(self) -> Optional[np.ndarray]:
        ok, image = self.capture.read()
        return image if ok else None

    def release(self) -> None:
        self.capture.release()


def _opencv_capture(target: Any, backend: int) -> _Capture:
    capture = cv2.VideoCapture(target, backend)
    if not capture.isOpened():
        capture.release()
        raise SourceError("OpenCV could not open it")
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver's own queue short too
    return _OpenCVCapture(capture)


class _Picamera2Capture(_Capture):
    """A Pi CSI camera; picamera2 comes from Raspberry Pi OS's apt (python3-picamera2)."""

    def __init__(self, index: int = 0, width: int = 1280, height: int = 720, fps: float = 15.0) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError(
                "picamera2 is not installed: `sudo apt install python3-picamera2`, and create the "
                "virtual environment with --system-site-packages"
            ) from None
        self.camera = Picamera2(index)
        config = self.camera.create_video_configuration(
            main={"size": (width, height), "format": "BGR888"}, controls={"FrameRate": fps}
        )
        self.camera.configure(config)
        self.camera.start()
        self.fps = fps

    def read(self) -> Optional[np.ndarray]:
        try:
            return self.camera.capture_array("main")
        except RuntimeError:
            return None

    def release(self) -> None:
        self.camera.stop()
        self.camera.close()


class LiveSource(FrameSource):
    """A camera or stream read by a grabber thread; the consumer always gets the newest frame.

    Opening failures and broken streams are retried with exponential backoff and jitter (from
    ``min_backoff`` up to ``max_backoff`` seconds); after ``max_failures`` failed opens in a row
    the state is ``failed`` (the grabber keeps trying at the longest interval).
    """

    def __init__(
        self,
        opener: Callable[[], _Capture],
        description: str,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_failures: int = 5,
    ) -> None:
        self.opener, self.description = opener, description
        self.min_backoff, self.max_backoff, self.max_failures = min_backoff, max_backoff, max_failures
        self.state = "reconnecting"
        self.reconnects = 0
        self._latest: Optional[Frame] = None
        self._fresh = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._grab, name=f"grabber {description}", daemon=True)
        self._thread.start()

    def _grab(self) -> None:
        failures, index = 0, 0
        while not self._stop.is_set():
            try:
                capture = self.opener()
            except Exception as exc:  # any failure to open is retried; the state tells the heartbeat
                failures += 1
                self.state = "failed" if failures >= self.max_failures else "reconnecting"
                delay = min(self.max_backoff, self.min_backoff * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
                log.warning("cannot open %s (%s); retrying in %.1f s", self.description, exc, delay)
                self._stop.wait(delay)
                continue
            failures, self.state = 0, "ok"
            self.fps = capture.fps or self.fps
            try:
                while not self._stop.is_set():
                    image = capture.read()
                    if image is None:
                        log.warning("%s stopped delivering frames; reopening", self.description)
                        self.state = "reconnecting"
                        self.reconnects += 1
                        break
                    with self._fresh:
                        if self._latest is not None:
                            self.dropped += 1  # the consumer never took the previous one
                        self._latest = Frame(index, time.monotonic(), image)
                        self.size = (image.shape[1], image.shape[0])
                        index += 1
                        self._fresh.notify()
            finally:
                capture.release()

    def __iter__(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            with self._fresh:
                self._fresh.wait_for(lambda: self._latest is not None or self._stop.is_set(), timeout=1.0)
                frame, self._latest = self._latest, None
            if frame is not None:
                yield frame

    def interrupt(self) -> None:
        self._stop.set()  # the iterator and the grabber look at it at least once a second

    def close(self) -> None:
        self._stop.set()
        with self._fresh:
            self._fresh.notify_all()
        self._thread.join(timeout=5)
