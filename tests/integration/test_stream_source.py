"""The stream camera source against a real HTTP MJPEG server: reconnect, backoff, watchdog.

The server is ``http.server`` on loopback serving ``multipart/x-mixed-replace`` JPEG frames, the
format of many IP cameras, which ``cv2.VideoCapture`` reads through FFmpeg. The test stops and
restarts it, and makes it stall (connection kept open, no bytes) to drive the source's
recovery paths for real.
"""

from __future__ import annotations

import http.server
import logging
import socketserver
import threading
import time

import cv2
import numpy as np
import pytest

from workers.camera.sources import StreamSource, open_source

pytestmark = pytest.mark.integration


class MjpegServer:
    """A loopback MJPEG camera that can be stopped, restarted on the same port, or stalled.

    Each served frame carries its number in the pixel value of a 16x16 corner block
    (``number % 200 + 20``), so a test can tell frames of different connections apart.
    """

    def __init__(self, fps: float = 20.0) -> None:
        self.fps = fps
        self.port = 0
        self.stall = threading.Event()  # while set, open connections get no more bytes
        self.served = 0
        self.connections = 0
        self._server: socketserver.ThreadingTCPServer | None = None
        self._closed = threading.Event()

    def _handler(self):
        cam = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                cam.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not cam._closed.is_set():
                        if cam.stall.is_set():
                            time.sleep(0.05)  # hold the connection open, silent
                            continue
                        image = np.full((96, 128, 3), 90, np.uint8)
                        image[:16, :16] = cam.served % 200 + 20
                        jpeg = cv2.imencode(".jpg", image)[1].tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n" % len(jpeg))
                        self.wfile.write(jpeg + b"\r\n")
                        self.wfile.flush()
                        cam.served += 1
                        time.sleep(1.0 / cam.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    def start(self) -> None:
        self._closed.clear()
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the listening socket and every open connection (a camera going away)."""
        self._closed.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"


@pytest.fixture
def camera():
    cam = MjpegServer()
    cam.start()
    yield cam
    cam.stop()


class FrameReader:
    """Drives ``StreamSource.frames`` on a thread and keeps every frame it hands out."""

    def __init__(self, source: StreamSource) -> None:
        self.source = source
        self.stop = threading.Event()
        self.frames = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for sf in self.source.frames(self.stop):
            self.frames.append(sf)

    def __enter__(self) -> "FrameReader":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the frame generator did not stop"

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "") -> None:
        """Poll ``predicate()`` (an event to wait for, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"gave up waiting for {what or predicate}; "
                             f"stats: {self.source.stats}")


def test_http_mjpeg_stream_is_read_on_its_own_thread(camera) -> None:
    source = open_source(camera.url, camera_id="cam-http", fps=50.0, max_frames=5)
    assert isinstance(source, StreamSource)
    frames = list(source.frames(threading.Event()))
    assert len(frames) == 5
    assert all(f.camera_id == "cam-http" and f.image.shape == (96, 128, 3) for f in frames)
    stamps = [f.capture_ts_us for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5  # stamped at capture, in order
    assert source.stats.connects == 1 and source.stats.stalls == 0
    assert source.stats.frames_out == 5


def test_camera_going_away_is_reconnected_with_backoff(camera, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pedsearch.camera")
    source = StreamSource(url=camera.url, camera_id="cam-restart", fps=50.0,
                          stall_timeout_s=3.0, backoff_s=0.1, max_backoff_s=0.8)
    with FrameReader(source) as reader:
        reader.wait_for(lambda: len(reader.frames) >= 5, what="first frames")
        camera.stop()
        # connection closed -> the read fails -> reconnect attempts are refused and back off
        reader.wait_for(lambda: source.stats.open_failures >= 3, what="refused reconnects")
        assert source.stats.read_failures >= 1
        assert source.stats.backoff_s > 0.1  # doubled at each refused attempt
        assert source.stats.backoff_s <= 0.8
        seen = len(reader.frames)
        camera.start()  # same port
        reader.wait_for(lambda: len(reader.frames) >= seen + 5, what="frames after restart")
        assert source.stats.connects >= 2
        assert source.stats.backoff_s == 0.1  # reset by the first frame
    assert source.stats.stalls == 0  # a closed connection is not a stall
    assert source.reconnects >= 1 + 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot open" in m for m in messages)
    assert any("read from" in m and "failed" in m for m in messages)
    assert sum("connected to" in m for m in messages) >= 2


def test_watchdog_abandons_a_stalled_stream_and_frames_resume(camera, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pedsearch.camera")
    # FFmpeg's read timeout is twice the stall timeout, so the watchdog acts first
    source = StreamSource(url=camera.url, camera_id="cam-stall", fps=50.0,
                          stall_timeout_s=1.0, backoff_s=0.1, max_backoff_s=0.4)
    with FrameReader(source) as reader:
        reader.wait_for(lambda: len(reader.frames) >= 5, what="first frames")
        connections = camera.connections
        camera.stall.set()  # the connection stays open but goes silent
        reader.wait_for(lambda: source.stats.stalls >= 1, what="the watchdog")
        seen = len(reader.frames)
        camera.stall.clear()
        reader.wait_for(lambda: len(reader.frames) >= seen + 5, what="frames after the stall")
        # the watchdog's reader opened a new connection to the camera
        assert camera.connections > connections
        assert source.stats.connects >= 2
    assert source.stats.last_error.startswith("no frame for")
    assert any("abandoning the capture" in r.getMessage() for r in caplog.records)


def test_unreachable_stream_keeps_backing_off_until_stopped() -> None:
    # a port nothing listens on: every open is refused, the waits grow to the cap
    with socketserver.TCPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as probe:
        port = probe.server_address[1]
    source = StreamSource(url=f"http://127.0.0.1:{port}/x.mjpg", camera_id="cam-gone", fps=5.0,
                          stall_timeout_s=1.0, backoff_s=0.05, max_backoff_s=0.2)
    with FrameReader(source) as reader:
        reader.wait_for(lambda: source.stats.open_failures >= 4, what="refused opens")
        assert source.stats.backoff_s == 0.2
    assert reader.frames == [] and source.stats.connects == 0 and source.stats.stalls == 0


def test_stream_source_rejects_bad_timing_options() -> None:
    from pedsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="backoff"):
        StreamSource(url="http://127.0.0.1:1/x", camera_id="c", backoff_s=5, max_backoff_s=1)
    with pytest.raises(ConfigError, match="stall_timeout_s"):
        StreamSource(url="http://127.0.0.1:1/x", camera_id="c", stall_timeout_s=0)
