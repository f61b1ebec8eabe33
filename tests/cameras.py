"""A real HTTP MJPEG camera on loopback, as many CCTV cameras serve their picture."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from typing import Optional

import cv2
import numpy as np


class MjpegCamera:
    """An HTTP MJPEG camera; each frame's grey level is its number (mod 256)."""

    def __init__(self, fps: float = 50.0) -> None:
        self.interval = 1 / fps
        self.port = 0
        self.sent = 0
        self._server: Optional[socketserver.ThreadingTCPServer] = None
        self._stop = threading.Event()

    def start(self) -> MjpegCamera:
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not camera._stop.is_set():
                        _, jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), camera.sent % 256, np.uint8))
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                        self.wfile.write(head.encode() + jpeg.tobytes() + b"\r\n")
                        camera.sent += 1
                        time.sleep(camera.interval)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._stop.clear()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """The camera loses power: the server and every open connection go away."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"
