"""The upload page in headless Chromium: choose a file, submit the form, screenshot the result.

Chromium is driven with the DevTools protocol over ``--remote-debugging-pipe`` (JSON
messages separated by NUL bytes on file descriptors 3 and 4), so no driver or websocket
package is needed. Needs Debian's ``chromium`` package; skipped without it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepgaze_jax.plotting import CONTOUR_COLORS
from deepgaze_jax.serve import demo_image
from live_server import serve_fake_model

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)
WINDOW = (1000, 800)
TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: apt-get install -y chromium to run the browser test"
)


class DevTools:
    """A Chromium process and its DevTools protocol pipe."""

    def __init__(self, profile: Path, log: Path):
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # the protocol reads commands on fd 3 and writes replies on fd 4: bash puts the pipe there
        # (dash, Debian's sh, cannot redirect fds above 9)
        shell = f'exec "$0" "$@" 3<&{commands_read} 4>&{replies_write}'
        self._log = log
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(
                ["/bin/bash", "-c", shell, str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}"],
                pass_fds=(commands_read, replies_write), stdout=subprocess.DEVNULL, stderr=stderr,
            )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._last_id = 0
        self._events: list[dict] = []

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Sends a command (to a page when ``session`` is given) and returns its result."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") != self._last_id:
                self._events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            else:
                return reply["result"]

    def wait_for(self, event: str, session: str) -> dict:
        """The next ``event`` of the page, received now or earlier."""
        while True:
            for i, message in enumerate(self._events):
                if message.get("method") == event and message.get("sessionId") == session:
                    return self._events.pop(i)
            self._events.append(self._receive())

    def _receive(self) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._replies, 1 << 20) if ready else b""
            if not chunk:
                raise RuntimeError(f"no reply from Chromium; its log:\n{self._log.read_text()[-3000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        os.close(self._commands)
        os.close(self._replies)
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    devtools = DevTools(tmp_path / "profile", tmp_path / "chromium.log")
    yield devtools
    devtools.close()


def colour_pixels(rgb: np.ndarray, colour: str, tolerance: int = 10) -> int:
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb.astype(np.int64) - target).max(axis=-1) <= tolerance).sum())


def test_upload_page_in_chromium(browser, tmp_path):
    upload = tmp_path / "scene.png"
    Image.fromarray(demo_image()).save(upload)
    with serve_fake_model() as url:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        page = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.call("Page.enable", page)
        width, height = WINDOW
        metrics = dict(width=width, height=height, deviceScaleFactor=1, mobile=False)
        browser.call("Emulation.setDeviceMetricsOverride", page, **metrics)
        browser.call("Page.navigate", page, url=f"{url}/")
        browser.wait_for("Page.loadEventFired", page)
        document = browser.call("DOM.getDocument", page)["root"]["nodeId"]
        file_input = browser.call("DOM.querySelector", page, nodeId=document, selector="input[type=file]")["nodeId"]
        browser.call("DOM.setFileInputFiles", page, nodeId=file_input, files=[str(upload)])
        browser.call("Runtime.evaluate", page, expression="document.querySelector('button[type=submit]').click()")
        browser.wait_for("Page.loadEventFired", page)
        box = browser.call(
            "Runtime.evaluate", page, returnByValue=True,
            expression="(() => { const img = document.querySelector('img.overlay'); if (!img) return null;"
            " const r = img.getBoundingClientRect();"
            " return {x: r.x, y: r.y, width: img.naturalWidth, height: img.naturalHeight}; })()",
        )["result"].get("value")
        shot = base64.b64decode(browser.call("Page.captureScreenshot", page, format="png")["data"])
    (tmp_path / "screenshot.png").write_bytes(shot)
    assert box is not None and (box["width"], box["height"]) == (512, 384), box
    screenshot = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    assert screenshot.shape == (height, width, 3)
    assert screenshot.std() > 20  # not blank
    left, top = round(box["x"]), round(box["y"])
    overlay = screenshot[top : top + 384, left : left + 512]
    assert overlay.shape == (384, 512, 3), "the overlay picture is not fully in the window"
    for colour in CONTOUR_COLORS:
        assert colour_pixels(overlay, colour) > 100, f"contour colour {colour} missing from the overlay"
