"""What a person sees: log in, land in JupyterLab, open the desktop, and the desktop is drawn."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from tests.harness import ARTIFACTS

pytestmark = pytest.mark.e2e

SHOTS = ARTIFACTS / "screenshots"


def login(page, hub, username: str) -> None:
    page.goto(f"{hub.url}/hub/login")
    page.fill("input#username_input", username)
    page.fill("input#password_input", hub.password)
    page.click("#login_submit")


def frame_stats(png: bytes) -> tuple[int, float]:
    """(distinct colours, share of black pixels) of a screenshot."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24) or []
    black = sum(n for n, rgb in colours if max(rgb) < 16)
    return len(colours), black / (image.width * image.height)


def desktop_drawn(png: bytes) -> bool:
    """A drawn XFCE desktop: wallpaper and panel (many colours), not a black, just-connected screen."""
    colours, black = frame_stats(png)
    return colours >= 64 and black < 0.5


def wait_for_desktop_frame(canvas, timeout: float = 90) -> bytes:
    """Screenshots of the noVNC canvas until the desktop has been drawn."""
    deadline = time.monotonic() + timeout
    png = b""
    while time.monotonic() < deadline:
        png = canvas.screenshot()
        if desktop_drawn(png):
            return png
        time.sleep(1)
    (SHOTS / "desktop-not-drawn.png").write_bytes(png)
    raise AssertionError(f"desktop never drawn after {timeout}s: (colours, black share) = {frame_stats(png)}")


def test_login_lab_and_desktop_in_the_browser(hub, page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    login(page, hub, "frank")

    # The hub spawns the server and the browser lands in JupyterLab.
    page.wait_for_url("**/user/frank/lab**", timeout=180_000)
    page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
    # The launcher offers the desktop next to notebooks and the terminal.
    assert page.locator(".jp-LauncherCard", has_text="Desktop").count() >= 1
    assert page.locator(".jp-LauncherCard", has_text="Terminal").count() >= 1
    page.screenshot(path=SHOTS / "lab.png")

    page.goto(f"{hub.url}/user/frank/desktop/")
    page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
    canvas = page.locator("#screen canvas")
    png = wait_for_desktop_frame(canvas)
    (SHOTS / "desktop-canvas.png").write_bytes(png)
    page.screenshot(path=SHOTS / "desktop.png")

    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    assert width >= 800 and height >= 500, image.size
    assert desktop_drawn(png), frame_stats(png)


def test_other_user_cannot_open_first_users_desktop(hub, page):
    hub.ensure_running("frank")
    login(page, hub, "grace")
    page.wait_for_url("**/user/grace/**", timeout=180_000)
    response = page.goto(f"{hub.url}/user/frank/desktop/")
    assert response.status == 403
    assert "frank" not in page.title()
    assert page.locator("#screen canvas").count() == 0
