"""Frame sources: files lose nothing; a live stream keeps only the newest frame and comes back after a drop.

The live tests use a real HTTP MJPEG stream (the format of many CCTV cameras) served on loopback
and read through OpenCV's FFmpeg backend, as a camera on the lane would be.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from edge_agent.sources import ImageFolderSource, LiveSource, SourceError, VideoFileSource, open_source
from tests.cameras import MjpegCamera
from tests.conftest import wait_until


def test_a_video_file_gives_every_frame_in_order(shared_assets: Path) -> None:
    with open_source(str(shared_assets / "videos" / "TUD-Campus" / "TUD-Campus.mp4")) as source:
        assert isinstance(source, VideoFileSource)
        assert source.size == (640, 480)
        assert source.fps == 25
        indices = [frame.index for frame in source]
    assert indices == list(range(71))


def test_a_mot_image_folder_is_read_with_its_frame_rate(shared_assets: Path, tmp_path: Path) -> None:
    capture = cv2.VideoCapture(str(shared_assets / "videos" / "TUD-Campus" / "TUD-Campus.mp4"))
    (tmp_path / "img1").mkdir()
    for number in range(1, 6):
        ok, image = capture.read()
        assert ok
        cv2.imwrite(str(tmp_path / "img1" / f"{number:06d}.jpg"), image)
    capture.release()
    (tmp_path / "seqinfo.ini").write_text("[Sequence]\nname=x\nimDir=img1\nframeRate=14\nseqLength=5\n")
    with open_source(str(tmp_path)) as source:
        assert isinstance(source, ImageFolderSource)
        assert (source.fps, source.size, source.frame_count) == (14.0, (640, 480), 5)
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert frames[0].image.shape == (480, 640, 3)


def test_a_looped_recording_plays_again_after_an_empty_scene(shared_assets: Path, tmp_path: Path) -> None:
    capture = cv2.VideoCapture(str(shared_assets / "videos" / "TUD-Campus" / "TUD-Campus.mp4"))
    for number in range(1, 4):
        ok, image = capture.read()
        assert ok
        cv2.imwrite(str(tmp_path / f"{number:06d}.png"), image)
    capture.release()
    gap = ImageFolderSource.LOOP_GAP_FRAMES
    with open_source(str(tmp_path), loop=True) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 2 * (3 + gap) + 3:
                break
    assert [f.index for f in frames] == list(range(len(frames)))  # one clock across the passes
    first_pass, gap_frames, second_pass = frames[:3], frames[3 : 3 + gap], frames[3 + gap : 6 + gap]
    assert all(not f.image.any() for f in gap_frames)  # nobody in the scene between passes
    assert all((a.image == b.image).all() for a, b in zip(first_pass, second_pass))


def test_what_cannot_be_opened_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no such file or folder: .*missing\.mp4"):
        open_source(str(tmp_path / "missing.mp4"))
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    with pytest.raises(SourceError, match="cannot open video"):
        open_source(str(not_video))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "empty"))


@pytest.mark.skipif("GStreamer:                   YES" in cv2.getBuildInformation(), reason="OpenCV has GStreamer")
def test_a_gstreamer_pipeline_without_gstreamer_support_says_what_to_install() -> None:
    with pytest.raises(SourceError, match=r"built without GStreamer .* JetPack's python3-opencv"):
        open_source("gst:nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink")


# --- a live MJPEG stream on loopback -------------------------------------------------------------------


@pytest.fixture
def camera() -> Iterator[MjpegCamera]:
    cam = MjpegCamera().start()
    yield cam
    cam.stop()


def test_a_slow_consumer_gets_the_newest_frame_and_the_skipped_ones_are_counted(camera: MjpegCamera) -> None:
    source = open_source(camera.url)
    assert isinstance(source, LiveSource)
    indices = []
    try:
        for frame in source:
            indices.append(frame.index)
            if len(indices) == 8:
                break
            time.sleep(0.15)  # inference slower than the camera
    finally:
        source.close()
    gaps = [b - a - 1 for a, b in zip(indices, indices[1:])]
    assert all(gap >= 1 for gap in gaps[1:]), indices  # frames were skipped, not queued
    assert source.dropped >= sum(gaps)
    assert source.state == "ok"


def test_a_stream_that_drops_is_reopened_and_frames_flow_again(camera: MjpegCamera) -> None:
    source = open_source(camera.url, backoff=(0.1, 0.5))
    frames = iter(source)
    try:
        assert next(frames).image.shape == (120, 160, 3)
        camera.stop()
        assert wait_until(lambda: source.state in ("reconnecting", "failed"))
        camera.start()  # power back, same address
        assert wait_until(lambda: source.state == "ok")
        assert next(frames).image.shape == (120, 160, 3)
        assert source.reconnects >= 1
    finally:
        source.close()


def test_a_camera_that_never_answers_ends_up_failed() -> None:
    source = open_source("http://127.0.0.1:9/nothing.mjpg", backoff=(0.05, 0.1), max_failures=3)
    try:
        assert wait_until(lambda: source.state == "failed")
    finally:
        source.close()
