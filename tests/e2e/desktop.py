"""What the browser tier's tests share: logging in, and looking at the desktop like a person."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from tests.harness import ARTIFACTS

SHOTS = ARTIFACTS / "screenshots"
SHOTS.mkdir(parents=True, exist_ok=True)  # any browser test may be the first to save one


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


def open_desktop(page, hub, user: str, drawn: bool = True):
    login(page, hub, user)
    page.wait_for_url(f"**/user/{user}/**", timeout=180_000)
    page.goto(f"{hub.url}/user/{user}/desktop/")
    page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
    return wait_for_desktop_frame(page.locator("#screen canvas")) if drawn else None


def as_user(container, script: str) -> str:
    """``script`` as the user on the desktop's display (:1, the session jupyter-remote-desktop-proxy started)."""
    display = container.exec_run(["sh", "-c", "ls /tmp/.X11-unix | head -n 1"], user="1000").output.decode().strip()
    env = {"DISPLAY": ":" + display.lstrip("X"), "HOME": f"/home/{container.labels['io.devdock.owner']}"}
    return container.exec_run(["bash", "-c", script], user="1000", environment=env).output.decode(errors="replace")


def screen_size(container, tries: int = 10) -> tuple[int, int]:
    """The desktop's screen size in pixels (xdpyinfo on its display), asked again for a while: a loaded machine's X
    server can be slow to answer a new client while a view streams from it."""
    out = ""
    for _ in range(tries):
        out = as_user(container, "xdpyinfo 2>&1 | grep -m 1 -e dimensions -e unable")
        if "dimensions:" in out:
            width, height = out.split("dimensions:")[1].split()[0].split("x")
            return int(width), int(height)
        time.sleep(1)
    raise AssertionError(f"xdpyinfo gave no screen size: {out!r}; " + as_user(container, "ls -la /tmp/.X11-unix"))


def until_on_the_desktops_clipboard(container, done, nudge, timeout: float) -> None:
    """Until ``done()``: what the browser copied is on the desktop's clipboard. A view sends the browser's clipboard
    when the user comes back to the desktop, so each try first ``nudge()``s the page (a click, the focus)."""
    deadline = time.monotonic() + timeout
    nudge()
    while not done():
        assert time.monotonic() < deadline, as_user(
            container, "xclip -o -selection clipboard -t TARGETS; xclip -o -selection clipboard"
        )
        time.sleep(0.5)
        nudge()


@pytest.fixture(scope="module", name="hub_defaults")
def no_desktop_opened():
    """``hub_defaults`` for a browser-tier module that opens no desktop (import it as ``hub_defaults``): each
    server's desktop starts when first opened, as outside the browser tier, not with the server (a desktop start
    saved per spawn)."""
    return {"desktop_prestart": False}
